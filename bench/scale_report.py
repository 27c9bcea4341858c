"""Scale: the printed tables (fake engines, real models, CPU per process, the gateway's py-spy
profile), the one-line summary of a level and the verdicts against the target."""

from __future__ import annotations

from typing import Any

GAP_TARGET_MS = 60.0


TARGET_SESSIONS = 20


SERVICES = ("gateway", "session", "asr", "llm", "tts", "nats-server", "redis-server")


def f0(v: Any, d: int = 0) -> str:
    return f"{v:.{d}f}" if isinstance(v, int | float) else "-"


def level_line(lv: dict[str, Any]) -> str:
    g, m = lv["gaps"], lv.get("machine", {})
    cpu = m.get("cpu_pct", {})
    hz = m.get("healthz_ms", {})

    def f(v: Any, d: int = 0) -> str:
        return f"{v:.{d}f}" if isinstance(v, int | float) else "-"

    return (
        f"{lv['sessions']:>3} sessions: {lv['turns']} turns ({f(lv['turns_per_s'], 2)}/s), "
        f"v2v p50 {f(lv['voice_to_voice_ms']['p50'])} ms; frame gaps (wire) p50 "
        f"{f(g['p50'], 1)} p99 {f(g['p99'], 1)} max {f(g['max'], 1)} ms, {g['over_target']} over "
        f"60 ms in {g['sessions_over_target']} session(s) (at the track: max "
        f"{f(lv.get('track_gaps', g)['max'], 1)}, {lv.get('track_gaps', g)['over_target']} over); "
        f"gateway {f(gateway_cpu(cpu))} % CPU, "
        f"healthz p99 {f(hz.get('p99'), 1)} ms; clients {f(cpu.get('clients'))} %; machine "
        f"{f(m.get('machine_busy_cores'), 2)} cores busy, others {f(m.get('others_cores'), 2)}"
    )


def fake_tables(levels: list[dict[str, Any]]) -> str:
    lines = []
    head = (
        f"{'sessions':>8} {'turns':>6} {'turn/s':>6} {'v2v p50':>8} {'v2v p95':>8} "
        f"{'gap p50':>7} {'gap p99':>7} {'p99.9':>7} {'gap max':>7} {'>60ms':>6} {'sess>60':>7} "
        f"{'trk max':>7} {'trk>60':>6} {'client':>6} "
        f"{'silent':>6} {'gw hz p99':>9} {'hz max':>7} {'cl lag':>7} {'errors':>6}"
    )
    lines += [
        "fake engines: per level (ms; gaps between reply frames on the wire: the kernel's receive"
        " time of each frame's packet at the client; 'trk' = the same gaps when the decoded frame"
        " reached the client's recorder, which adds the client process's own stalls; 'client' ="
        " track gaps over 60 ms that a stall of the client's event loop explains; 'silent' ="
        " silent frames inside replies; 'gw hz' = gateway /healthz answer time; 'cl lag' ="
        " worst client-process event-loop lag)",
        head,
        "-" * len(head),
    ]
    for lv in levels:
        g, v, m = lv["gaps"], lv["voice_to_voice_ms"], lv.get("machine", {})
        tg = lv.get("track_gaps", g)
        hz = m.get("healthz_ms", {})
        lines.append(
            f"{lv['sessions']:>8} {lv['turns']:>6} {f0(lv['turns_per_s'], 2):>6} "
            f"{f0(v['p50']):>8} {f0(v['p95']):>8} {f0(g['p50'], 1):>7} {f0(g['p99'], 1):>7} "
            f"{f0(g['p99.9'], 1):>7} {f0(g['max'], 1):>7} {g['over_target']:>6} "
            f"{g['sessions_over_target']:>7} {f0(tg['max'], 1):>7} {tg['over_target']:>6} "
            f"{tg.get('explained_by_client_stall', '-'):>6} "
            f"{lv['silent_frames_inside_replies']:>6} {f0(hz.get('p99'), 1):>9} "
            f"{f0(hz.get('max'), 1):>7} {f0(lv['client_loop_lag_ms']['max'], 0):>7} "
            f"{len(lv['errors']):>6}"
        )
        if g.get("turns_timed_at_track"):
            lines.append(f"{'':>8} ({g['turns_timed_at_track']} turns without kernel stamps)")
    return "\n".join(lines)


def gateway_cpu(cpu: dict[str, float]) -> float:
    """All gateway processes together, % of one core."""
    return sum(v for k, v in cpu.items() if k == "gateway" or k.startswith("gateway-"))


def cpu_table(levels: list[dict[str, Any]], title: str) -> str:
    seen = {k for lv in levels for k in lv.get("machine", {}).get("cpu_pct", {})}
    more = sorted(k for k in seen if k.startswith("gateway-") or k == "nginx")
    names = [*SERVICES, *more, "clients", "bench"]
    head = (
        f"{'sessions':>8} {'gw idle':>8} {'cl idle':>8} "
        + " ".join(f"{n[:8]:>8}" for n in names)
        + f" {'busy':>6} {'others':>6} | RSS MiB: "
        + " ".join(f"{n[:7]:>7}" for n in ("gateway", "session", "asr", "llm", "tts", "clients"))
    )
    lines = [title, head, "-" * len(head)]
    for lv in levels:
        m = lv.get("machine", {})
        cpu, rss = m.get("cpu_pct", {}), m.get("rss_mib", {})
        idle = lv.get("idle_machine", {}).get("cpu_pct", {})
        gw_idle = gateway_cpu(idle) if idle else None
        lines.append(
            f"{lv['sessions']:>8} {f0(gw_idle):>8} {f0(idle.get('clients')):>8} "
            + " ".join(f"{f0(cpu.get(n)):>8}" for n in names)
            + f" {f0(m.get('machine_busy_cores'), 2):>6} {f0(m.get('others_cores'), 2):>6} | "
            + "          "
            + " ".join(
                f"{f0(rss.get(n)):>7}"
                for n in ("gateway", "session", "asr", "llm", "tts", "clients")
            )
        )
    return "\n".join(lines)


def cpu_per_turn(cpu: dict[str, float], seconds: float, turns: float) -> dict[str, str]:
    """CPU seconds each process spent per turn over the window, as text ("-" if unknown)."""
    out = {}
    for name in SERVICES:
        c = cpu.get(name)
        out[name] = f"{c / 100.0 * seconds / turns:.2f}" if c is not None and turns else "-"
    return out


def real_table(levels: list[dict[str, Any]]) -> str:
    head = (
        f"{'sessions':>8} {'turns':>6} {'turn/s':>6} {'v2v p50':>8} {'v2v p95':>8} "
        f"{'asr p50':>8} {'llm p50':>8} {'tts p50':>8} {'1st aud':>8} | CPU-s per turn: "
        f"{'asr':>6} {'llm':>6} {'tts':>6} {'gateway':>7} {'session':>7} | "
        f"{'svc CPU/sess':>12} {'gap max':>7} {'>60ms':>5}"
    )
    lines = [
        "real models: per level (ms; stage latencies from turn.metrics; CPU-s per turn = the"
        " stage's CPU over the window / turns; 'svc CPU/sess' = all services' CPU % / sessions)",
        head,
        "-" * len(head),
    ]
    for lv in levels:
        m = lv.get("machine", {})
        cpu = m.get("cpu_pct", {})
        st = lv["stages_ms"]

        secs = m.get("seconds") or lv["seconds"]
        per_turn = cpu_per_turn(cpu, secs, lv["turns_in_window"])
        svc = sum(cpu.get(n, 0.0) for n in SERVICES)
        lines.append(
            f"{lv['sessions']:>8} {lv['turns']:>6} {f0(lv['turns_per_s'], 2):>6} "
            f"{f0(lv['voice_to_voice_ms']['p50']):>8} {f0(lv['voice_to_voice_ms']['p95']):>8} "
            f"{f0(st['asr_ms']['p50']):>8} {f0(st['llm_first_token_ms']['p50']):>8} "
            f"{f0(st['tts_first_audio_ms']['p50']):>8} {f0(st['first_audio_ms']['p50']):>8} | "
            f"                {per_turn['asr']:>6} {per_turn['llm']:>6} {per_turn['tts']:>6} "
            f"{per_turn['gateway']:>7} {per_turn['session']:>7} | "
            f"{f0(svc / lv['sessions'], 0) + ' %':>12} {f0(lv['gaps']['max'], 1):>7} "
            f"{lv['gaps']['over_target']:>5}"
        )
    return "\n".join(lines)


def profile_text(levels: list[dict[str, Any]]) -> str:
    out = []
    for lv in levels:
        p = lv.get("gateway_profile")
        if not p or not p.get("main_thread_samples"):
            continue
        out.append(
            f"gateway py-spy at {lv['sessions']} sessions ({p['seconds']} s, "
            f"{p['main_thread_samples']} samples of its event-loop thread): busy "
            f"{p['main_thread_busy_pct']} % of the time; other threads busy (100 = one core): "
            + ", ".join(f"{k} {v}" for k, v in p["threads_busy_pct_of_one"].items() if v >= 1)
        )
        out.append("  event-loop thread, inclusive (% of all its samples):")
        out += [f"    {pct:5.1f}  {name}" for name, pct in p["main_top_inclusive_pct"]]
        out.append("  event-loop thread, self:")
        out += [f"    {pct:5.1f}  {name}" for name, pct in p["main_top_self_pct"][:10]]
        out.append(f"  raw stacks: {p['raw']}, one snapshot: {p['dump']}")
    return "\n".join(out)


def verdicts(levels: list[dict[str, Any]]) -> list[str]:
    fake = [lv for lv in levels if lv["part"] == "fake"]
    out = []
    at = next((lv for lv in fake if lv["sessions"] == TARGET_SESSIONS), None)
    if at is not None:
        g = at["gaps"]
        tg = at.get("track_gaps", g)
        ok = g["over_target"] == 0
        out.append(
            f"target (20 sessions, fake engines, no reply-frame gap over 60 ms at any client): "
            f"{'MET' if ok else 'MISSED'} - on the wire: max gap {f0(g['max'], 1)} ms, "
            f"{g['over_target']} gaps over 60 ms in {g['sessions_over_target']} of "
            f"{TARGET_SESSIONS} sessions; at the clients' recorders: max {f0(tg['max'], 1)} ms, "
            f"{tg['over_target']} over 60 ms ({tg.get('explained_by_client_stall', '-')} at a"
            " stall of the client's own event loop)"
        )
        if g.get("turns_timed_at_track"):
            out.append(
                f"  {g['turns_timed_at_track']} turns had no kernel receive stamps: their gaps"
                " were timed at the track"
            )
    held = [lv["sessions"] for lv in fake if lv["gaps"]["over_target"] == 0]
    broke = [lv["sessions"] for lv in fake if lv["gaps"]["over_target"] > 0]
    if fake:
        out.append(
            f"fake engines: no gap over 60 ms at {held or 'no level'}; gaps over 60 ms at "
            f"{broke or 'no level'}"
        )
        for lv in fake:
            cpu = lv.get("machine", {}).get("cpu_pct", {})
            if cpu:
                top = max(
                    ((k, v) for k, v in cpu.items() if k not in ("bench",)), key=lambda x: x[1]
                )
                hz = lv["machine"].get("healthz_ms", {})
                out.append(
                    f"  {lv['sessions']:>3} sessions: busiest {top[0]} {top[1]:.0f} % of a core, "
                    f"gateway {gateway_cpu(cpu):.0f} %, machine "
                    f"{lv['machine']['machine_busy_cores']:.2f} of 2 cores, gateway /healthz p99 "
                    f"{f0(hz.get('p99'), 1)} ms"
                )
    return out
