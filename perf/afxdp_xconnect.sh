#!/usr/bin/env bash
# Throughput of an AF_XDP cross-connect: vwire against the Linux kernel doing the same job (a
# bridge between the same two veths), side by side in one run.
#
# Two kernel references: the bridge as configured by default, where TCP crosses as 64 KB TSO
# super-packets that are never segmented, and the bridge with TSO off on the senders, so that
# the kernel, like vwire, handles every MTU-sized frame (attaching XDP to a veth removes TSO
# from its peer, so behind vwire the sender segments in software).
#
# Topology: netns A -- vethA | vwire or bridge | vethB -- netns B. Both cases are measured in
# alternating short windows (PAIRS pairs), and the report gives each case's median and the
# median of the per-pair ratios vwire/kernel, because this 2-vCPU VM is noisy (testbed.md).
#
# Measures: iperf3 TCP Gbit/s (one stream), iperf3 UDP with 18-byte payloads (64-byte
# frames) received packets/s, and vwire-pktgen's 64-byte UDP frames at line rate, sent by an
# AF_XDP port on A's eth0 and received on B's (one process on the iperf3 CPUs, opening each port
# inside its namespace): the received packets/s, with pktgen's loss accounting. iperf3's UDP
# figure is limited by its sender's kernel path; pktgen's is not. As in a deployment, the forwarder's core is its own: vwire's
# worker is pinned to the last CPU, and the iperf3 client and server to the others (the kernel's
# forwarding work runs in softirq on whichever CPU sends, so the bridge uses those CPUs).
#
# Usage (root): bash perf/afxdp_xconnect.sh [PAIRS] [SECONDS]   → perf/reports/afxdp_xconnect.{json,md}
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 iperf3 python3 curl ethtool
need_rust

PAIRS=${1:-8}
SECS=${2:-3}
NS_A=vwperf-a NS_B=vwperf-b IF_A=vwperf-a0 IF_B=vwperf-b0 BR=vwperf-br
OUT=perf/reports
WORK=$(mktemp -d)
VWIRE_PID=
cleanup() {
  [ -n "$VWIRE_PID" ] && kill "$VWIRE_PID" 2>/dev/null && wait "$VWIRE_PID" 2>/dev/null || true
  ip link del "$BR" 2>/dev/null || true
  netns_down "$NS_A" "$NS_B"
  rm -rf "$WORK"
}
trap cleanup EXIT
ip link del "$BR" 2>/dev/null || true; netns_down "$NS_A" "$NS_B"   # leftovers of an earlier run

cargo build --release --quiet -p vwire -p vwire-pktgen
pair_up "$NS_A" "$IF_A" "$NS_B" "$IF_B" 10.251.0.1 10.251.0.2
CPU=$(( $(nproc) - 1 ))
APP_CPUS=0-$(( CPU > 0 ? CPU - 1 : 0 ))
ip netns exec "$NS_B" taskset -c "$APP_CPUS" iperf3 -s -D --logfile /dev/null

xconnect_config "$WORK/vwire.toml" "$IF_A" "$IF_B" 127.0.0.1:9198

stop_vwire() { kill -TERM "$VWIRE_PID"; wait "$VWIRE_PID"; VWIRE_PID=; }
start_bridge() {
  ip link add "$BR" type bridge; ip link set "$BR" up
  ip link set "$IF_A" master "$BR"; ip link set "$IF_B" master "$BR"
}
stop_bridge() { ip link del "$BR"; }
set_tso() { for ns in "$NS_A" "$NS_B"; do ip netns exec "$ns" ethtool -K eth0 tso "$1" >/dev/null; done; }

# One measurement: prints "tcp_gbps udp_pps pktgen_rx_pps".
measure() {
  ip netns exec "$NS_A" ping -c 1 -W 2 10.251.0.2 >/dev/null   # ARP, and a path check
  local tcp udp
  tcp=$(ip netns exec "$NS_A" taskset -c "$APP_CPUS" iperf3 -c 10.251.0.2 -t "$SECS" -J | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
  udp=$(ip netns exec "$NS_A" taskset -c "$APP_CPUS" iperf3 -c 10.251.0.2 -u -b 0 -l 18 -t "$SECS" -J | python3 -c \
    'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print((e["packets"]-e["lost_packets"])/e["seconds"])')
  local pg
  pg=$(taskset -c "$APP_CPUS" ./target/release/vwire-pktgen run --port "a=afxdp:eth0@$NS_A" \
    --port "b=afxdp:eth0@$NS_B" --tx a --rx b --size 64 --rate line --duration "$SECS" \
    --cores "${APP_CPUS%%-*}" --quiet | python3 -c \
    'import json,sys; t=json.load(sys.stdin)["trials"][0]; print(t["rx_pps"])')
  echo "$tcp $udp $pg"
}

: > "$WORK/samples"
for i in $(seq "$PAIRS"); do
  start_vwire "$WORK/vwire.toml" "$WORK/vwire.log" 127.0.0.1:9198; v=$(measure); stop_vwire
  start_bridge; k=$(measure); set_tso off; p=$(measure); set_tso on; stop_bridge
  echo "$i $v $k $p" | tee -a "$WORK/samples"
done

python3 - "$WORK/samples" "$OUT" "$PAIRS" "$SECS" <<'PY'
import json, statistics, sys, platform, datetime
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1])]
out, pairs, secs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def summary(vi, ki, pi):
    v = [r[vi] for r in rows]; k = [r[ki] for r in rows]; p = [r[pi] for r in rows]
    ratio = lambda ref: statistics.median([a / b for a, b in zip(v, ref)])
    return {"vwire_median": statistics.median(v), "kernel_bridge_median": statistics.median(k),
            "kernel_bridge_tso_off_median": statistics.median(p),
            "ratio_median": ratio(k), "ratio_tso_off_median": ratio(p),
            "vwire": v, "kernel_bridge": k, "kernel_bridge_tso_off": p}
rep = {"benchmark": "afxdp_xconnect", "date": datetime.datetime.utcnow().isoformat() + "Z",
       "kernel": platform.release(), "pairs": pairs, "seconds_per_window": secs,
       "tcp_gbit_per_s": summary(0, 3, 6), "udp64_rx_packets_per_s": summary(1, 4, 7),
       "pktgen64_rx_packets_per_s": summary(2, 5, 8)}
json.dump(rep, open(f"{out}/afxdp_xconnect.json", "w"), indent=2)
t, u, g = rep["tcp_gbit_per_s"], rep["udp64_rx_packets_per_s"], rep["pktgen64_rx_packets_per_s"]
md = f"""# AF_XDP cross-connect: vwire vs the kernel (bridge), same run

{rep['date']}, kernel {rep['kernel']}, {pairs} alternating pairs of {secs} s windows; medians.

| metric | vwire | bridge | bridge, TSO off | vwire / bridge | vwire / bridge, TSO off |
|---|---|---|---|---|---|
| iperf3 TCP, 1 stream, Gbit/s | {t['vwire_median']:.2f} | {t['kernel_bridge_median']:.2f} | {t['kernel_bridge_tso_off_median']:.2f} | {t['ratio_median']:.2f} | {t['ratio_tso_off_median']:.2f} |
| iperf3 UDP, 64-byte frames, received kpps | {u['vwire_median']/1e3:.0f} | {u['kernel_bridge_median']/1e3:.0f} | {u['kernel_bridge_tso_off_median']/1e3:.0f} | {u['ratio_median']:.2f} | {u['ratio_tso_off_median']:.2f} |
| vwire-pktgen UDP, 64-byte frames at line rate, received kpps | {g['vwire_median']/1e3:.0f} | {g['kernel_bridge_median']/1e3:.0f} | {g['kernel_bridge_tso_off_median']/1e3:.0f} | {g['ratio_median']:.2f} | {g['ratio_tso_off_median']:.2f} |

Ratios are medians of per-window ratios. The plain bridge passes TCP as 64 KB TSO super-packets; behind
vwire (any XDP on a veth) the sender must segment into MTU-sized frames, so "TSO off" is the like-for-like
per-packet reference. iperf3 UDP is limited by the iperf3 sender in every case; vwire-pktgen sends from an
AF_XDP socket (copy mode on veth, so the sender's kernel path still bounds it, and on veth the receive work of
every frame, the DUT's included, runs on the sending CPU: testbed.md).
"""
open(f"{out}/afxdp_xconnect.md", "w").write(md)
print(md)
PY
