#!/usr/bin/env bash
# RFC 2544 throughput and latency of vwire with vwire-pktgen as the tester, against a reference
# device under test (DUT) in the same run, and vwire-pktgen against DPDK testpmd's txonly as a
# traffic generator.
#
# 1. AF_XDP: netns G holds pktgen's two veths (pg0, pg1); their peers (vw0, vw1) are in the root
#    namespace, cross-connected by vwire (AF_XDP, one busy worker on the last CPU) or by the
#    reference, a Linux bridge. pktgen runs on CPU 0, sends on pg0 and receives on pg1. On veth
#    the receive work of a frame runs on the sending CPU (testbed.md), so the kernel's share of
#    either DUT runs on pktgen's CPU as well.
# 2. memif: vwire (two memif servers cross-connected, busy worker on the last CPU) or, as the
#    reference, DPDK testpmd io-forwarding between two memif servers on the same CPU; pktgen's
#    two memif clients on CPU 0.
#    For each frame size the two DUTs alternate (vwire, reference, next size), each a complete
#    `vwire-pktgen rfc2544` search for that size, so both see the same machine weather.
# 3. Generator: the rate a sink (testpmd rxonly on the last CPU) receives from pktgen and from
#    testpmd txonly (CPU 0), over memif and over an AF_XDP veth pair, in alternating windows;
#    the median of the per-pair ratios pktgen / testpmd.
#
# Sizes are Ethernet frame sizes with the FCS (a 64-byte frame is 60 bytes in a buffer); testpmd
# txonly sends the same buffer length (--txpkts=60 for 64). 9000 runs on memif only (AF_XDP
# frames are 4 KiB, veth MTU 1500).
#
# Usage (root): bash perf/rfc2544.sh [TRIAL_SECONDS] [GEN_PAIRS]
#   → perf/reports/rfc2544.{json,md} and perf/reports/rfc2544/*.svg
# Environment: LOSS (allowed loss ratio; default 0.001, because on a shared 2-vCPU VM a
# forwarder preempted for milliseconds overflows its rings at any rate worth measuring), SIZES_AFXDP, SIZES_MEMIF; PARTS (default
# "afxdp memif gen") runs a subset, for debugging; the report needs all three.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 python3 ethtool dpdk-dev librte-net-memif23 librte-net-af-xdp23
need_rust

TRIAL=${1:-1}
GEN_PAIRS=${2:-5}
GEN_SECS=${GEN_SECS:-3}
LOSS=${LOSS:-0.001}
SIZES_AFXDP=${SIZES_AFXDP:-64 128 256 512 1024 1280 1518}
SIZES_MEMIF=${SIZES_MEMIF:-64 128 256 512 1024 1280 1518 9000}
PARTS=${PARTS:-afxdp memif gen}
part() { [[ " $PARTS " == *" $1 "* ]]; }
NS=vwrfc-g BR=vwrfc-br DIR=/run/vwrfc
LAST=$(( $(nproc) - 1 ))
OUT=perf/reports
WORK=$(mktemp -d)
PIDS=()
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$CARGO_TARGET_DIR/release

stop_all() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_all
  ip link del "$BR" 2>/dev/null || true
  ip link del vw0 2>/dev/null || true; ip link del vw1 2>/dev/null || true
  netns_down "$NS"
  rm -rf "$DIR" "$WORK"
}
trap cleanup EXIT
cleanup; mkdir -p "$DIR" "$WORK" "$OUT/rfc2544"; trap cleanup EXIT

cargo build --release --quiet -p vwire -p vwire-pktgen
PKTGEN=$BIN/vwire-pktgen
RFC="--trial $TRIAL --loss $LOSS --resolution 0.02 --max-iterations 8 --retries 1 --latency-trial 2 --cores 0 --quiet"

# ---------------------------------------------------------------- AF_XDP
ip netns add "$NS"; ip -n "$NS" link set lo up
# The generator comparison's own pair, inside G: gen0 (generator) -- gen1 (sink).
ip -n "$NS" link add gen0 type veth peer name gen1
for i in 0 1; do
  ip netns exec "$NS" sysctl -qw "net.ipv6.conf.gen$i.disable_ipv6=1"; ip -n "$NS" link set "gen$i" up
  ip link add "vw$i" type veth peer name "pg$i" netns "$NS"
  sysctl -qw "net.ipv6.conf.vw$i.disable_ipv6=1"
  ip netns exec "$NS" sysctl -qw "net.ipv6.conf.pg$i.disable_ipv6=1"
  ip link set "vw$i" up; ip -n "$NS" link set "pg$i" up
done
xconnect_config "$WORK/afxdp.toml" vw0 vw1 127.0.0.1:9199 busy "$LAST"
afxdp_dut_up() { # vwire|bridge
  if [ "$1" = vwire ]; then
    "$BIN/vwire" run --config "$WORK/afxdp.toml" 2>>"$WORK/vwire.log" &
    PIDS+=($!)
    for _ in $(seq 200); do ip link show vw1 | grep -q xdp && return; sleep 0.05; done
    cat "$WORK/vwire.log"; die "vwire did not attach to vw0/vw1"
  else
    ip link add "$BR" type bridge; ip link set "$BR" up
    ip link set vw0 master "$BR"; ip link set vw1 master "$BR"
  fi
}
afxdp_dut_down() {
  if [ "$1" = vwire ]; then stop_all; else ip link del "$BR"; fi
}
part afxdp && for size in $SIZES_AFXDP; do
  for dut in vwire bridge; do
    afxdp_dut_up "$dut"
    ip netns exec "$NS" "$PKTGEN" rfc2544 --port a=afxdp:pg0 --port b=afxdp:pg1 --tx a --rx b \
      --sizes "$size" $RFC --label "$dut" --json "$WORK/afxdp_${dut}_$size.json" 2>>"$WORK/pktgen.log" \
      || { tail -20 "$WORK/pktgen.log"; die "vwire-pktgen failed"; }
    afxdp_dut_down "$dut"
    echo "afxdp $dut $size: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f\"{r['throughput_pps']/1e6:.3f} Mpps\")" "$WORK/afxdp_${dut}_$size.json")"
  done
done

# ---------------------------------------------------------------- memif
EAL="--no-huge --no-pci -m 512"
APP="--stats-period=1 --nb-cores=1 --total-num-mbufs=16384 --burst=32 --no-mlockall"
memif_dut_up() { # vwire|testpmd
  rm -f "$DIR"/a.sock "$DIR"/b.sock
  if [ "$1" = vwire ]; then
    memif_xconnect_config "$WORK/memif.toml" "$LAST" 127.0.0.1:9199 "$DIR"
    "$BIN/vwire" run --config "$WORK/memif.toml" 2>>"$WORK/vwire.log" &
  else
    stdbuf -o0 dpdk-testpmd -l 0,"$LAST" --main-lcore 0 $EAL --file-prefix vwrfc-dut \
      --vdev=net_memif0,role=server,id=0,socket=$DIR/a.sock,socket-abstract=no \
      --vdev=net_memif1,role=server,id=0,socket=$DIR/b.sock,socket-abstract=no \
      -- --forward-mode=io $APP >"$WORK/dut.log" 2>&1 &
  fi
  PIDS+=($!)
  for _ in $(seq 200); do [ -S "$DIR/b.sock" ] && return; sleep 0.05; done
  cat "$WORK/dut.log" "$WORK/vwire.log" 2>/dev/null; die "$1 did not listen on the memif sockets"
}
part memif && for size in $SIZES_MEMIF; do
  for dut in vwire testpmd; do
    if [ "$dut" = testpmd ] && [ "$size" -gt 1518 ]; then
      # DPDK 22.11's memif driver refuses frames above 1518 bytes ("device max frame size").
      echo "{\"command\": \"rfc2544\", \"label\": \"testpmd\", \"results\": [{\"size\": $size, \"skipped\": \"DPDK 22.11 memif: max frame 1518\", \"throughput_pps\": 0, \"throughput_bps\": 0, \"generator_limited\": false, \"steps\": []}]}" > "$WORK/memif_${dut}_$size.json"
      continue
    fi
    memif_dut_up "$dut"
    "$PKTGEN" rfc2544 --port "a=memif:client:$DIR/a.sock,ring=8192" --port "b=memif:client:$DIR/b.sock,ring=8192" \
      --tx a --rx b --sizes "$size" $RFC --label "$dut" --json "$WORK/memif_${dut}_$size.json" 2>>"$WORK/pktgen.log" \
      || { tail -20 "$WORK/pktgen.log"; cat "$WORK/dut.log" 2>/dev/null | tail; die "vwire-pktgen failed"; }
    stop_all
    echo "memif $dut $size: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(f\"{r['throughput_pps']/1e6:.3f} Mpps\")" "$WORK/memif_${dut}_$size.json")"
  done
done

# ---------------------------------------------------------------- generator
# The sink: testpmd rxonly on the last CPU; prints the median Rx-pps of a window (first 2 s
# skipped) once the generator ($@, started on CPU 0) has run GEN_SECS + 2 s.
gen_window() { # kind(memif|afxdp) gen(pktgen|testpmd) size
  local kind=$1 gen=$2 size=$3 len=$(( $3 - 4 )) sink gpid
  rm -f "$DIR/g.sock"
  if [ "$kind" = memif ]; then
    stdbuf -o0 dpdk-testpmd -l 0,"$LAST" --main-lcore 0 $EAL --file-prefix vwrfc-sink \
      --vdev=net_memif0,role=server,id=0,socket=$DIR/g.sock,socket-abstract=no \
      -- --forward-mode=rxonly $APP >"$WORK/sink.log" 2>&1 &
    sink=$!
    for _ in $(seq 200); do [ -S "$DIR/g.sock" ] && break; sleep 0.05; done
    if [ "$gen" = pktgen ]; then
      "$PKTGEN" run --port "g=memif:client:$DIR/g.sock" --tx g --cores 0 --size "$size" \
        --duration $(( GEN_SECS + 2 )) --quiet --json "$WORK/gen.json" 2>>"$WORK/pktgen.log" &
    else
      stdbuf -o0 dpdk-testpmd -l 0,"$LAST" --main-lcore "$LAST" $EAL --file-prefix vwrfc-gen \
        --vdev=net_memif0,role=client,id=0,socket=$DIR/g.sock,socket-abstract=no \
        -- --forward-mode=txonly --txpkts="$len" $APP >"$WORK/gen.log" 2>&1 &
    fi
  else
    ip netns exec "$NS" stdbuf -o0 dpdk-testpmd -l 0,"$LAST" --main-lcore 0 $EAL --file-prefix vwrfc-sink \
      --vdev=net_af_xdp0,iface=gen1 -- --forward-mode=rxonly $APP >"$WORK/sink.log" 2>&1 &
    sink=$!
    sleep 1
    if [ "$gen" = pktgen ]; then
      ip netns exec "$NS" "$PKTGEN" run --port g=afxdp:gen0 --tx g --cores 0 --size "$size" \
        --duration $(( GEN_SECS + 2 )) --quiet --json "$WORK/gen.json" 2>>"$WORK/pktgen.log" &
    else
      ip netns exec "$NS" stdbuf -o0 dpdk-testpmd -l 0,"$LAST" --main-lcore "$LAST" $EAL --file-prefix vwrfc-gen \
        --vdev=net_af_xdp0,iface=gen0 -- --forward-mode=txonly --txpkts="$len" $APP >"$WORK/gen.log" 2>&1 &
    fi
  fi
  gpid=$!
  sleep $(( GEN_SECS + 2 ))
  kill -INT "$gpid" 2>/dev/null || true; wait "$gpid" 2>/dev/null || true
  kill -INT "$sink" 2>/dev/null || true; wait "$sink" 2>/dev/null || true
  grep -o 'Rx-pps: *[0-9]*' "$WORK/sink.log" | awk '{print $2}' | python3 -c '
import sys, statistics
v = [int(x) for x in sys.stdin.read().split()][2:]
v = [x for x in v if x > 0] or [0]
print(statistics.median(v))'
}
: > "$WORK/gen_samples"
part gen && for kind in memif afxdp; do
  for size in 64 1518; do
    for i in $(seq "$GEN_PAIRS"); do
      p=$(gen_window "$kind" pktgen "$size"); t=$(gen_window "$kind" testpmd "$size")
      echo "$kind $size $p $t" | tee -a "$WORK/gen_samples"
    done
  done
done

# ---------------------------------------------------------------- report
part afxdp && part memif && part gen || { echo "PARTS=$PARTS: no report"; exit 0; }
python3 - "$WORK" "$OUT" "$TRIAL" "$LOSS" "$GEN_PAIRS" "$GEN_SECS" <<'PY'
import json, statistics, sys, glob, os, platform, datetime
work, out, trial, loss, pairs, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def merged(kind, dut):
    files = sorted(glob.glob(f"{work}/{kind}_{dut}_*.json"), key=lambda f: int(f.rsplit("_", 1)[1][:-5]))
    docs = [json.load(open(f)) for f in files]
    m = dict(docs[0]); m["results"] = [r for d in docs for r in d["results"]]
    path = f"{out}/rfc2544/{kind}_{dut}.json"
    json.dump(m, open(path, "w"), indent=1)
    return m
rep = {"benchmark": "rfc2544", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "kernel": platform.release(), "cpus": os.cpu_count(), "trial_s": trial, "loss_ratio_allowed": loss,
       "afxdp": {d: merged("afxdp", d)["results"] for d in ("vwire", "bridge")},
       "memif": {d: merged("memif", d)["results"] for d in ("vwire", "testpmd")}}
rows = [l.split() for l in open(f"{work}/gen_samples")]
gen = {}
for kind in ("memif", "afxdp"):
    for size in ("64", "1518"):
        p = [float(r[2]) for r in rows if r[0] == kind and r[1] == size]
        t = [float(r[3]) for r in rows if r[0] == kind and r[1] == size]
        if not p: continue
        gen[f"{kind}_{size}"] = {"pktgen_pps": p, "testpmd_pps": t,
            "pktgen_median_pps": statistics.median(p), "testpmd_median_pps": statistics.median(t),
            "ratio_median": statistics.median([a / b for a, b in zip(p, t) if b > 0] or [0])}
rep["generator"] = gen
json.dump(rep, open(f"{out}/rfc2544.json", "w"), indent=1)

def table(kind, a, b):
    lines = [f"| frame bytes | {a} Mpps | {b} Mpps | {a} / {b} | {a} Gbit/s | {b} Gbit/s | {a} p50 / p99 / p99.9 µs | {b} p50 / p99 / p99.9 µs |",
             "|---|---|---|---|---|---|---|---|"]
    for ra, rb in zip(rep[kind][a], rep[kind][b]):
        def lat(r):
            l = r.get("latency")
            return f"{l['p50']/1e3:.1f} / {l['p99']/1e3:.1f} / {l['p999']/1e3:.1f}" if l else "–"
        def mpps(r):
            if r.get("skipped"): return "skipped"
            return f"{r['throughput_pps']/1e6:.3f}" + (" (gen.)" if r["generator_limited"] else "")
        ratio = f"{ra['throughput_pps']/rb['throughput_pps']:.2f}" if rb["throughput_pps"] > 0 else "–"
        lines.append(f"| {ra['size']} | {mpps(ra)} | {mpps(rb)} | {ratio} | {ra['throughput_bps']/1e9:.2f} | {rb['throughput_bps']/1e9:.2f} | {lat(ra)} | {lat(rb)} |")
    return "\n".join(lines)
g = lambda k: gen.get(k, {})
gen_rows = "\n".join(
    f"| {k.split('_')[0]} | {k.split('_')[1]} | {v['pktgen_median_pps']/1e6:.3f} | {v['testpmd_median_pps']/1e6:.3f} | {v['ratio_median']:.2f} |"
    for k, v in gen.items())
md = f"""# RFC 2544 with vwire-pktgen: vwire against a reference DUT, same run

{rep['date']}, kernel {rep['kernel']}, {rep['cpus']} vCPUs (noisy, shared). Command: `bash perf/rfc2544.sh {int(trial) if trial.is_integer() else trial} {pairs}`.
Throughput = the highest rate with loss ≤ {loss} (binary search, {trial} s trials, a failing step retried once, 2 % resolution), then a 2 s
latency trial at that rate. For each frame size the two DUTs ran one after the other, alternating. pktgen on CPU 0,
the DUT's worker on CPU {rep['cpus'] - 1}. "(gen.)": the DUT stayed within the loss ratio at the most pktgen
could send, so the figure is pktgen's limit, not the DUT's. Frame sizes include the FCS; Gbit/s counts frame bytes.

On this class of machine a forwarder that loses its CPU for milliseconds overflows its rings whatever the rate:
p99 latencies in milliseconds are those preemptions, and the throughputs below are the rates a DUT sustained
within the loss ratio through them, not its per-packet capacity (`memif_xconnect.md` and `afxdp_xconnect.md`
measure that). Compare vwire and the reference size by size; expect ±50 % between runs.
The Linux bridge does its work inside the sender's system call on pktgen's CPU (veth delivers in the sender's
context), so when that CPU is taken the sender stops too and nothing queues; vwire's worker runs on a CPU of its
own, and when that CPU is taken its AF_XDP rings fill and overflow. The AF_XDP comparison therefore measures, above
all, how often the DUT's CPU was taken for milliseconds.

## AF_XDP veths: vwire vs the Linux bridge

{table('afxdp', 'vwire', 'bridge')}

![throughput, AF_XDP](rfc2544/afxdp_throughput_mpps.svg)
![latency, AF_XDP](rfc2544/afxdp_latency.svg)
![latency histogram, AF_XDP, 64 bytes](rfc2544/afxdp_latency_hist_64.svg)

## memif: vwire vs DPDK testpmd (io forwarding)

{table('memif', 'vwire', 'testpmd')}

![throughput, memif](rfc2544/memif_throughput_mpps.svg)
![throughput, memif, Gbit/s](rfc2544/memif_throughput_gbps.svg)
![latency, memif](rfc2544/memif_latency.svg)
![latency histogram, memif, 64 bytes](rfc2544/memif_latency_hist_64.svg)

## vwire-pktgen vs testpmd txonly as the generator

Received by the same sink (testpmd rxonly, CPU {rep['cpus'] - 1}); generator on CPU 0; {pairs} alternating pairs of
{secs} s windows; medians, and the median of the per-pair ratios.

| port | frame bytes | pktgen Mpps | testpmd txonly Mpps | pktgen / testpmd |
|---|---|---|---|---|
{gen_rows}

Raw figures, every search step and the latency histograms: `rfc2544.json` and `rfc2544/*.json`.
"""
open(f"{out}/rfc2544.md", "w").write(md)
print(md)
PY
for kind in afxdp memif; do
  ref=bridge; [ "$kind" = memif ] && ref=testpmd
  "$PKTGEN" plot --out "$OUT/rfc2544" --prefix "${kind}_" --title "$kind" \
    "$OUT/rfc2544/${kind}_vwire.json" "$OUT/rfc2544/${kind}_$ref.json" >/dev/null
done
echo "report: $OUT/rfc2544.md"
