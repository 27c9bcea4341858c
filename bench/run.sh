#!/usr/bin/env bash
# Voice latency benchmark over real WebRTC, on the embedded defaults (Whisper tiny.en, SmolLM2 via
# llama.cpp, Piper):
#
#   bench/run.sh                                   # 20 spoken turns, 10 barge-ins, 20 typed turns
#   bench/run.sh --turns 20 --barge-ins 10 --text-turns 10
#   bench/run.sh --help                            # all options
#
# Runs `python -m bench.voice_latency` inside scripts/netns-run (a private network namespace, so
# aiortc's ICE has real host addresses; the benchmark starts its own nats-server, redis-server and
# the five services there, and stops them all on exit, Ctrl-C included). Takes a few minutes.
#
# Measures, per turn: voice to voice (last audible frame of the spoken question sent -> first
# audible reply frame received) with the server's stage breakdown (turn.metrics) and the transport
# remainder; barge-in (first audible frame of a spoken interruption sent, while the reply audibly
# plays -> last audible reply frame received); typed text -> first reply.delta and -> first
# audible reply frame. One progress line per turn, with the load and the CPU seconds that the
# benchmark and everything else on the machine used during it.
#
# Output: a table on stdout (p50 / p95 / max / mean, n), bench/results/voice_latency-<stamp>.json
# and voice_latency-latest.json (machine, load before/after, git commit, every turn, anomalies),
# a plot in bench/results/voice_latency-latest.png, service logs in bench/results/logs/<stamp>/.
# Needs the venv with the bench extra (matplotlib): pip install -e '.[all,test,bench]'.
# Figures depend on the machine and on what else runs on it: on a shared machine, compare the
# per-turn "others" CPU seconds before trusting an outlier. Ctrl-C or SIGTERM stops everything
# and still writes what was measured (marked "complete": false); SIGKILL cannot clean up.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,26p' "$0"
  echo
  exec .venv/bin/python -m bench.voice_latency --help
fi
exec scripts/netns-run .venv/bin/python -m bench.voice_latency "$@"
