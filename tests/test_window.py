"""The LLM's history window: bounded by turns and tokens, trimmed in blocks so most turns keep
the same prompt prefix (and the LLM's cached evaluation of it)."""

from __future__ import annotations

from services.common.messages import AgentConfig, HistoryMessage
from services.session.window import plan_window, to_chat


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
