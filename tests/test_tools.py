"""Tools, piece by piece: a call written as text taken out of a reply's stream, the agent's tool
declarations, and a call's run against a real HTTP server started here.

Invariants protected:
- a reply's ordinary words pass on at once; a call (tagged, fenced, bare JSON, doubled braces)
  never reaches the user as words, and is read with its arguments; a call of a tool that was
  not offered is dropped and reported;
- an invalid declaration (schema, name, time zone, a reserved header, a duplicate) is refused
  with its field; header values never leave the stored config (`redacted`);
- a call POSTs its arguments with `Idempotency-Key` and the declared headers; an address that
  is neither public nor in the allowed networks is refused before any request; a redirect is
  not followed; an answer past its size is cut; no answer in time is `unknown`; arguments that
  do not match the schema are refused without a request; an HTTP error is `error`;
- a call cut off with its replica is read by the next prompt as of unknown outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from harness.tool_server import ToolServer
from services.common.messages import REDACTED, AgentConfig, HistoryMessage, ToolCall
from services.llm.engine import ToolCall as WrittenCall
from services.llm.tool_calls import ToolCallSplitter
from services.session.tools import Toolbox, parse_networks
from services.session.window import to_chat

OFFERED = {"get_weather", "set_timer"}


def split(
    pieces: list[str], offered: set[str] = OFFERED
) -> tuple[str, list[WrittenCall], list[str]]:
    """What passes on as words (pieces fed one by one), the calls read, the unknown names."""
    splitter = ToolCallSplitter(offered)
    said = "".join(splitter.feed(p) for p in pieces)
    parsed = splitter.finish()
    return said + parsed.text, parsed.calls, parsed.unknown


def chars(text: str) -> list[str]:
    return list(text)  # the hardest stream: one character a piece


@pytest.mark.parametrize(
    "reply",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>',
        '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Lyon"\n  }\n}\n```',
        '{"name": "get_weather", "arguments": {"city": "Lyon"}}',
        '{{"name": "get_weather", "arguments": {{"city": "Lyon"}}}}',
        '[{"function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Lyon\\"}"}}]',
        '  \n<tool_call>{"name": "get_weather", "parameters": {"city": "Lyon"}}',  # unclosed
        '<tools>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tools>',
        'get_weather(city="Lyon")',
        'get_weather{{"city": "Lyon"}}',
    ],
)
def test_a_call_in_any_shape_the_model_writes_is_read_and_never_said(reply: str) -> None:
    said, calls, unknown = split(chars(reply))
    assert said.strip() == "" and not unknown
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Lyon"})]


def test_words_before_a_call_pass_on_and_the_call_is_held() -> None:
    reply = 'Let me check that. <tool_call>{"name": "set_timer", "arguments": {"minutes": 10}}'
    splitter = ToolCallSplitter(OFFERED)
    passed = [splitter.feed(p) for p in chars(reply)]
    assert "".join(passed) == "Let me check that. "
    # the words came as they were written, not at the end
    assert passed.index("L") == 0
    parsed = splitter.finish()
    assert [c.name for c in parsed.calls] == ["set_timer"] and parsed.text == ""


def test_an_ordinary_reply_passes_on_piece_by_piece() -> None:
    reply = "Paris is the capital of France, and `Paris` is also a name."
    splitter = ToolCallSplitter(OFFERED)
    first = splitter.feed("Paris")
    assert first == "Paris"  # not held back: no latency for words
    rest = "".join(splitter.feed(p) for p in chars(reply[5:]))
    parsed = splitter.finish()
    assert first + rest + parsed.text == reply and not parsed.calls


def test_a_call_of_a_tool_not_offered_is_dropped_and_reported() -> None:
    said, calls, unknown = split(['```json\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n```'])
    assert said == "" and calls == [] and unknown == ["add"]


def test_a_call_written_when_no_tool_is_offered_any_more_is_held_and_never_said() -> None:
    """After its results, the model is offered no tools (a round that ran nothing, or the last
    round) but writes the call again: held, and no usable call (asked again for words)."""
    for reply in ('{"name": "set_timer", "arguments": {"minutes": 10}}', "set_timer(minutes=10)"):
        splitter = ToolCallSplitter(set(), called={"set_timer"})
        assert "".join(splitter.feed(p) for p in chars(reply)) == ""
        parsed = splitter.finish()
        assert not parsed.calls and parsed.text == "" and parsed.unusable, (reply, parsed)
    assert split(["Your timer", " is set."], set())[0] == "Your timer is set."


def test_a_bare_tool_name_is_a_call_and_empty_markup_is_no_usable_one() -> None:
    said, calls, _ = split(chars("  set_timer"))
    assert said.strip() == "" and [(c.name, c.arguments) for c in calls] == [("set_timer", "{}")]
    splitter = ToolCallSplitter(OFFERED)
    assert splitter.feed("<tools></tools>") == ""
    parsed = splitter.finish()
    assert parsed.text == "" and parsed.unusable  # asked again, never said
    # a word that only begins like a tool's name is said at once
    assert split(["getting", " warmer"])[0] == "getting warmer"


def test_held_text_that_holds_no_call_is_said_after_all() -> None:
    said, calls, _ = split(chars("{this is not json} but words"))
    assert said == "{this is not json} but words" and not calls


# -- declarations -----------------------------------------------------------------------------
def tool(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "url": "https://weather.example.com/now",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    return {**base, **over}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"tools": [tool(parameters={"type": "objekt"})]}, "tools.0.parameters"),
        ({"tools": [tool(parameters={"type": "string"})]}, "tools.0.parameters"),
        ({"tools": [tool(name="get weather")]}, "tools.0.name"),
        ({"tools": [tool(url="ftp://example.com/x")]}, "tools.0.url"),
        ({"tools": [tool(headers={"Host": "x"})]}, "tools.0.headers"),
        ({"tools": [tool(timeout_s=0)]}, "tools.0.timeout_s"),
        ({"tools": [tool(), tool()]}, ""),
        ({"builtin_tools": ["launch_rockets"]}, "builtin_tools.0"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ],
)
def test_an_invalid_tool_declaration_is_refused_with_its_field(
    config: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        AgentConfig.model_validate(config)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert field in locs, locs


def test_header_values_never_leave_the_stored_config() -> None:
    config = AgentConfig.model_validate({"tools": [tool(headers={"X-Api-Key": "s3cret"})]})
    shown = config.redacted().model_dump_json()
    assert "s3cret" not in shown and REDACTED in shown
    assert config.tools[0].headers == {"X-Api-Key": "s3cret"}  # what the session uses


# -- a call against a real server -------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[ToolServer]:
    with ToolServer() as s:
        yield s


def box_for(server: ToolServer, networks: list[str], **over: object) -> tuple[Toolbox, list[str]]:
    ended: list[str] = []
    config = AgentConfig.model_validate(
        {
            "tools": [
                tool(url=f"{server.url}/weather", headers={"X-Api-Key": "s3cret"}, **over),
                tool(name="slow", url=f"{server.url}/slow", timeout_s=0.5),
                tool(name="hop", url=f"{server.url}/redirect"),
                tool(name="big", url=f"{server.url}/big", max_response_bytes=1000),
                tool(name="down", url=f"{server.url}/fail"),
            ],
            "builtin_tools": ["current_time", "end_conversation"],
            "time_zone": "Asia/Tokyo",
        }
    )
    box = Toolbox(config, httpx.AsyncClient(), parse_networks(networks), lambda: ended.append("x"))
    return box, ended


def call(name: str, args: object) -> ToolCall:
    text = args if isinstance(args, str) else json.dumps(args)
    return ToolCall(id="call_1", name=name, arguments=text)


@pytest.mark.asyncio
async def test_a_call_posts_its_arguments_once_with_its_key_and_headers(server: ToolServer) -> None:
    box, _ = box_for(server, ["127.0.0.0/8"])
    before = len(server.calls("/weather"))
    result = await box.run(call("get_weather", {"city": "Lyon"}), "R1-call_1")
    assert result.outcome == "ok" and json.loads(result.text)["city"] == "Lyon"
    sent = server.calls("/weather")[before:]
    assert len(sent) == 1 and sent[0].body == {"city": "Lyon"}
    assert sent[0].headers["Idempotency-Key"] == "R1-call_1"
    assert sent[0].headers["X-Api-Key"] == "s3cret"
    assert sent[0].headers["Host"] == f"127.0.0.1:{server.port}"


@pytest.mark.asyncio
async def test_an_address_outside_the_allowed_networks_is_refused_before_any_request(
    server: ToolServer,
) -> None:
    box, _ = box_for(server, [])  # default: public addresses only
    before = len(server.requests)
    result = await box.run(call("get_weather", {"city": "Lyon"}), "k")
    assert result.outcome == "refused" and "127.0.0.1" in result.text
    assert len(server.requests) == before


@pytest.mark.asyncio
async def test_bad_arguments_are_refused_without_a_request(server: ToolServer) -> None:
    box, _ = box_for(server, ["127.0.0.0/8"])
    before = len(server.requests)
    for args in ({"town": "Lyon"}, {"city": 7}, "{city: Lyon", "[1]"):
        result = await box.run(call("get_weather", args), "k")
        assert result.outcome == "refused", (args, result)
        assert "did not happen" in result.for_model()
    assert len(server.requests) == before


@pytest.mark.asyncio
async def test_what_can_go_wrong_is_said_plainly(server: ToolServer) -> None:
    box, _ = box_for(server, ["127.0.0.0/8"])
    t0 = time.monotonic()
    slow = await box.run(call("slow", {"city": "x"}), "k")
    assert slow.outcome == "unknown" and time.monotonic() - t0 < 2.0
    assert "not known whether" in slow.for_model()
    hop = await box.run(call("hop", {"city": "x"}), "k")
    assert hop.outcome == "error" and "redirect" in hop.text
    assert not [r for r in server.requests if r.path == "/weather" and r.body == {"city": "x"}]
    big = await box.run(call("big", {"city": "x"}), "k")
    assert big.outcome == "ok" and big.text.count("x") == 1000 and "cut at 1000" in big.text
    down = await box.run(call("down", {"city": "x"}), "k")
    assert down.outcome == "error" and "503" in down.text
    nowhere = await box.run(call("nothing", {}), "k")
    assert nowhere.outcome == "refused"


@pytest.mark.asyncio
async def test_the_built_ins_need_no_server(server: ToolServer) -> None:
    box, ended = box_for(server, [])
    now = await box.run(call("current_time", {}), "k")
    assert now.outcome == "ok" and "(Asia/Tokyo)" in now.text
    bye = await box.run(call("end_conversation", {}), "k")
    assert bye.outcome == "ok" and ended == ["x"]
    assert not box.side_effects("current_time") and box.side_effects("end_conversation")


def test_a_call_cut_off_with_its_replica_reads_as_unknown_in_the_next_prompt() -> None:
    calls = [ToolCall(id="c1", name="set_timer", arguments='{"minutes": 5}')]
    history = [
        HistoryMessage(role="user", text="Set a timer", turn_id="t1", created_at=0),
        HistoryMessage(role="assistant", text="", turn_id="t1", tool_calls=calls, created_at=0),
        HistoryMessage(role="user", text="Did it work?", turn_id="t2", created_at=0),
    ]
    chat = to_chat(AgentConfig(), history)
    assert [m.role for m in chat] == ["system", "user", "assistant", "tool", "user"]
    assert chat[3].tool_call_id == "c1" and "not known whether" in chat[3].content
