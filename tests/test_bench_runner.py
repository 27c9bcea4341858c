"""A benchmark's `main`, however its measurement ends: a stop signal (SIGTERM, Ctrl-C) gives exit
code 130 and an error 1; either way what it started is stopped (the last started first) and the
results so far are still written, marked incomplete, as <name>-<stamp>.json and
<name>-latest.json with the machine and its CPU reference before and after."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.runner import Benchmark, arg_parser


def run_demo(out: Path, measure: Callable[[Benchmark], None]) -> tuple[Benchmark, list[str]]:
    args = arg_parser("demo", "A demo benchmark.").parse_args(["--out", str(out)])
    stopped: list[str] = []
    with Benchmark("demo", args) as bench:
        bench.on_cleanup(lambda: stopped.append("started first"))
        bench.on_cleanup(lambda: stopped.append("started last"))
        with bench.measuring():
            measure(bench)
        bench.publish(bench.record(turns=[1, 2]))
    return bench, stopped


def sigterm_now(bench: Benchmark) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    raise AssertionError("SIGTERM did not stop the measurement")


def sigterm_in_loop(bench: Benchmark) -> None:
    async def turns() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)

    bench.run_async(turns())


def fails(bench: Benchmark) -> None:
    raise RuntimeError("the gateway never answered")


@pytest.mark.parametrize(
    ("measure", "rc", "said"),
    [
        (sigterm_now, 130, "interrupted (SIGTERM): stopping everything"),
        (sigterm_in_loop, 130, "interrupted (SIGTERM): stopping everything"),
        (fails, 1, "benchmark failed: RuntimeError: the gateway never answered"),
    ],
    ids=["sigterm", "sigterm-in-event-loop", "error"],
)
def test_a_stopped_run_exits_with_its_code_and_keeps_its_partial_results(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    measure: Callable[[Benchmark], None],
    rc: int,
    said: str,
) -> None:
    bench, stopped = run_demo(tmp_path, measure)

    assert bench.rc == rc
    assert stopped == ["started last", "started first"]
    assert said in capsys.readouterr().out
    latest = tmp_path / "demo-latest.json"
    stamped = tmp_path / f"demo-{bench.run.stamp}.json"
    assert stamped.read_text() == latest.read_text()
    record = json.loads(latest.read_text())
    assert record["benchmark"] == "demo"
    assert record["complete"] is False
    assert record["turns"] == [1, 2]
    assert record["logs"] == str(tmp_path / "logs" / bench.run.stamp)
    assert record["machine"]["cpu_reference_ms"] > 0
    assert record["machine"]["cpu_reference_ms_after"] > 0


def test_a_complete_run_exits_0_and_says_so_in_its_results(tmp_path: Path) -> None:
    bench, stopped = run_demo(tmp_path, lambda bench: None)

    assert bench.rc == 0
    assert stopped == ["started last", "started first"]
    assert json.loads((tmp_path / "demo-latest.json").read_text())["complete"] is True
