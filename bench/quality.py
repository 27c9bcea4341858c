"""Quality benchmark: does the assistant answer right, remember, and speak the user's language?

Runs the question set (bench/quality_set.json: facts, arithmetic, advice, yes/no, follow-ups,
memory probes inside and beyond the LLM window, questions in Spanish, French and German; a
`heldout` split the prompt is never tuned on, reported apart) as typed turns through the real
services (gateway, session, llm), once per model profile, side by side in one run. Each reply is
judged by bench/quality_checks.py. Prints a table (accuracy per category and split, memory
inside/beyond, first reply.delta p50/p95/max over all turns and over the turns right after the
window slid, reply length, loops, wrong language, too long), writes
bench/results/quality-<stamp>.json and quality-latest.json, and draws quality-latest.png.

    bench/run.sh quality                                   # every profile, the whole set
    bench/run.sh quality --profiles qwen2.5-coder-1.5b --split tune
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from harness.local_stack import LOAD_GATEWAY_ENV
from harness.services import ServiceProcs
from harness.voice_client import VoiceClient
from services.llm import fetch
from services.llm.models import PROFILES

from .quality_checks import judge
from .report import percentiles
from .runner import Benchmark, arg_parser, say

SET = Path(__file__).with_name("quality_set.json")
ORDER = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
CATEGORIES = ("facts", "arithmetic", "advice", "yesno", "followup", "memory", "language")


def parse_args(argv: list[str] | None) -> Any:
    ap = arg_parser("quality", __doc__)
    ap.add_argument("--profiles", default=",".join(ORDER), help="model profiles, in order")
    ap.add_argument("--split", choices=("all", "tune", "heldout"), default="all")
    ap.add_argument("--only", default="", help="comma list of categories")
    # The pace of a spoken conversation: the user hears the reply, then asks the next question.
    ap.add_argument("--gap", type=float, default=1.0, help="seconds after hearing a reply (1)")
    ap.add_argument(
        "--words-per-s", type=float, default=2.5, help="speaking rate of the replies heard (2.5)"
    )
    ap.add_argument("--turn-timeout", type=float, default=90.0)
    return ap.parse_args(argv)


class Conversation(VoiceClient):
    """One session over the project's own API (the tests' client, events only): typed turns."""

    async def open(self, agent: dict[str, Any] | None) -> None:
        agent_id = None
        if agent:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as c:
                r = await c.post("/v1/agents", json=agent)
                r.raise_for_status()
                agent_id = r.json()["agent_id"]
        await self.create_session(agent_id)
        await self.connect_events()

    @property
    def sid(self) -> str:
        return self.session_id

    async def ask(self, text: str, timeout: float) -> dict[str, Any]:
        """Send `text`; its reply, the time to its first delta and the server's metrics."""
        t0 = time.monotonic()
        await self.send({"type": "user.text", "text": text})
        _, final = await self.wait_event("transcript.final", timeout, after=t0, text=text)
        turn = final["turn_id"]
        _, metrics = await self.wait_event("turn.metrics", timeout, after=t0, turn_id=turn)
        events = [(t, ev) for t, ev in self.events if t >= t0 and ev.get("turn_id") == turn]
        first = next((t for t, ev in events if ev["type"] == "reply.delta"), None)
        done = next((ev for _, ev in events if ev["type"] == "reply.done"), {})
        failed = next((ev for _, ev in events if ev.get("code") == "turn_failed"), {})
        return {
            "reply": done.get("text", ""),
            "first_delta_ms": round((first - t0) * 1000, 1) if first is not None else None,
            "error": failed.get("message"),
            "server_first_delta_ms": metrics.get("first_delta_ms"),
            "llm_first_token_ms": metrics.get("llm_first_token_ms"),
            "llm_tokens_per_s": metrics.get("llm_tokens_per_s"),
        }


def window_state(r: redis.Redis, sid: str) -> tuple[int, str]:
    start, summary = r.mget(f"va:window:{sid}", f"va:summary:{sid}")
    return int(start or 0), str(summary or "")


async def run_profile(
    profile: str, convs: list[dict[str, Any]], base_url: str, r: redis.Redis, args: Any
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n, conv in enumerate(convs, 1):
        c = Conversation(base_url)
        await c.open(conv.get("agent"))
        state = window_state(r, c.sid)
        try:
            for i, turn in enumerate(conv["turns"]):
                now = window_state(r, c.sid)
                slid, state = now != state, now
                got = await c.ask(turn["user"], args.turn_timeout)
                row = {
                    "profile": profile,
                    "conversation": conv["id"],
                    "category": conv["category"],
                    "split": conv["split"],
                    "turn": i,
                    "user": turn["user"],
                    "after_slide": slid,
                    "probe": turn.get("probe"),
                    **got,
                    **judge(turn, got["reply"], conv["lang"]),
                }
                rows.append(row)
                if "passed" in row:
                    mark = "ok  " if row["passed"] else "FAIL"
                    say(
                        f"  [{profile}] {n:3d}/{len(convs)} {mark} {conv['category']:10} "
                        f"{got['first_delta_ms'] or 0:6.0f} ms  {turn['user'][:45]!r} -> "
                        f"{got['reply'][:90]!r}"
                    )
                if i + 1 < len(conv["turns"]):  # the user hears the reply, then asks again
                    await asyncio.sleep(args.gap + min(8.0, row["words"] / args.words_per_s))
        finally:
            await c.close()
    return rows


def _rate(rows: list[dict[str, Any]]) -> str:
    checked = [r for r in rows if "passed" in r]
    if not checked:
        return "-"
    ok = sum(r["passed"] for r in checked)
    return f"{100 * ok / len(checked):.0f}% ({ok}/{len(checked)})"


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"accuracy": {}, "counts": {}}
    checked = [r for r in rows if "passed" in r]
    for cat in CATEGORIES:
        for split in ("tune", "heldout"):
            sel = [r for r in checked if r["category"] == cat and r["split"] == split]
            if sel:
                out["accuracy"][f"{cat}/{split}"] = sum(r["passed"] for r in sel) / len(sel)
    for key, sel in {
        "all": checked,
        "tune": [r for r in checked if r["split"] == "tune"],
        "heldout": [r for r in checked if r["split"] == "heldout"],
        "facts_all": [r for r in checked if r["category"] == "facts"],
        "memory_inside": [r for r in checked if r.get("probe") == "inside"],
        "memory_beyond": [r for r in checked if r.get("probe") == "beyond"],
    }.items():
        if sel:
            out["accuracy"][key] = sum(r["passed"] for r in sel) / len(sel)
    delta = [r["first_delta_ms"] for r in rows if r["first_delta_ms"] is not None]
    slid = [r["first_delta_ms"] for r in rows if r["after_slide"] and r["first_delta_ms"]]
    out["first_delta_ms"] = percentiles(delta, (50, 95))
    out["first_delta_after_slide_ms"] = percentiles(slid, (50, 95))
    out["reply_words"] = percentiles([r["words"] for r in rows], (50, 95))
    llm = [r["llm_first_token_ms"] for r in rows if r.get("llm_first_token_ms") is not None]
    out["llm_first_token_ms"] = percentiles(llm, (50, 95))
    tps = [r["llm_tokens_per_s"] for r in rows if r.get("llm_tokens_per_s")]
    out["llm_tokens_per_s"] = percentiles(tps, (50, 95))
    out["counts"] = {
        "turns": len(rows),
        "checked": len(checked),
        "loops": sum(r["loop"] for r in rows),
        "wrong_language": sum(r["wrong_language"] for r in rows),
        "too_long": sum(r["too_long"] for r in rows),
        "errors": sum(1 for r in rows if r["error"]),
    }
    return out


def table(results: dict[str, dict[str, Any]], rows: dict[str, list[dict[str, Any]]]) -> str:
    profiles = list(results)
    lines = [f"{'':26}" + "".join(f"{p:>24}" for p in profiles)]

    def line(label: str, cells: list[str]) -> None:
        lines.append(f"{label:26}" + "".join(f"{c:>24}" for c in cells))

    def sel(p: str, **kw: Any) -> list[dict[str, Any]]:
        return [r for r in rows[p] if all(r.get(k) == v for k, v in kw.items())]

    for cat in CATEGORIES:
        for split in ("tune", "heldout"):
            line(f"{cat} ({split})", [_rate(sel(p, category=cat, split=split)) for p in profiles])
    line("all (tune)", [_rate(sel(p, split="tune")) for p in profiles])
    line("all (heldout)", [_rate(sel(p, split="heldout")) for p in profiles])
    line("facts (both)", [_rate(sel(p, category="facts")) for p in profiles])
    line("memory inside window", [_rate(sel(p, probe="inside")) for p in profiles])
    line("memory beyond window", [_rate(sel(p, probe="beyond")) for p in profiles])

    def ms(s: dict[str, Any]) -> str:
        if not s["n"]:
            return "-"
        return f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}"

    line("first delta p50/p95/max", [ms(results[p]["first_delta_ms"]) for p in profiles])
    line("  after a slide", [ms(results[p]["first_delta_after_slide_ms"]) for p in profiles])
    line("llm first token p50/p95/max", [ms(results[p]["llm_first_token_ms"]) for p in profiles])
    tps = [results[p]["llm_tokens_per_s"]["p50"] or 0 for p in profiles]
    line("llm tokens/s p50", [f"{t:.0f}" for t in tps])
    line("llm resident memory (MB)", [str(results[p].get("llm_rss_mb", "-")) for p in profiles])
    w = [results[p]["reply_words"] for p in profiles]
    line("reply words p50 / max", [f"{s['p50']:.0f} / {s['max']:.0f}" for s in w])
    for key in ("loops", "wrong_language", "too_long", "errors"):
        line(key, [str(results[p]["counts"][key]) for p in profiles])
    return "\n".join(lines)


def draw(results: dict[str, dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    profiles = list(results)
    keys = [f"{c}/{s}" for c in CATEGORIES for s in ("tune", "heldout")]
    keys = [k for k in keys if any(k in results[p]["accuracy"] for p in profiles)]
    keys += ["memory_inside", "memory_beyond"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(profiles))
    for i, p in enumerate(profiles):
        acc = [100 * results[p]["accuracy"].get(k, float("nan")) for k in keys]
        ax.bar(x + i * width, acc, width, label=p)
    ax.set_xticks(x + width * (len(profiles) - 1) / 2, keys, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("% of checked replies right")
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    for i, p in enumerate(profiles):
        s = results[p]["first_delta_ms"]
        t = results[p]["first_delta_after_slide_ms"]
        bx.errorbar(
            [i - 0.1],
            [s["p50"] or 0],
            yerr=[[0], [(s["p95"] or 0) - (s["p50"] or 0)]],
            fmt="o",
            color="C0",
            label="all turns p50-p95" if i == 0 else None,
        )
        if t["n"]:
            bx.plot(
                [i + 0.1],
                [t["max"]],
                "x",
                color="C3",
                label="after a slide: max" if i == 0 else None,
            )
    bx.set_xticks(range(len(profiles)), profiles, rotation=20, fontsize=8)
    bx.set_ylabel("typed text -> first reply.delta (ms)")
    bx.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def measure(
    args: Any, bench: Benchmark, rows: dict[str, list[dict[str, Any]]], rss: dict[str, int]
) -> None:
    """Each profile in turn: its llm, session and gateway against one NATS and Redis; the
    checked rows of each profile measured to the end go into `rows`."""
    data = json.loads(SET.read_text())
    convs = [
        c
        for c in data["conversations"]
        if args.split in ("all", c["split"]) and (not args.only or c["category"] in args.only)
    ]
    checked = sum(1 for c in convs for t in c["turns"] if "accept" in t)
    say(f"[setup] {len(convs)} conversations, {checked} checked turns")
    servers = bench.local_stack()
    servers.start_servers()
    nats_url, redis_url = servers.nats_url, servers.redis_url
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    for profile in args.profiles.split(","):
        procs = ServiceProcs(
            nats_url, redis_url, log_dir=bench.log_dir, prefix=profile, llm_model=profile
        )
        try:
            t0 = time.monotonic()
            llm = procs.start("llm", timeout=300)
            procs.start("session")
            gw = procs.start("gateway", env=LOAD_GATEWAY_ENV)
            say(f"[{profile}] ready in {time.monotonic() - t0:.0f} s")
            rows[profile] = await run_profile(profile, convs, gw.url, r, args)
            rss[profile] = round(psutil.Process(llm.pid).memory_info().rss / 2**20)
        finally:
            procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for profile in args.profiles.split(","):
        if profile not in PROFILES:
            raise SystemExit(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        fetch.fetch(profile)
    rows: dict[str, list[dict[str, Any]]] = {}
    rss: dict[str, int] = {}
    with Benchmark("quality", args, logs="quality-{stamp}") as bench:
        bench.log_dir.mkdir(parents=True, exist_ok=True)
        with bench.measuring():
            bench.run_async(measure(args, bench, rows, rss))
        results = {p: summarize(rs) | {"llm_rss_mb": rss.get(p)} for p, rs in rows.items() if rs}
        if not results:
            return 1
        record = bench.record(results=results, rows=rows)
        say("")
        say(bench.headline("Quality benchmark"))
        say(table(results, rows))
        bench.publish(record)

        def plot_png(title: str) -> Path:
            png = args.out / "quality-latest.png"
            draw(results, title, png)
            return png

        bench.plot(plot_png, "Quality")
    return bench.rc


if __name__ == "__main__":
    raise SystemExit(main())
