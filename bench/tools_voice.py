"""Tool turns by voice: the wait the user hears. Spoken questions that need a tool, over real
WebRTC, to the whole stack on its defaults (bench/tools.py starts it), with the tools bound to a
real HTTP tool server (harness/tool_server.py) that answers after `--tool-delay-s` (a slow API:
the filler is due).

Per turn, from the last audible frame of the question sent (the end of speech):
- `to_call_ms`: until the client got `tool.call`;
- `to_filler_ms`: until the first audible reply frame when a filler was spoken (the reply's first
  words are the filler's text);
- `to_answer_ms`: until the answer's first audible frame: the first run of audible frames (no
  gap over GAP_S within it) after the end of speech, or with a filler the second (none when the
  answer followed the filler without a pause).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from harness.voice_client import VoiceClient

from .runner import say
from .scenarios import Clip, Sessions, _finish, clip, register_agent
from .tools_material import BUILTINS, TOOLS, WITH_TOOL

GAP_S = 0.12  # a pause longer than this ends a run of audible frames
TARGET_FILLER_P95_MS = 1200.0


@dataclass(frozen=True)
class Spoken:
    clip: Clip
    tool: str


def questions(n: int) -> list[Spoken]:
    """`n` prompts of the choice benchmark that need an HTTP tool, the tools taken in turn."""
    by_tool: dict[str, list[str]] = {}
    for case in WITH_TOOL:
        if case.tool is not None:
            by_tool.setdefault(case.tool, []).append(case.text)
    picked: list[Spoken] = []
    i = 0
    while len(picked) < n and any(by_tool.values()):
        for tool, texts in by_tool.items():
            if i < len(texts) and len(picked) < n:
                picked.append(Spoken(clip(texts[i]), tool))
        i += 1
    return picked


def agent_config(tool_url: str) -> dict[str, Any]:
    tools = [
        {k: v for k, v in t.items() if k != "path"} | {"url": tool_url + t["path"]} for t in TOOLS
    ]
    return {"tools": tools, "builtin_tools": BUILTINS}


async def tool_turn(client: VoiceClient, spoken: Spoken, filler_text: str) -> dict[str, Any]:
    t_play = time.monotonic()
    client.speaker.play(spoken.clip.pcm, spoken.clip.rate)
    await client.speaker.done.wait()
    t_end = client.speaker.last_audible_sent
    _, final = await client.wait_event("transcript.final", 30, after=t_play, source="voice")
    tid = final["turn_id"]
    t_done, done, _ = await _finish(client, tid, t_play)
    mine = [(t, e) for t, e in client.events if t >= t_play and e.get("turn_id") == tid]
    calls = [(t, e) for t, e in mine if e["type"] == "tool.call"]
    results = [e for _, e in mine if e["type"] == "tool.result"]
    deltas = [(t, e["text"]) for t, e in mine if e["type"] == "reply.delta"]
    filler = bool(deltas) and deltas[0][1].strip() == filler_text.strip()
    runs = _runs(client, t_end or t_play, t_done + 1.0)
    first = runs[0][0] if runs else None
    # the filler is the first run; the answer's audio the next (None: no pause between them)
    answer_run = runs[1:2] if filler else runs[:1]
    answer = answer_run[0][0] if answer_run else None

    def since_end(t: float | None) -> float | None:
        return round((t - t_end) * 1000, 1) if t is not None and t_end is not None else None

    return {
        "question": spoken.clip.text,
        "expected": spoken.tool,
        "transcript": final["text"],
        "called": [e["name"] for _, e in calls],
        "outcomes": [e["outcome"] for e in results],
        "filler": filler,
        "reply": done["text"],
        "to_call_ms": since_end(calls[0][0]) if calls else None,
        "to_filler_ms": since_end(first) if filler else None,
        "to_first_audio_ms": since_end(first),
        "to_answer_ms": since_end(answer),
    }


def _runs(client: VoiceClient, t0: float, t1: float) -> list[tuple[float, float]]:
    """The runs of audible frames received between t0 and t1: (first, last) frame times."""
    runs: list[tuple[float, float]] = []
    for r in client.audio:
        if r.t < t0 or not r.audible:
            continue
        if r.t > t1:
            break
        if runs and r.t - runs[-1][1] <= GAP_S:
            runs[-1] = (runs[-1][0], r.t)
        else:
            runs.append((r.t, r.t))
    return runs


async def measure(
    base_url: str, tool_url: str, turns: int, filler_text: str
) -> list[dict[str, Any]]:
    spoken = questions(turns)
    agent_id = await register_agent(base_url, agent_config(tool_url))
    sessions = Sessions(base_url, agent_id, 3)
    rows: list[dict[str, Any]] = []
    try:
        for i, s in enumerate(spoken):
            client = await sessions.open()
            try:
                row = await tool_turn(client, s, filler_text)
            except TimeoutError as exc:
                row = {"question": s.clip.text, "expected": s.tool, "error": str(exc)}
            rows.append(row)
            say(f"voice {i + 1:>2}/{len(spoken)}  {_line(row)}")
    finally:
        await sessions.close()
    return rows


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"FAILED {r['error']}"
    return (
        f"call {r['to_call_ms']} ms, filler {r['to_filler_ms']} ms, answer {r['to_answer_ms']} ms"
        f"  {r['called']} {r['outcomes']}  {r['transcript'][:40]!r}"
    )


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]

    def pct(key: str) -> dict[str, float | None]:
        xs = sorted(r[key] for r in ok if r.get(key) is not None)
        if not xs:
            return {"n": 0, "p50": None, "p95": None}
        p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
        return {"n": len(xs), "p50": statistics.median(xs), "p95": p95}

    return {
        "turns": len(rows),
        "failed": len(rows) - len(ok),
        "called_expected": sum(r["called"][:1] == [r["expected"]] for r in ok),
        "with_filler": sum(r["filler"] for r in ok),
        "to_call_ms": pct("to_call_ms"),
        "to_filler_ms": pct("to_filler_ms"),
        "to_first_audio_ms": pct("to_first_audio_ms"),
        "to_answer_ms": pct("to_answer_ms"),
        "target_filler_p95_ms": TARGET_FILLER_P95_MS,
    }


def table(s: dict[str, Any]) -> str:
    rows = [
        f"{s['turns']} spoken tool turns ({s['failed']} failed; the expected tool called in "
        f"{s['called_expected']}, a filler spoken in {s['with_filler']})",
        "| from the end of speech to | n | p50 | p95 |",
        "|---|---|---|---|",
    ]
    names = {
        "to_call_ms": "`tool.call` at the client",
        "to_filler_ms": f"the filler's first audio (target p95 ≤ {TARGET_FILLER_P95_MS:.0f} ms)",
        "to_first_audio_ms": "the first audio (filler or answer)",
        "to_answer_ms": "the answer's first audio",
    }
    for key, name in names.items():
        v = s[key]
        p50 = f"{v['p50']:.0f} ms" if v["p50"] is not None else "-"
        p95 = f"{v['p95']:.0f} ms" if v["p95"] is not None else "-"
        rows.append(f"| {name} | {v['n']} | {p50} | {p95} |")
    return "\n".join(rows)
