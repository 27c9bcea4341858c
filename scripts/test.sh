#!/usr/bin/env bash
# The test command: the whole suite, with real NATS and Redis servers started for the run.
#
#   scripts/test.sh                        # everything
#   scripts/test.sh tests/test_infra.py    # arguments go to pytest as they are
#   scripts/test.sh -k jetstream -x
#
# First runs scripts/install.sh with the browser, coqui-tts and deploy-check extras (seconds once
# done; SKIP_INSTALL=1 skips it). Then runs `.venv/bin/python -m pytest -q -rs [ARGS]` inside
# scripts/netns-run when a private network
# namespace can be made (root, or user namespaces allowed), so WebRTC tests get their veth
# addresses and no test can touch the machine's own NATS/Redis or services; otherwise directly,
# and the `webrtc` tests are skipped (with the reason shown). VA_TEST_NETNS=0 forces running
# outside, VA_TEST_NETNS=1 requires the namespace. Exit status: pytest's, and "no tests ran"
# (pytest's 5) is a failure too.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VPY="$REPO/.venv/bin/python"
# Everything the suite needs (fast once done): the browser, coqui-tts, the deploy checks' tools.
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  INSTALL_BROWSER=1 INSTALL_COQUI=1 INSTALL_DEPLOY_CHECK=1 scripts/install.sh
fi
[[ -x "$VPY" ]] || { echo "test: $VPY missing: run scripts/install.sh first" >&2; exit 1; }
mkdir -p tests/artifacts/logs

cmd=("$VPY" -m pytest -q -rs "$@")
netns="${VA_TEST_NETNS:-auto}"
if [[ "$netns" == auto ]]; then
  if scripts/netns-run true >/dev/null 2>&1; then netns=1; else
    echo "test: no private network namespace here: running directly; webrtc tests will skip"
    netns=0
  fi
fi
if [[ "$netns" == 1 ]]; then cmd=(scripts/netns-run "${cmd[@]}"); fi

echo "test: ${cmd[*]}"
rc=0
"${cmd[@]}" || rc=$?
if (( rc == 5 )); then
  echo "test: FAILED: pytest collected no tests (exit 5)" >&2
fi
exit "$rc"
