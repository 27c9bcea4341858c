#!/usr/bin/env bash
# This assistant and Pipecat side by side, on the same models, WAVs and client, in one run:
#
#   bench/setup-pipecat.sh               # once (~1 min): Pipecat 1.14.0 in bench/.venv-pipecat
#   bench/peer.sh                        # 20 voice turns + 10 barge-ins per system, ~11 min
#   bench/peer.sh --turns 10 --barge-ins 5
#   bench/peer.sh --help                 # all options
#
# Runs `python -m bench.peer_pipecat` inside scripts/netns-run. It starts both systems there (the
# assistant: nats-server, redis-server, five services; Pipecat: llama_cpp.server with SmolLM2 and
# bench/pipecat_bot.py with Whisper tiny.en, Piper joe, Silero VAD, smart-turn v3) and stops them
# on exit, Ctrl-C included. Prints a table (p50/p95 per system, ratio ours/pipecat), writes
# bench/results/peer-<stamp>.json, peer-latest.json and peer-latest.png; logs in
# bench/results/logs/peer-<stamp>/. If Pipecat cannot start: bench/peer/pipecat-failure.txt.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0"
  echo
  exec .venv/bin/python -m bench.peer_pipecat --help
fi
[[ -x bench/.venv-pipecat/bin/python ]] || bench/setup-pipecat.sh
exec scripts/netns-run .venv/bin/python -m bench.peer_pipecat "$@"
