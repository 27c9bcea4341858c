#!/usr/bin/env bash
# Set up Pipecat, the peer that bench/peer_pipecat.py compares this assistant with, in a venv of
# its own, so the project's .venv is never touched:
#
#   bench/setup-pipecat.sh            # creates bench/.venv-pipecat (gitignored); ~1-3 min
#   FORCE=1 bench/setup-pipecat.sh    # reinstall even if the stamp says it is done
#
# What goes in (pinned, so a rerun gives the same peer):
#   pipecat-ai[webrtc,whisper,piper]==1.14.0  SmallWebRTC (aiortc) transport, faster-whisper STT,
#                                             Piper TTS, OpenAI-compatible LLM client; Silero VAD
#                                             and smart-turn v3.2 ONNX files ship in the wheel
#   aiortc/av/faster-whisper/piper-tts/onnxruntime at the project's own versions (same engines)
#   fastapi + uvicorn                         Pipecat's SmallWebRTC request handler imports fastapi
# Extras left out on purpose: local-smart-turn (pulls torch + transformers; the default smart-turn
# v3 analyser runs on onnxruntime without them), runner (pulls pipecat-ai-prebuilt, a web UI).
# A constraints file pins torch==2.13.0 in case anything asks for it; the script fails if torch
# ends up installed at all. Models are not installed here: bench/peer_pipecat.py passes the
# project's model files (Whisper tiny.en folder, Joe Piper voice, SmolLM2 GGUF) to the bot.
# The LLM server (python -m llama_cpp.server) runs from the project's .venv, where llama-cpp-python
# is already built: compiling it again here would take 6-15 min on 2 cores.
#
# Settings: PYTHON (interpreter for the venv, default python3), VENV (default bench/.venv-pipecat).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,22p' "$0"; exit 0; fi

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$REPO/bench/.venv-pipecat}"
VPY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
T0=$SECONDS
PACKAGES=(
  "pipecat-ai[webrtc,whisper,piper]==1.14.0"
  "aiortc==1.16.0"
  "av==18.1.0"
  "faster-whisper==1.2.1"
  "piper-tts==1.8.0"
  "onnxruntime==1.32.0"
  "fastapi>=0.115.6,<1"
  "uvicorn>=0.32,<1"
)

step() { printf '\n==> [setup-pipecat %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'setup-pipecat: ERROR: %s\n' "$*" >&2; exit 1; }
# A failing step's command and full output, kept where a commit can take it (bench/results/ is
# gitignored): the peer benchmark's record of why Pipecat could not run here.
FAILURE="$REPO/bench/peer/pipecat-failure.txt"
fail_with() {  # fail_with LOG COMMAND...
  local log="$1"; shift
  mkdir -p "$(dirname "$FAILURE")"
  { echo "bench/setup-pipecat.sh failed on $(date -Iseconds), $(uname -srm), $("$PYTHON" -V 2>&1)"
    echo "\$ $*"; echo; cat "$log"; } >"$FAILURE"
  die "$* failed: full output in ${FAILURE#"$REPO"/}"
}

STAMP="$VENV/.pipecat-setup-stamp"
WANT="$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -c1-16)"
if [[ "${FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  step "already set up ($VENV, stamp $WANT); FORCE=1 to redo"
  "$VPY" -c "import importlib.metadata as m; print('    pipecat-ai', m.version('pipecat-ai'))"
  exit 0
fi

step "venv $VENV (python: $("$PYTHON" -V 2>&1))"
[[ -x "$VPY" ]] || "$PYTHON" -m venv "$VENV"
"$VPY" -m pip install -q --upgrade pip

step "pip install ${PACKAGES[*]}"
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==2.13.0" >"$CONSTRAINTS"
LOG="$VENV/pip-install.log"
# pip's own progress, one line per package, so a slow download does not look like a hang.
set +e
"$VPY" -m pip install -c "$CONSTRAINTS" "${PACKAGES[@]}" 2>&1 | tee "$LOG" |
  grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully|ERROR)' |
  sed -u 's/^/    /'
rc=${PIPESTATUS[0]}
set -e
[[ $rc -eq 0 ]] || fail_with "$LOG" "$VPY" -m pip install -c "$CONSTRAINTS" "${PACKAGES[@]}"

step "checks"
if "$VPY" -m pip show torch >/dev/null 2>&1; then
  die "torch got installed into $VENV: something pulled it in (see $LOG)"
fi
info "no torch: ok"
CHECK="$VENV/check-pipecat.py"
CHECK_LOG="$VENV/check-pipecat.log"
cat >"$CHECK" <<'EOF'
import importlib.metadata as m
import importlib.resources as r

for name in ("pipecat-ai", "aiortc", "av", "faster-whisper", "piper-tts", "onnxruntime", "openai"):
    print(f"    {name} {m.version(name)}")
# The bundled ONNX files that keep the bot offline: Silero VAD and smart-turn v3.2.
for pkg, f in (("pipecat.audio.vad.data", "silero_vad.onnx"),
               ("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")):
    p = r.files(pkg).joinpath(f)
    assert p.is_file(), f"missing {pkg}/{f}"
    print(f"    bundled {f}: {p.stat().st_size / 1e6:.1f} MB")
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: F401
from pipecat.services.whisper.stt import WhisperSTTService  # noqa: F401
from pipecat.services.piper.tts import PiperTTSService  # noqa: F401
from pipecat.services.openai.llm import OpenAILLMService  # noqa: F401
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3  # noqa: F401
print("    imports: ok")
EOF
HF_HUB_OFFLINE=1 "$VPY" "$CHECK" >"$CHECK_LOG" 2>&1 ||
  fail_with "$CHECK_LOG" HF_HUB_OFFLINE=1 "$VPY" "$CHECK"
grep -v -E '[|] (DEBUG|INFO) ' "$CHECK_LOG" || true
echo "$WANT" >"$STAMP"
step "done: $VENV ($(du -sh "$VENV" | cut -f1))"
