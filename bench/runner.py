"""The `main` of every benchmark: options, machine, signals, clean-up and results, written once.

    def main(argv: list[str] | None = None) -> int:
        args = parse_args(argv)                      # arg_parser(): --out included
        with Benchmark("scale", args, webrtc="bench/run.sh scale") as bench:
            stack = bench.local_stack(env=...)       # stopped by measuring(), whatever happens
            with bench.measuring():                  # Ctrl-C: rc 130, an error: rc 1, partial
                stack.start()
                bench.run_async(measure(...))        # a stop signal cancels it cleanly
            if results:
                record = bench.record(levels=results)
                say(bench.headline("scale"))
                bench.publish(record)                # <name>-<stamp>.json and <name>-latest.json
                bench.plot(lambda title: draw(..., title, args.out / "scale-latest.png"), "scale")
        return bench.rc

`Benchmark` prints the machine line (`BenchRun.begin`: CPU, cores, the CPU reference, load,
commit), turns Ctrl-C, SIGTERM and SIGHUP into a clean stop while it is open, gives a temporary
work folder and the log folder (`<out>/logs/<stamp>/`), and stops what was registered with
`on_cleanup` (last registered first) with further signals ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.local_stack import LocalStack
from harness.paths import REPO, shown

from . import report
from .helper import Helper
from .machine import BenchRun
from .signals import cancel_on_signals, signals_ignored, stopped_on_signals

RESULTS = REPO / "bench" / "results"


def say(line: str) -> None:
    """A progress or result line, at once (the output is often piped to a log)."""
    print(line, flush=True)


def arg_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """`python -m bench.<module>` options, described by the first paragraph of its docstring;
    `--out`, the results folder, is common to all."""
    p = argparse.ArgumentParser(
        prog=f"python -m bench.{module}",
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    return p


def webrtc_note(command: str) -> None:
    """WebRTC between local processes needs the addresses scripts/netns-run gives."""
    if os.environ.get("VA_NETNS") != "1":
        say(f"note: not inside scripts/netns-run; WebRTC may not connect (use {command})")


class Benchmark:
    """One run of a benchmark, from its machine line to its results files."""

    def __init__(
        self,
        name: str,
        args: argparse.Namespace,
        *,
        webrtc: str | None = None,
        logs: str | None = "{stamp}",
    ) -> None:
        """`name`: the module under bench/ (the record's "benchmark" and its file names);
        `webrtc`: the command to suggest when not inside scripts/netns-run; `logs`: the log
        folder's name under <out>/logs/ ("{stamp}" is the run's), None for none kept."""
        self.name = name
        self.args = args
        self._webrtc = webrtc
        self._logs = logs
        self.rc = 0
        self.interrupted = False
        self.error: Exception | None = None  # what ended `measuring` early, if not a signal
        self._cleanups: list[Callable[[], object]] = []
        self._exit = contextlib.ExitStack()

    def __enter__(self) -> Benchmark:
        if self._webrtc is not None:
            webrtc_note(self._webrtc)
        self.run = BenchRun.begin(self.name, say)
        self.work = Path(
            self._exit.enter_context(tempfile.TemporaryDirectory(prefix=f"va-{self.name}-"))
        )
        self._exit.enter_context(stopped_on_signals())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with signals_ignored():
                while self._cleanups:  # left when `measuring` never ran
                    self._cleanups.pop()()
        finally:
            self._exit.__exit__(exc_type, exc, tb)

    @property
    def log_dir(self) -> Path:
        """<out>/logs/<logs>/; without `logs`, a folder in the work folder (thrown away)."""
        if self._logs is None:
            return self.work / "logs"
        return Path(self.args.out) / "logs" / self._logs.format(stamp=self.run.stamp)

    # -- what runs, and what is stopped afterwards ---------------------------------------------
    def on_cleanup(self, stop: Callable[[], object]) -> None:
        """`stop()` when `measuring` ends (the last registered first)."""
        self._cleanups.append(stop)

    def local_stack(self, logs: str = "", **kw: Any) -> LocalStack:
        """A LocalStack in the work folder, logging to the log folder (its `logs` subfolder when
        given); stopped at the end."""
        stack = LocalStack(self.work, self.log_dir / logs, say, **kw)
        self.on_cleanup(stack.stop)
        return stack

    def helper(self, name: str, args: list[str], stdin: bool = False) -> Helper:
        """A helper process (`python -m bench.<module> ...`); stopped at the end."""
        helper = Helper(name, args, say, stdin=stdin)
        self.on_cleanup(helper.stop)
        return helper

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """The measurement: a stop signal or an error ends it (the results so far are kept and
        marked partial), then everything registered is stopped."""
        try:
            yield
        except KeyboardInterrupt as exc:
            self.interrupted, self.rc = True, 130
            say(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping everything")
        except Exception as exc:
            self.interrupted, self.rc, self.error = True, 1, exc
            say(f"\nbenchmark failed: {type(exc).__name__}: {exc}")
        finally:
            with signals_ignored():
                while self._cleanups:
                    self._cleanups.pop()()

    @staticmethod
    def run_async(main: Coroutine[Any, Any, None]) -> None:
        """`asyncio.run(main)`; a stop signal cancels it and is raised as KeyboardInterrupt."""
        stopped = asyncio.run(cancel_on_signals(main))
        if stopped is not None:
            raise KeyboardInterrupt(stopped)

    # -- results --------------------------------------------------------------------------------
    def record(self, **fields: Any) -> dict[str, Any]:
        """The results record: BenchRun's head (machine, config, command, ...), then `fields`."""
        log_dir = self.log_dir if self._logs is not None else None
        return self.run.record(self.args, self.interrupted, log_dir, **fields)

    def headline(self, title: str, extra: str = "") -> str:
        return self.run.headline(title, self.interrupted, extra)

    def publish(self, record: dict[str, Any], name: str | None = None) -> list[Path]:
        """`<name>-<stamp>.json` and `<name>-latest.json` in --out (name: the benchmark's)."""
        paths = report.write_json(record, self.args.out, self.run.stamp, name=name or self.name)
        for path in paths:
            say(f"wrote {shown(path)}")
        return paths

    def plot(self, draw: Callable[[str], Path], title: str) -> Path | None:
        """`draw(title)` -> the PNG written, the title completed with the run's date, commit,
        CPU and load; without matplotlib, a note instead."""
        try:
            png = draw(self.run.plot_title(title))
        except ImportError as exc:
            say(f"no plot ({exc}): pip install -e '.[bench]'")
            return None
        say(f"wrote {shown(png)}")
        return png
