#!/usr/bin/env bash
# A restart that keeps the datapath: ctrl/tests/nsm_restart.rs in a release build, ROUNDS times.
# Ten KERNEL connections carry a ping every 10 ms each (and one a 20 Mbit/s iperf3 stream) while
# vwire is killed with SIGKILL and started again at once; each round prints the time from the
# restart to each connection's first reply and the largest gap between replies (the outage), for
# each KERNEL datapath: `tcx` (cross-connected in the kernel, the default) and `afxdp` (through
# the workers, whose ports are reopened at start).
#
# Usage (root): bash perf/nsm_restart.sh [ROUNDS]   → perf/reports/nsm_restart.md (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 iperf3
need_rust

ROUNDS=${1:-3}
cargo build --release --quiet -p vwire-examples
OUT=perf/reports/nsm_restart.md
LINES=()
for r in $(seq 1 "$ROUNDS"); do
  line=$(cargo test --release --quiet -p vwire --test nsm_restart a_sigkilled -- --nocapture \
    --test-threads 1 2>&1 | grep '^RESTART' || true)
  [ -n "$line" ] || { echo "round $r: the test failed" >&2; exit 1; }
  echo "round $r: $line"
  LINES+=("$line")
done
{
  echo "# Restart keeps the datapath: outage of ten KERNEL connections across a SIGKILL"
  echo
  echo "$(date -u +%F), $(uname -r), $(nproc) vCPUs, commit $(git rev-parse --short HEAD), release build,"
  echo "\`bash perf/nsm_restart.sh $ROUNDS\` (ctrl/tests/nsm_restart.rs: vwire killed with SIGKILL and started"
  echo "again at once; pings every 10 ms on each of ten connections, iperf3 at 20 Mbit/s on one). Each round"
  echo "runs both KERNEL datapaths: \`tcx\` (in the kernel, the default) and \`afxdp\` (through the workers)."
  echo
  echo "Goal (issue 14): traffic back within 1 s, no link change (checked by the test: same ifindex, same"
  echo "carrier_changes)."
  echo
  echo '```'
  printf '%s\n' "${LINES[@]}"
  echo '```'
} > "$OUT"
echo "wrote $OUT"
