"""A replica dies (SIGKILL) while a tool call with side effects is in flight: the llm replica
that wrote the call, or the session replica that runs it, with a second replica of each running
(the default model: it calls tools). The killed replica is started again.

Invariant protected: the call runs once. The turn in flight ends (its reply, or `turn_failed`),
the next turn is answered by the survivor, and nobody runs the call again, however often the
model calls it: the history holds the call (written before its request left) and, with the
session replica killed, no result, which the next prompt reads as "not known whether it
happened"; no reply says a call as text.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from harness.services import start_stack
from harness.tool_server import ToolServer
from harness.voice_client import VoiceClient
from services.llm.models import DEFAULT_PROFILE
from tests.test_faults import Claims, outcome
from tests.test_restarts import history
from tests.test_voice_e2e import new_agent

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

# The tool server runs on loopback: the session may call it.
SESSION = {"VA_LLM_STALL_TIMEOUT_S": "5", "VA_TOOL_NETWORKS": "127.0.0.0/8"}
LLM = {"VA_MODEL": DEFAULT_PROFILE}
ENV = {"session": SESSION, "llm": LLM, "gateway": {"VA_TURN_STALL_TIMEOUT_S": "8"}}


@pytest.fixture(scope="module")
def stack(procs_module):  # type: ignore[no-untyped-def]
    return start_stack(procs_module, replicas={"llm": 2, "session": 2}, env=ENV)


TIMER = {
    "system_prompt": "You are a helpful assistant. Use start_timer whenever asked for a timer. "
    "Reply in English with one short sentence.",
    "llm": {"temperature": 0.0, "max_tokens": 60},
}


def timer_agent(tools: ToolServer) -> dict[str, Any]:
    tool = {
        "name": "start_timer",
        "description": "Start a countdown timer.",
        "url": f"{tools.url}/timer",
        "timeout_s": 8,
        "parameters": {
            "type": "object",
            "properties": {"minutes": {"type": "number"}},
            "required": ["minutes"],
        },
    }
    return {**TIMER, "tools": [tool]}


async def _timer_running(client: VoiceClient, claims: Claims, tools: ToolServer) -> str:
    """Ask for a timer; the turn id once its call reached the tool server."""
    await client.send({"type": "user.text", "text": "Set a timer for ten minutes, please."})
    _, called = await client.wait_event("tool.call", 90)
    assert called["name"] == "start_timer", called
    await asyncio.to_thread(tools.received.wait, 10)
    assert len(tools.calls("/timer")) == 1
    return str(called["turn_id"])


@pytest.mark.parametrize("victim", ["llm", "session"])
async def test_a_replica_killed_during_a_tool_call_never_runs_it_twice(  # type: ignore[no-untyped-def]
    stack, nats_url, victim: str
) -> None:
    with ToolServer() as tools:
        tools.delay_s = 4.0  # the call is in flight when the replica dies
        client = VoiceClient(stack.base_url)
        await client.create_session(await new_agent(stack.base_url, timer_agent(tools)))
        await client.connect_events()
        claims = Claims()
        await claims.start(nats_url, client.session_id)
        try:
            mark = time.monotonic()
            turn_id = await _timer_running(client, claims, tools)
            claim = await claims.wait(victim)
            killed = stack.replica(claim["worker_id"])
            killed.kill(signal.SIGKILL)
            killed.wait(10)
            result = await outcome(client, turn_id, mark, timeout=60)
            print(f"{victim} killed during a tool call: turn {result}")
            # the next turn ends (its words are the model's: after a refused call the 1.5B
            # model may write the call again instead, and then says nothing)
            t_next = time.monotonic()
            await client.send({"type": "user.text", "text": "What color is the sky?"})
            _, final = await client.wait_event("transcript.final", 10, after=t_next)
            await client.wait_event("reply.done", 90, turn_id=final["turn_id"])
            await asyncio.sleep(tools.delay_s + 1)  # a second call would have come by now
            assert len(tools.calls("/timer")) == 1, tools.calls("/timer")
            # the call is in the history, and no reply said a call (as text) instead of words
            entries = await history(client)
            calls = [c["name"] for m in entries for c in m.get("tool_calls") or []]
            said = [m["text"] for m in entries if m["role"] == "assistant"]
            assert calls[:1] == ["start_timer"], entries
            assert not any("start_timer" in text for text in said), said
            stack.by_kind[victim].remove(killed)
            stack.start(victim, env=ENV[victim])
        finally:
            await claims.close()
            await client.close()
