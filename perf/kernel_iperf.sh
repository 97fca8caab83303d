#!/usr/bin/env bash
# KERNEL connections at kernel speed: iperf3 TCP through vwire's Kernel2Kernel cross-connect on one
# node, against a Linux bridge joining the same two namespaces, side by side in one run.
#
# Topology (network namespaces): NSC and NSE, plus
# - vwire-<mode>: a vwire in a namespace of its own (FWD), started with
#   VWIRE_NSM_KERNEL_XCONNECT=<mode> (tcx, afxdp); vwire-nse in NSE; vwire-nsc in NSC requests a
#   KERNEL connection with an IP payload. vwire makes one veth pair per side (pod end in NSC or NSE,
#   host end in FWD) and cross-connects the host ends. The case `vwire` starts vwire without the
#   variable: its default datapath.
# - bridge: NSC and NSE each joined by a veth to a Linux bridge in a third namespace (BR), with the
#   same addresses (NSC 172.16.1.101 → NSE 172.16.1.100).
# Every pod interface gets the same MTU (MTU, default 1500): vwire's after vwire made them (the MTU
# vwire gave is recorded). Offloads are left as each case leaves them: whether TCP crosses as GSO
# super-packets is part of what is measured.
#
# Each round (PAIRS rounds) measures every case of CASES in turn, in a window of its own (vwire is
# started and stopped per window, the bridge made and removed): iperf3 TCP NSC → NSE for SECS
# seconds, once per entry of STREAMS (iperf3 -P). The report gives each case's median Gbit/s and the
# median of the per-round ratios case/bridge, because this 2-vCPU VM is noisy (testbed.md).
#
# Also per window:
# - CPU: busy time of the whole machine from /proc/stat (user+nice+system+irq+softirq over all
#   CPUs; idle, iowait and steal left out) between just before the iperf3 client starts and just
#   after it ends, divided by the Gbit iperf3 received (Gbit/s × s). CPU-seconds per Gbit, which is
#   also busy CPUs per Gbit/s. It counts everything running on the machine, vwire's polling worker
#   and anything else (another engineer's build) included.
# - the bytes per packet received on NSE's pod interface (ip -s -j link, rx bytes / rx packets,
#   before and after the run; Ethernet frames, so at most MTU+14 without super-packets): above
#   MTU+14, GSO super-packets crossed the path.
#
# CPUs: vwire's worker is pinned to the last CPU and, with PIN=1 (default), iperf3's client and
# server to the others, as in afxdp_xconnect.sh (the forwarder's core is its own; the kernel's
# forwarding runs in softirq on the CPU that sends, so the bridge uses the iperf3 CPUs). PIN=0
# leaves iperf3 to the scheduler.
#
# Usage (root): bash perf/kernel_iperf.sh [PAIRS] [SECS]   → perf/reports/kernel_iperf.{json,md}
#   (defaults 5 and 3: about 3 minutes). Environment: CASES (default "bridge vwire-tcx vwire-afxdp"),
#   STREAMS (default "1 4"), MTU (default 1500), PIN (default 1), OUT (report directory, default
#   perf/reports), REPORT (report file name, default kernel_iperf), BUILD=0 (use the binaries
#   already in target/release instead of building them).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 iperf3 python3 procps iputils-ping util-linux
need_rust

PAIRS=${1:-5}
SECS=${2:-3}
CASES=${CASES:-bridge vwire-tcx vwire-afxdp}
STREAMS=${STREAMS:-1 4}
MTU=${MTU:-1500}
PIN=${PIN:-1}
REPORT=${REPORT:-kernel_iperf}
C=vwki-c E=vwki-e F=vwki-f BR=vwki-b
NSC_IP=172.16.1.101 NSE_IP=172.16.1.100
OUT=${OUT:-perf/reports}
WORK=$(mktemp -d)
BIN=target/release
PIDS=()

for c in $CASES; do
  case $c in bridge | vwire | vwire-?*) ;; *) die "unknown case '$c' (bridge, vwire, vwire-<mode>)" ;; esac
done
for s in $STREAMS; do [[ $s =~ ^[1-9][0-9]*$ ]] || die "STREAMS: '$s' is not a stream count"; done
[[ $MTU =~ ^[0-9]+$ ]] || die "MTU: '$MTU' is not a number"

# Stops a process: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# Stops this window's processes, the last started first (vwire-nsc closes before vwire stops).
stop_procs() {
  local i
  for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do stop_pid "${PIDS[i]}"; done
  PIDS=()
}
cleanup() {
  stop_procs
  netns_down "$C" "$E" "$F" "$BR"
  rm -rf "$WORK"
}
trap cleanup EXIT
netns_down "$C" "$E" "$F" "$BR"   # leftovers of an earlier run

if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --quiet -p vwire -p vwire-examples
else
  for b in vwire vwire-nse vwire-nsc; do [ -x "$BIN/$b" ] || die "BUILD=0: no $BIN/$b"; done
fi
CPU=$(( $(nproc) - 1 ))
APP_CPUS=0; [ "$CPU" -gt 1 ] && APP_CPUS=0-$(( CPU - 1 ))
PINNED=()
[ "$PIN" = 1 ] && PINNED=(taskset -c "$APP_CPUS")

for n in "$C" "$E" "$F" "$BR"; do ip netns add "$n"; ip -n "$n" link set lo up; done

cat > "$WORK/vwire.toml" <<CONF
[dataplane]
workers = [$CPU]
[metrics]
listen = "127.0.0.1:9313"
[nsm]
name = "fwd"
listen_on = "unix://$WORK/fwd.sock"
insecure = true
tunnel_ip = "none"    # single node: no uplink
state_dir = "$WORK/state"
[[endpoint]]
name = "nse-1"
url = "unix://$WORK/nse.sock"
service = "icmp-responder"
CONF

# The interfaces of namespace $1 but lo.
pod_links() { ip -n "$1" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); if ($2 != "lo") print $2 }'; }
# Removes what a window left in the pods (a veth's peer goes with it).
flush_pods() {
  local ns l
  for ns in "$C" "$E"; do
    for l in $(pod_links "$ns"); do ip -n "$ns" link del "$l" 2>/dev/null || true; done
  done
}
# Waits until something accepts connections on unix socket $1, while process $2 lives.
wait_socket() {
  for _ in $(seq 200); do
    python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
fail_window() { cat "$WORK"/*.log >&2 2>/dev/null || true; die "$1"; }

# One window through vwire, mode $1 (empty: no VWIRE_NSM_KERNEL_XCONNECT). Sets IF_C, IF_E and
# VWIRE_MTU.
vwire_up() {
  local env=()
  [ -n "$1" ] && env=("VWIRE_NSM_KERNEL_XCONNECT=$1")
  rm -rf "$WORK"/*.sock "$WORK"/*.log "$WORK/nsc.out" "$WORK/state"
  ip netns exec "$F" env "${env[@]}" "$BIN/vwire" run --config "$WORK/vwire.toml" >"$WORK/vwire.log" 2>&1 & PIDS+=($!)
  wait_socket "$WORK/fwd.sock" "${PIDS[-1]}" || fail_window "vwire did not start (mode '${1:-default}')"
  ip netns exec "$E" "$BIN/vwire-nse" --listen "unix://$WORK/nse.sock" --cidr "$NSE_IP/31" >/dev/null 2>"$WORK/nse.log" & PIDS+=($!)
  wait_socket "$WORK/nse.sock" "${PIDS[-1]}" || fail_window "vwire-nse did not start"
  ip netns exec "$C" "$BIN/vwire-nsc" --connect "unix://$WORK/fwd.sock" --payload IP --iface nsm-1 \
    >"$WORK/nsc.out" 2>"$WORK/nsc.log" & PIDS+=($!)
  for _ in $(seq 200); do
    grep -q '^connected' "$WORK/nsc.out" 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^connected' "$WORK/nsc.out" || fail_window "vwire (mode '${1:-default}'): no connection"
  # With tcx the connection is wired through the workers first and moved into the kernel just after.
  if [ "${1:-tcx}" = tcx ]; then
    for _ in $(seq 100); do
      grep -q 'moved into the kernel' "$WORK/vwire.log" && break
      sleep 0.05
    done
    grep -q 'moved into the kernel' "$WORK/vwire.log" || fail_window "vwire: the connection did not move into the kernel"
  fi
  read -r _ _ src dst < "$WORK/nsc.out"
  [ "$src $dst" = "$NSC_IP $NSE_IP" ] || fail_window "vwire-nsc got $src → $dst, expected $NSC_IP → $NSE_IP"
  IF_C=nsm-1
  IF_E=$(pod_links "$E")
  [ "$(echo "$IF_E" | wc -w)" = 1 ] || fail_window "NSE namespace: expected one interface, found: $IF_E"
  VWIRE_MTU=$(ip -n "$C" -j link show dev "$IF_C" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mtu"])')
  ip -n "$C" link set dev "$IF_C" mtu "$MTU"
  ip -n "$E" link set dev "$IF_E" mtu "$MTU"
}
vwire_down() { stop_procs; flush_pods; }

# One window through a Linux bridge in BR. Sets IF_C, IF_E and VWIRE_MTU (-).
bridge_up() {
  ip -n "$BR" link add br0 type bridge
  ip -n "$BR" link set br0 up
  local side ns ifn host addr
  for side in "$C nsm-1 bc $NSC_IP" "$E nse-1 be $NSE_IP"; do
    read -r ns ifn host addr <<< "$side"
    ip -n "$BR" link add "$host" mtu "$MTU" type veth peer name "$ifn" netns "$ns" mtu "$MTU"
    ip -n "$BR" link set "$host" master br0
    ip -n "$BR" link set "$host" up
    ip -n "$ns" addr add "$addr/31" dev "$ifn"
    ip -n "$ns" link set "$ifn" up
  done
  IF_C=nsm-1 IF_E=nse-1 VWIRE_MTU=-
}
bridge_down() { ip -n "$BR" link del br0; ip -n "$BR" link del bc; ip -n "$BR" link del be; flush_pods; }

cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
# Busy CPUs of the machine over one second (what else runs on it while this benchmark is idle).
busy_now() {
  local c0 c1
  c0=$(cpu_busy); sleep 1; c1=$(cpu_busy)
  awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", (b - a) / hz }'
}
rx_counters() {   # NS IF → "bytes packets"
  ip -n "$1" -s -j link show dev "$2" |
    python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]["rx"]; print(s["bytes"], s["packets"])'
}

# One iperf3 run with $1 streams; prints "gbps gbit retransmits cpu_s wall_s rx_bytes rx_packets".
measure() {
  ip netns exec "$C" ping -c 1 -W 2 "$NSE_IP" >/dev/null || fail_window "no ping through the path"
  ip netns exec "$E" "${PINNED[@]}" iperf3 -s -1 -p 5201 >/dev/null 2>&1 & local srv=$!
  for _ in $(seq 100); do
    ip netns exec "$E" ss -ltnH 'sport = :5201' | grep -q . && break
    sleep 0.02
  done
  local rx0 rx1 c0 c1 t0 t1
  rx0=$(rx_counters "$E" "$IF_E")
  t0=$(date +%s.%N); c0=$(cpu_busy)
  ip netns exec "$C" "${PINNED[@]}" iperf3 -c "$NSE_IP" -p 5201 -t "$SECS" -P "$1" -J --connect-timeout 3000 \
    >"$WORK/iperf.json" || { stop_pid "$srv"; cat "$WORK/iperf.json" >&2; fail_window "iperf3 failed"; }
  c1=$(cpu_busy); t1=$(date +%s.%N)
  rx1=$(rx_counters "$E" "$IF_E")
  stop_pid "$srv"
  python3 - "$WORK/iperf.json" "$(getconf CLK_TCK)" "$c0" "$c1" "$t0" "$t1" "$rx0" "$rx1" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
hz, c0, c1, t0, t1 = int(sys.argv[2]), *map(float, sys.argv[3:7])
(b0, p0), (b1, p1) = (map(int, a.split()) for a in sys.argv[7:9])
r = e["sum_received"]
print(r["bits_per_second"] / 1e9, r["bytes"] * 8 / 1e9, e["sum_sent"].get("retransmits", 0),
      (c1 - c0) / hz, t1 - t0, b1 - b0, p1 - p0)
PY
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg); BUSY_START=$(busy_now)
: > "$WORK/rows"
for round in $(seq "$PAIRS"); do
  for c in $CASES; do
    mode=${c#vwire}; mode=${mode#-}   # vwire-tcx → tcx; vwire → (none)
    if [ "$c" = bridge ]; then bridge_up; else vwire_up "$mode"; fi
    xdp=$(ip -n "$F" -d -o link show | grep -c 'prog/xdp' || true)
    [ "$c" = bridge ] && xdp=-
    for s in $STREAMS; do
      m=$(measure "$s")
      echo "$round $c $s $m $VWIRE_MTU $xdp" >> "$WORK/rows"
      read -r gbps _ retr cpu _ rxb rxp <<< "$m"
      awk -v r="$round" -v c="$c" -v s="$s" -v g="$gbps" -v t="$retr" -v u="$cpu" -v b="$rxb" -v p="$rxp" 'BEGIN {
        printf "round %s %-12s %d stream(s): %6.2f Gbit/s, %5.2f CPU-s, %6.0f bytes/rx packet, %d retransmits\n",
          r, c, s, g, u, (p > 0 ? b / p : 0), t }' >&2
    done
    if [ "$c" = bridge ]; then bridge_down; else vwire_down; fi
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg); BUSY_END=$(busy_now)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ] && COMMIT="$COMMIT+ (uncommitted changes)"

python3 - "$WORK/rows" "$OUT" "$REPORT" "$PAIRS" "$SECS" "$MTU" "$PIN" "$APP_CPUS" "$CPU" "$(nproc)" \
  "$LOAD_START" "$LOAD_END" "$BUSY_START" "$BUSY_END" "$COMMIT" "$CASES" "$STREAMS" <<'PY'
import json, sys, statistics, datetime, platform
(rows_f, out, report, pairs, secs, mtu, pin, app_cpus, worker_cpu, nproc,
 load_start, load_end, busy_start, busy_end, commit, cases, streams) = sys.argv[1:18]
pairs, secs, mtu = int(pairs), int(secs), int(mtu)
cases, streams = cases.split(), [int(s) for s in streams.split()]
keys = ["round", "case", "streams", "gbps", "gbit", "retransmits", "cpu_s", "wall_s", "rx_bytes",
        "rx_packets", "vwire_mtu", "xdp_programs"]
windows = []
for line in open(rows_f):
    if not line.strip():
        continue
    w = dict(zip(keys, line.split()))
    for k in ("round", "streams", "retransmits", "rx_bytes", "rx_packets"):
        w[k] = int(w[k])
    for k in ("gbps", "gbit", "cpu_s", "wall_s"):
        w[k] = float(w[k])
    for k in ("vwire_mtu", "xdp_programs"):
        w[k] = None if w[k] == "-" else int(w[k])
    w["cpu_s_per_gbit"] = w["cpu_s"] / w["gbit"] if w["gbit"] > 0 else None
    w["busy_cpus"] = w["cpu_s"] / w["wall_s"] if w["wall_s"] > 0 else None
    w["rx_bytes_per_packet"] = w["rx_bytes"] / w["rx_packets"] if w["rx_packets"] else None
    windows.append(w)
med = lambda xs: statistics.median(xs) if xs else None
summary = {}
for c in cases:
    summary[c] = {}
    for s in streams:
        ws = [w for w in windows if w["case"] == c and w["streams"] == s]
        ref = {w["round"]: w["gbps"] for w in windows if w["case"] == "bridge" and w["streams"] == s}
        ratios = [w["gbps"] / ref[w["round"]] for w in ws if ref.get(w["round"])]
        rxb, rxp = sum(w["rx_bytes"] for w in ws), sum(w["rx_packets"] for w in ws)
        avg = rxb / rxp if rxp else None
        summary[c][str(s)] = {
            "gbps_median": med([w["gbps"] for w in ws]), "gbps": [w["gbps"] for w in ws],
            "ratio_to_bridge_median": med(ratios) if c != "bridge" else None, "ratios_to_bridge": ratios,
            "cpu_s_per_gbit_median": med([w["cpu_s_per_gbit"] for w in ws if w["cpu_s_per_gbit"] is not None]),
            "busy_cpus_median": med([w["busy_cpus"] for w in ws if w["busy_cpus"] is not None]),
            "rx_bytes_per_packet": avg, "super_packets": avg is not None and avg > mtu + 14,
            "retransmits_median": med([w["retransmits"] for w in ws]),
            "vwire_mtu": sorted({w["vwire_mtu"] for w in ws if w["vwire_mtu"] is not None}),
            "xdp_programs": sorted({w["xdp_programs"] for w in ws if w["xdp_programs"] is not None}),
        }
rep = {"benchmark": "kernel_iperf", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
       "kernel": platform.release(), "nproc": int(nproc), "loadavg_start": load_start,
       "loadavg_end": load_end,
       "idle_busy_cpus_start": float(busy_start), "idle_busy_cpus_end": float(busy_end), "commit": commit, "pairs": pairs, "seconds": secs, "mtu": mtu,
       "iperf3_pinned": pin == "1", "iperf3_cpus": app_cpus if pin == "1" else "any",
       "vwire_worker_cpu": int(worker_cpu), "cases": cases, "streams": streams,
       "cpu_method": "/proc/stat: user+nice+system+irq+softirq of all CPUs (not idle, iowait, steal), "
                     "from just before the iperf3 client starts to just after it ends, in seconds, "
                     "divided by the Gbit iperf3 received (Gbit/s x s)",
       "summary": summary, "windows": windows}
json.dump(rep, open(f"{out}/{report}.json", "w"), indent=2)

def f(x, fmt):
    return "–" if x is None else format(x, fmt)
names = {"bridge": "Linux bridge", "vwire": "vwire (default datapath)"}
lines = []
for c in cases:
    for s in streams:
        r = summary[c][str(s)]
        name = names.get(c, f"vwire, `VWIRE_NSM_KERNEL_XCONNECT={c[len('vwire-'):]}`")
        sp = "–" if r["rx_bytes_per_packet"] is None else ("yes" if r["super_packets"] else "no")
        lines.append(f"| {name} | {s} | {f(r['gbps_median'], '.2f')} | {', '.join(f'{x:.2f}' for x in r['gbps'])} "
                     f"| {'–' if c == 'bridge' else f(r['ratio_to_bridge_median'], '.2f')} "
                     f"| {f(r['cpu_s_per_gbit_median'], '.3f')} | {f(r['busy_cpus_median'], '.2f')} "
                     f"| {f(r['rx_bytes_per_packet'], '.0f')} | {sp} | {f(r['retransmits_median'], '.0f')} |")
vm = sorted({m for c in cases for r in summary[c].values() for m in r["vwire_mtu"]})
xdp = [f"{c} {'/'.join(map(str, sorted({n for r in summary[c].values() for n in r['xdp_programs']}))) or '–'}"
       for c in cases if c != "bridge"]
xdp_line = f"- XDP programs attached in vwire's namespace (on the host ends of the veths): {', '.join(xdp)}.\n" if xdp else ""
cmd = f"bash perf/kernel_iperf.sh {pairs} {secs}"
env = [f"CASES=\"{' '.join(cases)}\""] if cases != ["bridge", "vwire-tcx", "vwire-afxdp"] else []
env += [f"STREAMS=\"{' '.join(map(str, streams))}\""] if streams != [1, 4] else []
env += [f"MTU={mtu}"] if mtu != 1500 else []
env += ["PIN=0"] if pin != "1" else []
md = f"""# Kernel2Kernel on one node: iperf3 TCP through vwire vs a Linux bridge

- {rep['date']}, kernel {rep['kernel']}, {nproc} vCPUs, commit {commit}, release build:
  `{' '.join(env + [cmd])}`.
- Load average {load_start} at the start, {load_end} at the end. With nothing of this benchmark running the
  machine was busy {busy_start} CPUs before the rounds and {busy_end} after (1 s samples of `/proc/stat`).
- {pairs} rounds; in each, every case in a window of its own ({secs} s per iperf3 run), in the order
  {', '.join(cases)}. iperf3 TCP NSC → NSE, MTU {mtu} on every pod interface (vwire gave
  {', '.join(map(str, vm)) or '–'}); vwire's worker on CPU {worker_cpu}, iperf3's client and server on
  {'CPU ' + app_cpus if pin == '1' else 'any CPU'}.

| path | streams | median Gbit/s | runs | vwire / bridge | CPU-s per Gbit | busy CPUs | bytes per rx packet | GSO super-packets crossed | retransmits |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}

- vwire / bridge: the median of the per-round ratios (each window against the bridge window of the same round).
- CPU-s per Gbit: CPU time the whole machine was busy during the run (`/proc/stat`: user + nice + system + irq +
  softirq over all CPUs; idle, iowait and steal left out), from just before the iperf3 client started to just
  after it ended, divided by the Gbit iperf3 received (Gbit/s × s); the same figure is busy CPUs per Gbit/s.
  Median over the windows. It counts everything on the machine: iperf3, the kernel's forwarding, vwire's
  polling worker, and anything else running then. Busy CPUs: that CPU time over the wall time.
- Bytes per rx packet: rx bytes / rx packets on NSE's pod interface over all the case's windows (Ethernet
  frames, at most MTU + 14 = {mtu + 14} bytes each unless GSO super-packets cross; "yes" when the average is
  above that).
- retransmits: iperf3's sender count per window, median.
{xdp_line}"""
open(f"{out}/{report}.md", "w").write(md)
print(md)
PY
