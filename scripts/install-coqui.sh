#!/usr/bin/env bash
# Install coqui-tts 0.28 as an optional TTS engine into the project venv, CPU only.
#
#   scripts/install-coqui.sh            # installs into ./.venv (repo root)
#   VENV=/path/to/venv scripts/install-coqui.sh
#
# Idempotent: a second run checks, re-verifies and exits in a few seconds.
#
# Why it looks like this (see shared FINDINGS, TTS):
# - coqui-tts declares torch/torchaudio only in extras. We pin the CPU torch wheel by its local
#   version (`torch==2.13.0+cpu`, found through pip's find-links on this machine) so pip fails
#   loudly instead of pulling a CUDA build with GBs of nvidia-* wheels from PyPI.
# - coqui-tts imports torchaudio (it refuses to import without it) and, with torch >= 2.9, checks
#   that torchcodec is installed. PyPI has no CPU torchaudio for Linux: every torchaudio wheel there
#   links libtorch_cuda/libcudart. torchaudio >= 2.9 is pure Python apart from optional extensions
#   (_torchaudio, libtorchaudio, prefixctc), and it skips them when the files are absent, so we
#   delete those three .so files; the Python transforms coqui uses (Resample, MelSpectrogram) work.
#   torchaudio 2.11 / torchcodec 0.17 declare no dependencies, so they go in the same pip call.
#   torchcodec is only checked for presence; it is needed for torchaudio.load(), which synthesis
#   from a local checkpoint never calls.
# - `six` is imported by TTS.tts.utils.text.punctuation but not declared by coqui-tts.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv}"
PY="$VENV/bin/python"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
PACKAGES=("$TORCH_SPEC" "coqui-tts==0.28.0" "torchaudio==2.11.0" "torchcodec==0.17.0" "six")

log() { printf '[install-coqui %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[install-coqui] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no python at $PY (create the venv first, or set VENV=...)"
log "venv: $VENV ($("$PY" --version 2>&1))"

# 1. Refuse to work on top of a CUDA torch: it would stay, and cost GBs.
existing_cuda="$("$PY" - <<'EOF' 2>/dev/null || true
import importlib.util
if importlib.util.find_spec("torch") is not None:
    import torch
    print(torch.version.cuda or "")
EOF
)"
[[ -z "$existing_cuda" ]] || die "a CUDA torch (cuda $existing_cuda) is installed in $VENV;" \
    "uninstall torch and nvidia-* first"

# 2. One resolver run: pip skips what is already satisfied.
log "pip install ${PACKAGES[*]}"
start=$SECONDS
pip_log="$(mktemp)"
trap 'rm -f "$pip_log"' EXIT
set +o pipefail
"$PY" -m pip install --progress-bar off "${PACKAGES[@]}" 2>&1 | tee "$pip_log" \
    | { grep --line-buffered -E "^ *(Collecting|Downloading|Using cached|Installing|Successfully)|ERROR" || true; }
pip_rc=${PIPESTATUS[0]}
set -o pipefail
if [[ $pip_rc -ne 0 ]]; then
    grep -v "is ignored: it is neither a file nor a directory" "$pip_log" | tail -40 >&2
    die "pip install failed (exit $pip_rc)"
fi
log "pip done in $((SECONDS - start)) s"

# 3. Remove torchaudio's CUDA-linked extension libraries (find_spec does not import torchaudio).
ta_lib="$("$PY" -c 'import importlib.util as u, os
s = u.find_spec("torchaudio"); print(os.path.join(s.submodule_search_locations[0], "lib"))')"
removed=0
for so in _torchaudio.abi3.so libtorchaudio.abi3.so torchaudio_prefixctc.abi3.so; do
    if [[ -e "$ta_lib/$so" ]]; then
        rm -f -- "$ta_lib/$so"
        removed=$((removed + 1))
    fi
done
log "torchaudio CUDA extensions removed: $removed (already absent: $((3 - removed)))"

# 4. Verify: CPU torch, no nvidia wheels, coqui imports offline.
if "$PY" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
    die "nvidia-* packages are installed in $VENV: a CUDA torch was pulled somewhere"
fi
COQUI_TOS_AGREED=1 HF_HUB_OFFLINE=1 "$PY" - <<'EOF' || die "coqui-tts does not import (above)"
import torch
assert torch.version.cuda is None, f"CUDA torch {torch.version.cuda}"
import torchaudio
from TTS.api import TTS  # noqa: F401
from TTS.utils.synthesizer import Synthesizer  # noqa: F401
import importlib.metadata as md
print(f"  torch {torch.__version__}, torchaudio {torchaudio.__version__}, "
      f"coqui-tts {md.version('coqui-tts')}: TTS.api imports")
EOF
log "ok: coqui-tts installed (CPU only)"
