"""Tools: does the model call the right tool with the right arguments, and no tool when none is
needed? And how long does the user wait, by voice, for the filler and the answer?

Choice: through the llm service's own code (an llm replica in this process, the default model
unless `--model`), on a NATS server of its own. Every prompt of bench/tools_material.py goes as
the session sends a turn's first request: the agent's system prompt, the user's words, all six
tools offered (so five are distractors for each). A call is right when it names the expected
tool and its arguments hold the expected values (strings compared case-insensitively, an item
by its stem); a prompt that needs no tool is right when no tool is called. The `test` split is
never tuned on and reported apart.

Voice (then, unless --voice-turns 0): spoken tool questions to the whole stack, the wait the
user hears until the filler and the answer (bench/tools_voice.py).
Tables, JSON, PNG in bench/results/.

    bench/run.sh tools                    # the default model (~12 min on 2 cores)
    bench/run.sh tools --voice-turns 0 --model smollm2-135m
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nats

from harness.servers import start_local_nats
from harness.tool_server import ToolServer
from services.common import bus, subjects
from services.common.messages import (
    AgentConfig,
    ClaimAck,
    HistoryMessage,
    LLMDone,
    LLMError,
    LLMOut,
    LLMRequest,
    decode,
)
from services.llm.main import build_engine
from services.llm.models import DEFAULT_PROFILE
from services.llm.settings import LlmSettings
from services.llm.worker import LlmWorker
from services.session.settings import SessionSettings
from services.session.window import to_chat

from . import tools_voice
from .report import save_figure
from .runner import Benchmark, arg_parser, say
from .tools_material import BUILTINS, TOOLS, WITH_TOOL, WITHOUT_TOOL, Case

TARGET_RIGHT_CALL = 0.90
TARGET_NO_CALL = 0.95


def parse_args(argv: list[str] | None) -> Any:
    p = arg_parser("tools", __doc__)
    p.add_argument("--model", default=DEFAULT_PROFILE, help="llm profile or GGUF path")
    p.add_argument("--limit", type=int, default=0, help="at most this many prompts of each kind")
    p.add_argument("--split", choices=["all", "tune", "test"], default="all")
    p.add_argument("--voice-turns", type=int, default=12, help="spoken tool turns (12; 0: none)")
    p.add_argument("--tool-delay-s", type=float, default=1.0, help="the tools' answer time (1.0)")
    p.add_argument("--skip-choice", action="store_true", help="the voice part only")
    return p.parse_args(argv)


def agent() -> AgentConfig:
    tools = [
        {k: v for k, v in t.items() if k != "path"} | {"url": f"http://127.0.0.1{t['path']}"}
        for t in TOOLS
    ]
    return AgentConfig.model_validate({"tools": tools, "builtin_tools": BUILTINS})


@dataclass
class Outcome:
    text: str
    expected: str | None
    split: str
    called: list[str]
    arguments: list[Any]
    said: str
    right: bool
    ms: float


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, bool):
        return got is expected or str(got).lower() == str(expected).lower()
    if isinstance(expected, int | float):
        try:
            return float(got) == float(expected)
        except (TypeError, ValueError):
            return False
    return str(expected).casefold() in str(got).casefold()


def judge(case: Case, done: LLMDone) -> tuple[bool, list[Any]]:
    args: list[Any] = []
    for call in done.tool_calls:
        try:
            args.append(json.loads(call.arguments))
        except ValueError:
            args.append(call.arguments)
    if case.tool is None:
        return not done.tool_calls, args
    if len(done.tool_calls) != 1 or done.tool_calls[0].name != case.tool:
        return False, args
    got = args[0] if isinstance(args[0], dict) else {}
    return all(_same(v, got.get(k)) for k, v in case.args.items()), args


async def ask(nc: Any, config: AgentConfig, case: Case) -> tuple[LLMDone, float]:
    sid, rid = secrets.token_hex(6), secrets.token_hex(6)
    history = [HistoryMessage(role="user", text=case.text, turn_id="t", created_at=time.time())]
    request = LLMRequest(
        session_id=sid,
        turn_id="t",
        reply_id=rid,
        messages=to_chat(config, history),
        params=config.llm,
        tools=config.tool_specs(),
    )
    done: asyncio.Future[LLMDone] = asyncio.get_running_loop().create_future()

    async def on_out(msg: Any) -> None:
        item = decode(LLMOut, msg.data)
        if isinstance(item, LLMDone | LLMError) and not done.done():
            if isinstance(item, LLMError):
                done.set_exception(RuntimeError(item.message))
            else:
                done.set_result(item)

    sub = await nc.subscribe(subjects.llm_out(sid, rid), cb=on_out)
    t0 = time.perf_counter()
    try:
        await bus.request(nc, subjects.LLM_CLAIM, request, ClaimAck, timeout=5)
        result = await asyncio.wait_for(done, 120)
    finally:
        await sub.unsubscribe()
    return result, (time.perf_counter() - t0) * 1000


async def measure(args: Any, out: list[Outcome]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_local_nats(Path(tmp), Path(tmp))
        try:
            nc = await nats.connect(server.url)
            settings = LlmSettings(model=args.model, nats_url=server.url)
            worker = LlmWorker(settings, build_engine(settings))
            await worker.start(nc)
            config = agent()
            cases = _limited(WITH_TOOL, args.limit) + _limited(WITHOUT_TOOL, args.limit)
            cases = [c for c in cases if args.split in ("all", c.split)]
            for case in cases:
                done, ms = await ask(nc, config, case)
                right, arguments = judge(case, done)
                called = [c.name for c in done.tool_calls]
                out.append(
                    Outcome(
                        case.text, case.tool, case.split, called, arguments, done.text, right, ms
                    )
                )
                mark = "" if right else "  <-- "
                shown = ", ".join(
                    f"{n}{json.dumps(a)}" for n, a in zip(called, arguments, strict=False)
                )
                what = shown or repr(done.text[:40])
                say(f"{case.split:4} {ms:6.0f} ms {case.text[:48]:48} {what}{mark}")
            await worker.drain(5.0)
            await worker.close()
            await nc.close()
        finally:
            server.stop()


def _limited(cases: list[Case], limit: int) -> list[Case]:
    if not limit:
        return cases
    by_tool: dict[str | None, list[Case]] = {}
    for c in cases:
        by_tool.setdefault(c.tool, []).append(c)
    return [c for group in by_tool.values() for c in group[:limit]]


def summary(rows: list[Outcome]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for split in ("all", "tune", "test"):
        mine = [r for r in rows if split in ("all", r.split)]
        need = [r for r in mine if r.expected is not None]
        none = [r for r in mine if r.expected is None]
        ms = sorted(r.ms for r in mine)
        out[split] = {
            "with_tool_n": len(need),
            "right_call": sum(r.right for r in need),
            "wrong_tool": sum(bool(r.called) and r.called[0] != r.expected for r in need),
            "no_call": sum(not r.called for r in need),
            "without_tool_n": len(none),
            "no_call_right": sum(r.right for r in none),
            "ms_p50": ms[len(ms) // 2] if ms else None,
        }
    return out


def table(stats: dict[str, dict[str, Any]]) -> str:
    rows = [
        f"| prompts | right tool and arguments (target {TARGET_RIGHT_CALL:.0%}) | wrong tool | "
        f"no call | no tool when none needed (target {TARGET_NO_CALL:.0%}) | time p50 |",
        "|---|---|---|---|---|---|",
    ]
    for split, s in stats.items():
        if s["ms_p50"] is None:
            continue  # a split not run
        n, m = max(1, s["with_tool_n"]), max(1, s["without_tool_n"])
        rows.append(
            f"| {split} | {s['right_call']} of {s['with_tool_n']} ({s['right_call'] / n:.0%}) | "
            f"{s['wrong_tool']} | {s['no_call']} | {s['no_call_right']} of {s['without_tool_n']} "
            f"({s['no_call_right'] / m:.0%}) | {s['ms_p50']:.0f} ms |"
        )
    return "\n".join(rows)


def draw(stats: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    splits = list(stats)
    right = [s["right_call"] / max(1, s["with_tool_n"]) for s in stats.values()]
    none = [s["no_call_right"] / max(1, s["without_tool_n"]) for s in stats.values()]
    xs = range(len(splits))
    ax.bar([x - 0.2 for x in xs], right, 0.4, label="right tool and arguments")
    ax.bar([x + 0.2 for x in xs], none, 0.4, label="no tool when none needed")
    ax.axhline(TARGET_RIGHT_CALL, color="tab:blue", ls="--", lw=1)
    ax.axhline(TARGET_NO_CALL, color="tab:orange", ls="--", lw=1)
    ax.set_xticks(list(xs), splits)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, ax, title, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Outcome] = []
    voice: list[dict[str, Any]] = []
    with Benchmark("tools", args) as bench:
        with bench.measuring():
            if not args.skip_choice:
                asyncio.run(measure(args, rows))
            if args.voice_turns:
                voice += measure_voice(bench, args)
        if not rows and not voice:
            return bench.rc or 1
        stats = summary(rows) if rows else {}
        heard = tools_voice.summary(voice) if voice else {}
        record = bench.record(
            model=args.model,
            targets={"right_call": TARGET_RIGHT_CALL, "no_call": TARGET_NO_CALL},
            summary=stats,
            outcomes=[asdict(r) for r in rows],
            voice={"tool_delay_s": args.tool_delay_s, "summary": heard, "turns": voice},
        )
        say("")
        say(bench.headline(f"Tools ({args.model})"))
        if stats:
            say(table(stats))
        if heard:
            say(tools_voice.table(heard))
        bench.publish(record)
        if stats:
            bench.plot(lambda t: draw(stats, t, args.out / "tools-latest.png"), "Tool choice")
    return bench.rc


def measure_voice(bench: Benchmark, args: Any) -> list[dict[str, Any]]:
    """The voice part: the whole stack (the llm on `args.model`), its tools on a real server."""
    with ToolServer() as tools:
        tools.delay_s = args.tool_delay_s
        env = {"llm": {"VA_MODEL": args.model}, "session": {"VA_TOOL_NETWORKS": "127.0.0.0/8"}}
        stack = bench.local_stack(env=env)
        stack.start()
        filler = SessionSettings().tool_filler_text
        out: list[dict[str, Any]] = []

        async def run() -> None:
            out.extend(
                await tools_voice.measure(stack.base_url, tools.url, args.voice_turns, filler)
            )

        bench.run_async(run())
        return out


if __name__ == "__main__":
    raise SystemExit(main())
