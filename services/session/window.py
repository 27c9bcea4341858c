"""The sliding window of history the LLM sees, trimmed in blocks.

Trimming one message per turn would change the prompt's beginning every turn and throw away the
LLM's cached prefix (llama.cpp re-evaluates everything after the first differing token). Instead
the window start only moves when the window overflows its turn count or token budget, and then
by a whole block (half the window), so most turns extend the same prefix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from services.common.messages import AgentConfig, ChatMessage, HistoryMessage, Summary

from .tools import UNKNOWN_NOTE


def plan_window(
    history: list[HistoryMessage],
    start: int,
    config: AgentConfig,
    count_tokens: Callable[[str], int] = lambda text: max(1, len(text) // 4),
) -> int:
    """Return the (possibly advanced) window start for `history` (the full history).

    The window holds at most `history_max_turns` user turns and `history_token_budget` tokens
    less what the agent's tool schemas take (they sit in the prompt too).
    On overflow the start jumps forward so the window keeps about half its limits, always
    landing on a user message. The newest user message is always kept.
    """
    start = min(max(0, start), max(0, len(history) - 1))
    schemas = sum(count_tokens(json.dumps(t.model_dump())) for t in config.tool_specs())
    budget = max(64, config.history_token_budget - schemas)

    def fits(s: int) -> bool:
        window = history[s:]
        turns = sum(1 for m in window if m.role == "user")
        tokens = sum(count_tokens(m.text) + 4 for m in window)
        return turns <= config.history_max_turns and tokens <= budget

    if fits(start):
        return start
    # Overflow: move to the first user message such that the window is at most half full.
    half_turns = max(1, config.history_max_turns // 2)
    half_tokens = max(1, budget // 2)
    candidates = [i for i in range(start + 1, len(history)) if history[i].role == "user"]
    for i in candidates:
        window = history[i:]
        turns = sum(1 for m in window if m.role == "user")
        tokens = sum(count_tokens(m.text) + 4 for m in window)
        if turns <= half_turns and tokens <= half_tokens:
            return i
    return candidates[-1] if candidates else len(history) - 1


NOTES_HEADING = "What the user said earlier in this conversation:"
# Added after an agent's system prompt when it has tools (tuned on the tools benchmark's tune
# split only: bench/run.sh tools, docs/performance.md "Tools"). Without it the default model
# explained how to convert money, or read a tool's description out, instead of calling the tool.
TOOLS_NOTE = (
    "You have tools. If one of them can answer or do what the user asks, you must call it, in "
    "the <tool_call> format, with every argument it needs. Never answer such a request "
    "yourself, not even with a guess, and never explain how to do it. Otherwise answer "
    "directly, without a tool."
)
MAX_NOTES_CHARS = 2000  # the notes keep their newest statements within this
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")


def user_statements(messages: list[HistoryMessage]) -> list[str]:
    """The sentences of the user's messages that are not questions: where the user says who
    they are, what they have, like and plan (a question tells nothing about them)."""
    found = []
    for m in messages:
        if m.role != "user" or not m.text:
            continue
        for sentence in _SENTENCE_END.split(m.text.strip()):
            sentence = sentence.strip()
            if sentence and not sentence.endswith(("?", "？")):
                found.append(sentence)
    return found


def merge_notes(previous: str, statements: list[str]) -> str:
    """The notes (one `- statement` a line) with `statements` added, each once; past
    `MAX_NOTES_CHARS` the oldest go."""
    lines = [line for line in previous.splitlines() if line.strip()]
    for sentence in statements:
        line = f"- {sentence}"
        if line not in lines:
            lines.append(line)
    while lines and sum(len(line) + 1 for line in lines) > MAX_NOTES_CHARS:
        lines.pop(0)
    return "\n".join(lines)


def to_chat(
    config: AgentConfig,
    window: list[HistoryMessage],
    summary: Summary | None = None,
    unsummarized: list[HistoryMessage] | None = None,
) -> list[ChatMessage]:
    """The LLM's messages: the system prompt, then the window.

    What left the window opens the prompt as the user's own statements from it (`summary`, the
    notes made when it slid; it changes only when the window slides, so the cached prefix
    survives), with those of a part that left before its notes were made (`unsummarized`)."""
    system = config.system_prompt
    if config.tool_specs():
        system = f"{system}\n\n{TOOLS_NOTE}"
    notes = merge_notes(summary.text if summary else "", user_statements(unsummarized or []))
    if notes:
        system = f"{system}\n\n{NOTES_HEADING}\n{notes}"
    messages = [ChatMessage(role="system", content=system)]
    answered = {m.tool_call_id for m in window if m.role == "tool"}
    for m in window:
        if m.role == "tool":
            messages.append(ChatMessage(role="tool", content=m.text, tool_call_id=m.tool_call_id))
        elif m.tool_calls:
            messages.append(ChatMessage(role=m.role, content=m.text, tool_calls=m.tool_calls))
            # A call cut off with its session replica has no result: say what is known.
            for call in m.tool_calls:
                if call.id not in answered:
                    content = f"Cut off before an answer came. {UNKNOWN_NOTE}"
                    messages.append(ChatMessage(role="tool", content=content, tool_call_id=call.id))
        elif m.text:
            messages.append(ChatMessage(role=m.role, content=m.text))
    return messages
