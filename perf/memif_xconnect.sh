#!/usr/bin/env bash
# memif ↔ memif cross-connect throughput: vwire against DPDK testpmd as the device under test
# (DUT), with the same traffic source in the same run (testbed.md's loop for 2 vCPUs).
#
# Source and sink, core 0: a testpmd with two memif client ports in io forwarding, started with
# --tx-first, so that its packets loop through the DUT and back. DUT, core 1: either vwire (two
# memif server ports cross-connected, busy polling) or a second testpmd (two memif servers, io
# forwarding). Throughput is what the source receives, in packets/s summed over its two ports,
# the median of its per-second reports. The two DUTs alternate in short windows, and the report
# gives the median of the per-pair ratios vwire/testpmd, because the cache-line round trip
# between the two vCPUs changes every few seconds to minutes on this VM class.
#
# Usage (root): bash perf/memif_xconnect.sh [PAIRS] [SECONDS]  → perf/reports/memif_xconnect.{json,md}
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages dpdk-dev librte-net-memif23 python3 curl
need_rust

PAIRS=${1:-5}
SECS=${2:-4}
DIR=/run/vwperf-memif
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$DIR" "$WORK"
}
trap cleanup EXIT
cargo build --release --quiet -p vwire

EAL="--no-huge --no-pci -m 256"
APP="--stats-period=1 --nb-cores=1 --total-num-mbufs=16384 --burst=32 --no-mlockall"
vdevs() { # role
  echo "--vdev=net_memif0,role=$1,id=0,socket=$DIR/a.sock,socket-abstract=no --vdev=net_memif1,role=$1,id=0,socket=$DIR/b.sock,socket-abstract=no"
}

start_dut_testpmd() {
  stdbuf -o0 dpdk-testpmd -l 0,1 --main-lcore 0 $EAL --file-prefix vwperf-dut $(vdevs server) \
    -- --forward-mode=io $APP > "$WORK/dut.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$DIR/b.sock" ] && return; sleep 0.05; done
  cat "$WORK/dut.log"; die "testpmd DUT did not start"
}
start_dut_vwire() {
  memif_xconnect_config "$WORK/vwire.toml" 1 127.0.0.1:9197 "$DIR"
  ./target/release/vwire run --config "$WORK/vwire.toml" 2>"$WORK/vwire.log" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf 127.0.0.1:9197/metrics >/dev/null && return; sleep 0.05; done
  cat "$WORK/vwire.log"; die "vwire did not start"
}
# One window: prints the median packets/s the source received.
window() { # dut size
  rm -rf "$DIR"; mkdir -p "$DIR"; PIDS=()
  "start_dut_$1"
  stdbuf -o0 dpdk-testpmd -l 0,1 --main-lcore 1 $EAL --file-prefix vwperf-src $(vdevs client) \
    -- --forward-mode=io --tx-first --txpkts="$2" $APP > "$WORK/src.log" 2>&1 &
  local src=$!
  sleep $(( SECS + 2 ))
  kill -INT "$src"; wait "$src" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  # Per-second reports: "Rx-pps: N" for port 0 then port 1; skip the first two seconds.
  grep -o 'Rx-pps: *[0-9]*' "$WORK/src.log" | awk '{print $2}' | python3 -c '
import sys, statistics
v = [int(x) for x in sys.stdin.read().split()]
pairs = [v[i] + v[i + 1] for i in range(0, len(v) - 1, 2)][2:]
print(statistics.median(pairs) if pairs else 0)'
}

: > "$WORK/samples"
for size in 64 1500; do
  for i in $(seq "$PAIRS"); do
    v=$(window vwire "$size"); t=$(window testpmd "$size")
    echo "$size $v $t" | tee -a "$WORK/samples"
  done
done

python3 - "$WORK/samples" perf/reports "$PAIRS" "$SECS" <<'PY'
import json, statistics, sys, platform, datetime
rows = [l.split() for l in open(sys.argv[1])]
out, pairs, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rep = {"benchmark": "memif_xconnect", "date": datetime.datetime.utcnow().isoformat() + "Z",
       "kernel": platform.release(), "pairs": pairs, "seconds_per_window": secs, "sizes": {}}
for size in sorted({r[0] for r in rows}, key=int):
    v = [float(r[1]) for r in rows if r[0] == size]
    t = [float(r[2]) for r in rows if r[0] == size]
    rep["sizes"][size] = {"vwire_pps": v, "testpmd_pps": t,
        "vwire_median_pps": statistics.median(v), "testpmd_median_pps": statistics.median(t),
        "ratio_median": statistics.median([a / b for a, b in zip(v, t) if b > 0] or [0])}
json.dump(rep, open(f"{out}/memif_xconnect.json", "w"), indent=2)
rows_md = "\n".join(
    f"| {s} | {d['vwire_median_pps']/1e6:.2f} | {d['testpmd_median_pps']/1e6:.2f} | {d['ratio_median']:.2f} |"
    for s, d in rep["sizes"].items())
md = f"""# memif ↔ memif cross-connect: vwire vs testpmd as the device under test, same run

{rep['date']}, kernel {rep['kernel']}, {pairs} alternating pairs of {secs} s windows per size; medians.
Source/sink: testpmd io loop on core 0 (two memif clients, --tx-first); DUT on core 1.

| frame bytes | vwire Mpps | testpmd Mpps | vwire / testpmd (median of pair ratios) |
|---|---|---|---|
{rows_md}
"""
open(f"{out}/memif_xconnect.md", "w").write(md)
print(md)
PY
