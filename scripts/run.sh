#!/usr/bin/env bash
# Run the voice assistant on this machine.
#
#   scripts/run.sh            # install (fast when done), NATS + Redis, the five services; prints
#                             # http://127.0.0.1:8080/ when all are ready; Ctrl-C stops everything
#   scripts/run.sh --detach   # the same, but returns once ready, leaving it running
#   scripts/run.sh --lan      # also https for phones and laptops on the network (port 8443):
#                             # a local certificate authority made once (trust it on each device:
#                             # the output says how) or VA_TLS_CERT/VA_TLS_KEY (your own); the
#                             # agents API then needs a key (VA_API_KEYS, else one is made)
#   scripts/run.sh stop       # stops a running one (services first, then the NATS/Redis it started)
#   scripts/run.sh status     # which services answer /readyz
#
# Settings: SKIP_INSTALL=1 skips scripts/install.sh; NATS_URL / REDIS_URL point at servers to use
# (default nats://127.0.0.1:4222 and redis://127.0.0.1:6379: used when they answer, else started
# here with their data in .run/); VA_READY_TIMEOUT, VA_STOP_TIMEOUT, VA_SERVICES (see
# scripts/supervise.py). Logs: .run/logs/<service>.log; pids: .run/<service>.pid.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VPY="$REPO/.venv/bin/python"

cmd="start"
detach=0
for arg in "$@"; do
  case "$arg" in
    start) cmd=start ;;
    stop|status) cmd="$arg" ;;
    -d|--detach) detach=1 ;;
    --lan) export VA_LAN=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# stop/status need only the standard library: any python3 will do if the venv is gone.
py="$VPY"; [[ -x "$py" ]] || py=python3

case "$cmd" in
  stop) exec "$py" scripts/supervise.py stop ;;
  status) exec "$py" scripts/supervise.py status ;;
esac

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  scripts/install.sh
fi
[[ -x "$VPY" ]] || { echo "run: $VPY missing: run scripts/install.sh" >&2; exit 1; }
mkdir -p .run/logs
if [[ -f .run/supervise.pid ]]; then
  old="$(cat .run/supervise.pid)"
  if kill -0 "$old" 2>/dev/null && grep -qa supervise.py "/proc/$old/cmdline" 2>/dev/null; then
    echo "run: already running (pid $old): \`scripts/run.sh stop\` first" >&2
    exit 1
  fi
fi
rm -f .run/ready

if [[ "$detach" != 1 ]]; then
  # Foreground: the supervisor owns everything and stops it on Ctrl-C.
  exec "$VPY" scripts/supervise.py run
fi

# Detached: the supervisor runs in its own session, its output in .run/logs/supervise.log.
log=.run/logs/supervise.log
: >"$log"
setsid "$VPY" scripts/supervise.py run >"$log" 2>&1 </dev/null &
spid=$!
echo "run: supervisor started in the background (pid $spid, log $log)"
shown=0
show_new_lines() {  # pass the supervisor's progress through while waiting
  local total
  total=$(wc -l <"$log")
  if (( total > shown )); then sed -n "$((shown + 1)),${total}p" "$log"; shown=$total; fi
}
while [[ ! -f .run/ready ]]; do
  if ! kill -0 "$spid" 2>/dev/null; then
    sleep 0.2
    show_new_lines
    echo "run: the supervisor exited before the services were ready" >&2
    exit 1
  fi
  show_new_lines
  sleep 0.5
done
sleep 0.2
show_new_lines
echo "run: running in the background; \`scripts/run.sh stop\` stops it"
