#!/usr/bin/env bash
# End-to-end throughput across nodes: Kernel2Vxlan2Kernel through two vwires, against the same
# topology with Linux vxlan devices instead of vwire, side by side in one run.
#
# Topology (network namespaces): NSC -- node A ==(veth wire, 1500 MTU)== node B -- NSE.
# - vwire: a vwire in each node; vwire-nsc in NSC requests a KERNEL connection to vwire-nse in
#   NSE through vwire A (unix socket) and vwire B (tcp://, VXLAN over the wire). The connection
#   MTU is 1446 (1500 − 54).
# - Linux: in each node a bridge joins the pod's veth to a vxlan device (VNI 100, port 4789,
#   nolearning, static FDB), the same addresses, the same 1446 MTU on the pod interfaces.
#
# Each case is measured in alternating windows (PAIRS pairs of SECS-second iperf3 TCP runs,
# NSC → NSE, one stream); the report gives each case's median and the median of the per-pair
# ratios vwire/Linux, because this 2-vCPU VM is noisy (testbed.md). vwire's two workers share
# the last CPU (one per node); the kernel's work runs in softirq on whichever CPU sends.
#
# Usage (root): bash perf/tunnel_iperf.sh [PAIRS] [SECS]   → perf/reports/tunnel_iperf.{json,md}
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 iperf3 python3 procps ethtool
need_rust

PAIRS=${1:-5}
SECS=${2:-3}
A=vwti-a B=vwti-b C=vwti-c E=vwti-e
OUT=perf/reports
WORK=$(mktemp -d)
PIDS=()
stop_procs() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_procs
  netns_down "$A" "$B" "$C" "$E"
  rm -rf "$WORK"
}
trap cleanup EXIT
netns_down "$A" "$B" "$C" "$E"
cargo build --release --quiet -p vwire -p vwire-examples
BIN=target/release
CPU=$(( $(nproc) - 1 ))

for n in "$A" "$B" "$C" "$E"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$A" link add upa type veth peer name upb netns "$B"
ip -n "$A" addr add 10.97.0.1/24 dev upa; ip -n "$B" addr add 10.97.0.2/24 dev upb
ip -n "$A" link set upa up; ip -n "$B" link set upb up
ip -n "$A" route add default via 10.97.0.2; ip -n "$B" route add default via 10.97.0.1

node_config() {   # NAME LISTEN TUNNEL_IP ENDPOINT_URL
  cat <<CONF
[dataplane]
workers = [$CPU]
[metrics]
listen = "127.0.0.1:$([ "$1" = a ] && echo 9311 || echo 9312)"
[nsm]
name = "fwd-$1"
listen_on = "$2"
insecure = true
tunnel_ip = "$3"
[[endpoint]]
name = "nse-1"
url = "$4"
service = "icmp-responder"
CONF
}

vwire_window() {   # one connection through two vwires; prints Gbit/s of a SECS-second run
  node_config a "unix://$WORK/a.sock" 10.97.0.1 "tcp://10.97.0.2:5002" > "$WORK/a.toml"
  node_config b "tcp://10.97.0.2:5002" 10.97.0.2 "unix://$WORK/nse.sock" > "$WORK/b.toml"
  ip netns exec "$A" "$BIN/vwire" run --config "$WORK/a.toml" >"$WORK/a.log" 2>&1 & PIDS+=($!)
  ip netns exec "$B" "$BIN/vwire" run --config "$WORK/b.toml" >"$WORK/b.log" 2>&1 & PIDS+=($!)
  ip netns exec "$E" "$BIN/vwire-nse" --listen "unix://$WORK/nse.sock" --cidr 172.16.1.100/31 >/dev/null 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do
    [ -S "$WORK/a.sock" ] && [ -S "$WORK/nse.sock" ] && ip netns exec "$B" ss -ltn | grep -q ':5002 ' && break
    sleep 0.05
  done
  ip netns exec "$C" "$BIN/vwire-nsc" --connect "unix://$WORK/a.sock" > "$WORK/nsc.out" 2>"$WORK/nsc.err" & PIDS+=($!)
  for _ in $(seq 100); do grep -q '^connected' "$WORK/nsc.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^connected' "$WORK/nsc.out" || { cat "$WORK/a.log" "$WORK/b.log" "$WORK/nsc.err" >&2; echo "vwire: no connection" >&2; exit 1; }
  measure > "$WORK/vwire.gbps"
  stop_procs
  rm -f "$WORK"/*.sock
}

linux_window() {   # the same path through Linux vxlan devices and bridges
  for side in a b; do
    local node pod ifn local remote
    if [ $side = a ]; then node=$A pod=$C ifn=nsm-1 local=10.97.0.1 remote=10.97.0.2 addr=172.16.1.101
    else node=$B pod=$E ifn=nse-1 local=10.97.0.2 remote=10.97.0.1 addr=172.16.1.100; fi
    ip -n "$node" link add kvx type vxlan id 100 local $local remote $remote dstport 4789 dev up$side nolearning
    ip -n "$node" link add kbr type bridge
    ip -n "$node" link add kh type veth peer name $ifn netns "$pod"
    ip -n "$node" link set kvx master kbr; ip -n "$node" link set kh master kbr
    ip -n "$node" link set kvx mtu 1450; ip -n "$node" link set kh mtu 1446
    ip -n "$pod" link set $ifn mtu 1446
    ip -n "$pod" addr add $addr/31 dev $ifn
    for l in kvx kbr kh; do ip -n "$node" link set $l up; done
    ip -n "$pod" link set $ifn up
  done
  # Static FDB: every unknown MAC goes to the peer (nolearning).
  ip -n "$A" link show kvx >/dev/null
  bridge -n "$A" fdb append 00:00:00:00:00:00 dev kvx dst 10.97.0.2
  bridge -n "$B" fdb append 00:00:00:00:00:00 dev kvx dst 10.97.0.1
  ip netns exec "$C" ping -c 2 -W 2 172.16.1.100 >/dev/null || { echo "linux path: no ping" >&2; exit 1; }
  measure > "$WORK/linux.gbps"
  # Like for like: behind vwire (XDP on a veth) the sender segments to MTU-sized frames.
  ip netns exec "$C" ethtool -K nsm-1 tso off gso off >/dev/null
  ip netns exec "$E" ethtool -K nse-1 tso off gso off >/dev/null
  measure > "$WORK/linux_notso.gbps"
  for n in "$A" "$B"; do ip -n "$n" link del kvx; ip -n "$n" link del kbr; ip -n "$n" link del kh; done
}

measure() {
  ip netns exec "$E" iperf3 -s -1 -D -p 5201 >/dev/null 2>&1
  sleep 0.3
  ip netns exec "$C" iperf3 -c 172.16.1.100 -p 5201 -t "$SECS" -J > "$WORK/iperf.json"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$WORK/iperf.json"
}

: > "$WORK/rows"
for i in $(seq "$PAIRS"); do
  vwire_window; linux_window
  v=$(cat "$WORK/vwire.gbps"); l=$(cat "$WORK/linux.gbps"); n=$(cat "$WORK/linux_notso.gbps")
  echo "pair $i: vwire $v Gbit/s, linux $l Gbit/s, linux without TSO $n Gbit/s" >&2
  echo "$v $l $n" >> "$WORK/rows"
done

python3 - "$WORK/rows" "$OUT" "$PAIRS" "$SECS" <<'PY'
import json, sys, statistics, datetime, platform
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
out, pairs, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
v = [r[0] for r in rows]; k = [r[1] for r in rows]; n = [r[2] for r in rows]
ratio = statistics.median([r[0] / r[1] for r in rows if r[1] > 0])
ratio_notso = statistics.median([r[0] / r[2] for r in rows if r[2] > 0])
rep = {"benchmark": "tunnel_iperf", "date": datetime.datetime.utcnow().isoformat() + "Z",
       "kernel": platform.release(), "pairs": pairs, "seconds": secs,
       "vwire_gbps": v, "linux_gbps": k, "linux_no_tso_gbps": n,
       "vwire_median": statistics.median(v), "linux_median": statistics.median(k),
       "linux_no_tso_median": statistics.median(n),
       "ratio_median": ratio, "ratio_no_tso_median": ratio_notso}
json.dump(rep, open(f"{out}/tunnel_iperf.json", "w"), indent=2)
runs = lambda xs: ', '.join(f'{x:.2f}' for x in xs)
md = f"""# Kernel2Vxlan2Kernel: iperf3 TCP through two vwires vs Linux vxlan devices

{rep['date']}, kernel {rep['kernel']}, release build, {pairs} alternating windows of {secs} s per case
(`bash perf/tunnel_iperf.sh {pairs} {secs}`). Connection MTU 1446 in every case; one TCP stream NSC → NSE.

| path | median Gbit/s | runs |
|---|---|---|
| vwire (VXLAN over AF_XDP, two vwires) | {rep['vwire_median']:.2f} | {runs(v)} |
| Linux (vxlan + bridge in each node) | {rep['linux_median']:.2f} | {runs(k)} |
| Linux, TSO/GSO off on the pods' interfaces | {rep['linux_no_tso_median']:.2f} | {runs(n)} |

Median per-window ratio vwire / Linux: **{ratio:.2f}**; vwire / Linux without TSO: **{ratio_notso:.2f}**.

Linux carries TCP as 64 KB GSO super-packets through the bridge and the vxlan device, segmenting only at
the end; behind vwire (XDP on a veth) the sender segments into MTU-sized frames, and each frame crosses four
AF_XDP copy-mode hops (NSC veth → vwire A → uplink → vwire B → NSE veth) on one shared worker CPU (both
nodes' workers are pinned to the last of this VM's 2 vCPUs). "TSO off" is the per-packet, like-for-like
reference.
"""
open(f"{out}/tunnel_iperf.md", "w").write(md)
print(md)
PY
