"""The LLM's history window: bounded by turns and tokens, trimmed in blocks so most turns keep
the same prompt prefix (and the LLM's cached evaluation of it); the notes of what left it keep
the user's statements, in their words, each once, and stay bounded."""

from __future__ import annotations

from services.common.messages import AgentConfig, HistoryMessage
from services.session.window import (
    MAX_NOTES_CHARS,
    merge_notes,
    plan_window,
    to_chat,
    user_statements,
)


def history(turns: int, words: int = 5) -> list[HistoryMessage]:
    out = []
    for i in range(turns):
        out.append(
            HistoryMessage(
                role="user", text=" ".join(["ask"] * words), turn_id=f"t{i}", created_at=float(i)
            )
        )
        out.append(
            HistoryMessage(
                role="assistant",
                text=" ".join(["answer"] * words),
                turn_id=f"t{i}",
                created_at=float(i),
            )
        )
    return out


def test_window_moves_in_blocks_and_keeps_its_prefix_between_moves() -> None:
    config = AgentConfig(history_max_turns=8, history_token_budget=10_000)
    start, moves, prefix_kept = 0, 0, 0
    full: list[HistoryMessage] = []
    for turn in range(40):
        full = history(turn + 1)[:-1]  # the new user message, before its reply
        new_start = plan_window(full, start, config)
        window = full[new_start:]
        assert window[0].role == "user"
        assert sum(m.role == "user" for m in window) <= config.history_max_turns
        assert window[-1] is full[-1]  # the newest message is always there
        if new_start == start:
            prefix_kept += 1
        else:
            moves += 1
            assert new_start > start
        start = new_start
    # Moves happen about every max_turns/2 turns, not every turn.
    assert moves <= 40 // (config.history_max_turns // 2) + 1
    assert prefix_kept >= 30


def test_window_respects_the_token_budget() -> None:
    config = AgentConfig(history_max_turns=500, history_token_budget=200)
    full = history(30, words=20)[:-1]
    start = plan_window(full, 0, config)
    tokens = sum(len(m.text) // 4 + 4 for m in full[start:])
    assert tokens <= config.history_token_budget
    assert full[start].role == "user"


def test_chat_messages_start_with_the_system_prompt() -> None:
    config = AgentConfig(system_prompt="Be brief.")
    chat = to_chat(config, history(2))
    assert chat[0].role == "system" and chat[0].content == "Be brief."
    assert [m.role for m in chat[1:]] == ["user", "assistant", "user", "assistant"]


def said(*texts: str) -> list[HistoryMessage]:
    return [HistoryMessage(role="user", text=t, turn_id="t", created_at=0) for t in texts]


def test_the_notes_keep_statements_and_leave_out_questions() -> None:
    messages = said(
        "Hi! My name is Dana. Where is Lisbon?",
        "¿Dónde está mi perro? Se llama Toby.",
        "Why is the sky blue?",
    ) + [HistoryMessage(role="assistant", text="You live in Lisbon.", turn_id="t", created_at=0)]
    assert user_statements(messages) == ["Hi!", "My name is Dana.", "Se llama Toby."]


def test_the_notes_hold_each_statement_once_and_drop_the_oldest_past_their_size() -> None:
    notes = merge_notes("- I live in Oslo.", ["I live in Oslo.", "I play the cello."])
    assert notes == "- I live in Oslo.\n- I play the cello."
    many = merge_notes(notes, [f"My friend number {i} is called Sam." for i in range(200)])
    assert len(many) <= MAX_NOTES_CHARS
    assert many.endswith("- My friend number 199 is called Sam.")
    assert "Oslo" not in many
