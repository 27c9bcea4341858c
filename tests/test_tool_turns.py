"""Turns that call tools: a session replica and an llm replica in this process, on a real NATS
and Redis, calling a real HTTP tool server started here. The model is the fake engine told to
call a tool (it writes the call as text, as Qwen does, and answers the result); the session's
rules are what is under test.

Invariants protected:
- a turn that calls a tool runs it once, feeds the result back and answers with it; the client
  sees `tool.call` then `tool.result`; history holds the user message, the call, its result and
  the answer, the call written before its request left;
- a speculative turn never runs a tool with side effects before it is confirmed: retracted, the
  call never happens; confirmed, it happens once, after the confirmation; a tool without side
  effects runs at once;
- an interrupt during a call with side effects ends it `unknown`, never runs it again, and the
  next prompt tells the model it is not known whether it happened;
- bad arguments from the model are refused without a request, and the conversation goes on;
- a call the model makes again in the same turn (same tool, same arguments) is never run again:
  it gets the first result, and the model then must answer in words; one with side effects
  that an earlier turn made (it happened, or may have) is refused once (the user is asked)
  before it runs again;
- an MCP server's tools (a real server, the SDK's FastMCP) are offered, listed once and kept, and
  follow the same rules: run once with the agent's headers and an `Idempotency-Key`, a read-only
  one speculatively, one with side effects never for a retracted turn, no answer `unknown` and
  never repeated; a server outside the allowed networks is never reached.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS

from harness.mcp_server import McpToolServer
from harness.tool_server import ToolServer
from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    Interrupt,
    TurnAccepted,
    TurnConfirmed,
    TurnSubmit,
)
from services.llm.engines.fake import FakeLLMEngine
from services.llm.settings import LlmSettings
from services.llm.worker import LlmWorker
from services.session.mcp import McpCatalog
from services.session.settings import SessionSettings
from services.session.store import Store
from services.session.tools import parse_networks
from services.session.worker import SessionWorker

pytestmark = pytest.mark.asyncio


@dataclass
class Rig:
    nc: NATS
    engine: FakeLLMEngine
    store: Store
    server: ToolServer
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def session(self, agent: AgentConfig) -> str:
        agent_id, sid = secrets.token_hex(6), secrets.token_hex(8)
        await self.store.put_agent(agent_id, agent)
        await self.store.create_session(sid, agent_id)
        self.events[sid] = []

        async def on_event(msg: Any) -> None:
            self.events[sid].append(json.loads(msg.data))

        await self.nc.subscribe(subjects.events(sid), cb=on_event)
        await self.nc.flush()
        return sid

    async def submit(self, sid: str, text: str, speculative: bool = False) -> TurnSubmit:
        submit = TurnSubmit(
            session_id=sid,
            turn_id=secrets.token_hex(6),
            text=text,
            source="text",
            voice=False,
            speculative=speculative,
        )
        accepted = await bus.request(
            self.nc, subjects.SESSION_TURN, submit, TurnAccepted, timeout=5
        )
        submit.turn_id = accepted.turn_id
        return submit

    def seen(self, sid: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events[sid] if e["type"] == kind]

    async def until(self, sid: str, kind: str, n: int = 1, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(self.seen(sid, kind)) < n:
            assert time.monotonic() < end, f"no {kind}: {self.events[sid]}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def rig(nats_url: str, clean_redis: str) -> AsyncIterator[Rig]:
    nc = await nats.connect(nats_url)
    engine = FakeLLMEngine()
    llm = LlmWorker(LlmSettings(engine="fake", nats_url=nats_url), engine)
    await llm.start(nc)
    settings = SessionSettings(
        nats_url=nats_url, redis_url=clean_redis, tool_networks=["127.0.0.0/8"]
    )
    store = Store.from_url(clean_redis)
    session = SessionWorker(settings, Store.from_url(clean_redis))
    await session.start(nc)
    with ToolServer() as server:
        try:
            yield Rig(nc, engine, store, server)
        finally:
            await session.drain(2.0)
            await llm.drain(2.0)
            await session.close()
            await store.close()
            await nc.close()


def agent(server: ToolServer, **over: Any) -> AgentConfig:
    def tool(name: str, path: str, side_effects: bool, props: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "description": name.replace("_", " "),
            "url": f"{server.url}{path}",
            "side_effects": side_effects,
            "timeout_s": 1.0,
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        }

    return AgentConfig.model_validate(
        {
            "tools": [
                tool("get_weather", "/weather", False, {"city": {"type": "string"}}),
                tool("order", "/order", True, {"item": {"type": "string"}}),
                tool("slow_order", "/slow", True, {"item": {"type": "string"}}),
            ],
            **over,
        }
    )


async def test_a_tool_call_is_run_once_and_its_result_answered(rig: Rig) -> None:
    sid = await rig.session(agent(rig.server))
    rig.engine.tool_call = ("get_weather", {"city": "Lyon"})
    rig.engine.after_tool = "Here it is: {result}"
    await rig.submit(sid, "Is it raining in Lyon?")
    await rig.until(sid, "reply.done")
    assert [c["name"] for c in rig.seen(sid, "tool.call")] == ["get_weather"]
    assert rig.seen(sid, "tool.call")[0]["arguments"] == {"city": "Lyon"}
    result = rig.seen(sid, "tool.result")[0]
    assert result["outcome"] == "ok" and "Lyon" in result["result"]
    reply = rig.seen(sid, "reply.done")[0]["text"]
    assert reply.startswith("Here it is:") and "Lyon" in reply and "tool_call" not in reply
    assert [r.body for r in rig.server.calls("/weather")] == [{"city": "Lyon"}]
    history = await rig.store.history(sid)
    assert [(m.role, bool(m.tool_calls)) for m in history] == [
        ("user", False),
        ("assistant", True),
        ("tool", False),
        ("assistant", False),
    ]
    assert history[2].outcome == "ok" and history[2].tool_call_id == history[1].tool_calls[0].id
    # the second pass saw the call and its result
    last = rig.engine.requests[-1]
    assert [m.role for m in last[-3:]] == ["user", "assistant", "tool"]


async def test_a_retracted_speculative_turn_never_runs_its_side_effect(rig: Rig) -> None:
    sid = await rig.session(agent(rig.server))
    rig.engine.tool_call = ("order", {"item": "pizza"})
    submit = await rig.submit(sid, "Order a pizza", speculative=True)
    await asyncio.sleep(0.5)  # the model called it long ago: it waits for the end of turn
    assert rig.server.calls("/order") == []
    await bus.publish(
        rig.nc,
        subjects.interrupt(sid),
        Interrupt(session_id=sid, turn_id=submit.turn_id, reason="retracted"),
    )
    await asyncio.sleep(1.0)
    assert rig.server.calls("/order") == []
    assert await rig.store.history(sid) == []
    assert rig.events[sid] == [], "a retracted turn is never seen"


async def test_a_confirmed_speculative_turn_runs_its_side_effect_once_after_the_confirmation(
    rig: Rig,
) -> None:
    sid = await rig.session(agent(rig.server))
    rig.engine.tool_call = ("order", {"item": "pizza"})
    submit = await rig.submit(sid, "Order a pizza", speculative=True)
    await asyncio.sleep(0.5)
    assert rig.server.calls("/order") == []
    confirmed_at = time.monotonic()
    await bus.publish(rig.nc, subjects.playback(sid), TurnConfirmed(turn_id=submit.turn_id))
    await rig.until(sid, "reply.done")
    calls = rig.server.calls("/order")
    assert len(calls) == 1 and calls[0].at > confirmed_at
    history = await rig.store.history(sid)
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]


async def test_a_tool_without_side_effects_runs_before_the_confirmation(rig: Rig) -> None:
    sid = await rig.session(agent(rig.server))
    rig.engine.tool_call = ("get_weather", {"city": "Oslo"})
    submit = await rig.submit(sid, "Weather in Oslo?", speculative=True)
    end = time.monotonic() + 5
    while not rig.server.calls("/weather"):
        assert time.monotonic() < end, "the read-only call waited for the confirmation"
        await asyncio.sleep(0.02)
    await bus.publish(rig.nc, subjects.playback(sid), TurnConfirmed(turn_id=submit.turn_id))
    await rig.until(sid, "reply.done")
    assert len(rig.server.calls("/weather")) == 1


async def test_an_interrupt_during_a_side_effect_call_leaves_it_unknown_and_never_repeats_it(
    rig: Rig,
) -> None:
    sid = await rig.session(agent(rig.server))
    rig.server.slow_s = 3.0
    rig.engine.tool_call = ("slow_order", {"item": "pizza"})
    submit = await rig.submit(sid, "Order a pizza")
    await rig.until(sid, "tool.call")
    end = time.monotonic() + 5
    while not rig.server.calls("/slow"):
        assert time.monotonic() < end
        await asyncio.sleep(0.02)
    await bus.publish(
        rig.nc,
        subjects.interrupt(sid),
        Interrupt(session_id=sid, turn_id=submit.turn_id, reason="client", spoken_text=""),
    )
    await rig.until(sid, "reply.done")
    assert rig.seen(sid, "tool.result")[0]["outcome"] == "unknown"
    history = await rig.store.history(sid)
    assert [m.role for m in history][:3] == ["user", "assistant", "tool"]
    assert history[2].outcome == "unknown"
    # the next turn: the model reads that it is unknown, and nothing is run again by itself
    rig.engine.tool_call = None
    await rig.submit(sid, "Did it work?")
    await rig.until(sid, "reply.done", 2)
    prompt = rig.engine.requests[-1]
    assert any(m.role == "tool" and "not known whether" in m.content for m in prompt)
    await asyncio.sleep(0.5)
    assert len(rig.server.calls("/slow")) == 1


async def test_a_call_made_again_after_its_result_is_not_run_again(rig: Rig) -> None:
    """The model calls the same tool with the same arguments after its result: the turn answers
    the repeat with the first result, unrun, and offers no tools until the model answers."""
    sid = await rig.session(agent(rig.server))
    rig.engine.tool_call = ("order", {"item": "pizza"})
    rig.engine.repeats = True
    rig.engine.after_tool = "Ordered: {result}"
    await rig.submit(sid, "Order a pizza")
    await rig.until(sid, "reply.done")
    assert len(rig.server.calls("/order")) == 1
    results = rig.seen(sid, "tool.result")
    assert [r["outcome"] for r in results] == ["ok", "ok"] and results[1]["ms"] == 0.0
    assert rig.seen(sid, "reply.done")[0]["text"].startswith("Ordered:")
    assert rig.engine.tools_seen[-1] == []  # the last pass had to answer in words
    history = await rig.store.history(sid)
    assert [m.role for m in history] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]


@pytest.mark.parametrize(
    ("tool", "path", "first", "note"),
    [
        ("order", "/order", "ok", "ask them to confirm"),
        ("slow_order", "/slow", "unknown", "ask whether to try again"),  # past its timeout
    ],
)
async def test_a_side_effect_of_an_earlier_turn_is_not_repeated_unasked(
    rig: Rig, tool: str, path: str, first: str, note: str
) -> None:
    """The call happened (`ok`) or may have (`unknown`). The model calls it again in a later
    turn about something else (small models do): refused, with word to ask the user, and the
    model answers in words. Asked again, it runs."""
    sid = await rig.session(agent(rig.server))
    rig.server.slow_s = 2.0
    rig.engine.tool_call = (tool, {"item": "pizza"})
    await rig.submit(sid, "Order a pizza")
    await rig.until(sid, "reply.done")
    await rig.submit(sid, "Thanks, how long will it take?")
    await rig.until(sid, "reply.done", 2)
    outcomes = [r["outcome"] for r in rig.seen(sid, "tool.result")]
    assert outcomes == [first, "refused"], outcomes
    assert note in rig.engine.requests[-1][-1].content
    assert rig.engine.tools_seen[-1] == []
    assert len(rig.server.calls(path)) == 1
    await rig.submit(sid, "Yes, please order one more")
    await rig.until(sid, "reply.done", 3)
    assert len(rig.server.calls(path)) == 2


async def test_bad_arguments_are_refused_and_the_conversation_goes_on(rig: Rig) -> None:
    sid = await rig.session(agent(rig.server))
    rig.engine.tool_call = ("get_weather", {"town": "Lyon"})
    rig.engine.after_tool = "Sorry, that did not work: {result}"
    await rig.submit(sid, "Weather?")
    await rig.until(sid, "reply.done")
    result = rig.seen(sid, "tool.result")[0]
    assert result["outcome"] == "refused" and "city" in result["result"]
    assert rig.server.calls("/weather") == []
    assert "did not work" in rig.seen(sid, "reply.done")[0]["text"]
    rig.engine.tool_call = None
    await rig.submit(sid, "Thanks")
    await rig.until(sid, "reply.done", 2)


# -- an MCP server's tools ----------------------------------------------------------------------


def mcp_agent(server: McpToolServer, **over: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "mcp_servers": [
                {"url": server.url, "headers": {"Authorization": "Bearer s3cret"}, **over}
            ]
        }
    )


async def test_an_mcp_servers_tool_is_offered_run_once_and_its_result_answered(rig: Rig) -> None:
    with McpToolServer() as mcp:
        sid = await rig.session(mcp_agent(mcp))
        rig.engine.tool_call = ("get_weather", {"city": "Lyon"})
        rig.engine.after_tool = "Here it is: {result}"
        await rig.submit(sid, "Is it raining in Lyon?")
        await rig.until(sid, "reply.done")
        offered = [set(seen) for seen in rig.engine.tools_seen]
        assert {"get_weather", "start_timer", "slow_order"} in offered, offered
        [call] = mcp.calls
        assert (call.tool, call.arguments) == ("get_weather", {"city": "Lyon"})
        assert call.headers["authorization"] == "Bearer s3cret"
        assert call.headers["idempotency-key"].endswith(rig.seen(sid, "tool.call")[0]["call_id"])
        result = rig.seen(sid, "tool.result")[0]
        assert result["outcome"] == "ok" and "Lyon" in result["result"]
        assert "Lyon" in rig.seen(sid, "reply.done")[0]["text"]
        assert "s3cret" not in json.dumps(rig.events[sid])
        # the next turn offers the tools from the list kept: the server is not asked again
        lists = mcp.lists
        rig.engine.tool_call = None
        await rig.submit(sid, "Thanks")
        await rig.until(sid, "reply.done", 2)
        assert mcp.lists == lists and set(rig.engine.tools_seen[-1]) >= {"get_weather"}


async def test_a_retracted_speculative_turn_never_runs_an_mcp_tool_with_side_effects(
    rig: Rig,
) -> None:
    """`start_timer` is not marked read-only, so it may change something: it waits for the end
    of turn, and a retracted turn never runs it. `get_weather` is read-only: it runs at once."""
    with McpToolServer() as mcp:
        sid = await rig.session(mcp_agent(mcp))
        rig.engine.tool_call = ("get_weather", {"city": "Oslo"})
        await rig.submit(sid, "Weather in Oslo?", speculative=True)
        end = time.monotonic() + 5
        while not mcp.of("get_weather"):
            assert time.monotonic() < end, "a read-only tool runs before the confirmation"
            await asyncio.sleep(0.02)
        rig.engine.tool_call = ("start_timer", {"minutes": 5})
        submit = await rig.submit(sid, "Set a timer for five minutes", speculative=True)
        await asyncio.sleep(0.5)
        await bus.publish(
            rig.nc,
            subjects.interrupt(sid),
            Interrupt(session_id=sid, turn_id=submit.turn_id, reason="retracted"),
        )
        await asyncio.sleep(1.0)
        assert mcp.of("start_timer") == []


async def test_an_mcp_call_with_no_answer_is_unknown_and_never_repeated(rig: Rig) -> None:
    with McpToolServer() as mcp:
        mcp.slow_s = 3.0
        sid = await rig.session(mcp_agent(mcp, timeout_s=1.0))
        rig.engine.tool_call = ("slow_order", {"item": "pizza"})
        await rig.submit(sid, "Order a pizza")
        await rig.until(sid, "reply.done")
        result = rig.seen(sid, "tool.result")[0]
        assert result["outcome"] == "unknown", result
        rig.engine.tool_call = None
        await rig.submit(sid, "Did it work?")
        await rig.until(sid, "reply.done", 2)
        prompt = rig.engine.requests[-1]
        assert any(m.role == "tool" and "not known whether" in m.content for m in prompt)
        assert len(mcp.of("slow_order")) == 1


async def test_an_mcp_server_outside_the_allowed_networks_offers_nothing(rig: Rig) -> None:
    """Its address (loopback) is not public and not in the allowed networks: the turn goes on
    without its tools, and nothing reaches it."""
    with McpToolServer() as mcp:
        catalog = McpCatalog(networks=[])
        resolved = await catalog.resolve(mcp_agent(mcp))
        assert resolved.tool_specs() == [] and mcp.lists == 0
        allowed = await McpCatalog(parse_networks(["127.0.0.0/8"])).resolve(
            mcp_agent(mcp, tools=["get_weather"])
        )
        assert [s.name for s in allowed.tool_specs()] == ["get_weather"]
        assert [t.side_effects for t in allowed.mcp_tools] == [False]
