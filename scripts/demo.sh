#!/usr/bin/env bash
# vwire's main job, end to end: build vwire, create two network namespaces ("a" and "b") each
# with a veth whose other end stays here, run vwire cross-connecting the two over AF_XDP, pass
# traffic (ping both ways, a 3 s iperf3 TCP run), print vwire's counters, stop vwire with
# SIGTERM, and remove everything. Run as root on Debian 12; it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 iputils-ping iperf3 procps curl gcc libc6-dev
need_rust

NS_A=vwdemo-a NS_B=vwdemo-b IF_A=vwdemo-a0 IF_B=vwdemo-b0
WORK=$(mktemp -d)
VWIRE_PID=
cleanup() {
  [ -n "$VWIRE_PID" ] && kill "$VWIRE_PID" 2>/dev/null && wait "$VWIRE_PID" 2>/dev/null || true
  for ns in "$NS_A" "$NS_B"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$IF_A" 2>/dev/null || true
  ip link del "$IF_B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for ns in "$NS_A" "$NS_B"; do ip netns del "$ns" 2>/dev/null || true; done   # leftovers of an earlier run

echo "== building vwire (release)"
cargo build --release --quiet -p vwire

echo "== topology: $NS_A (10.250.0.1) -- $IF_A =vwire= $IF_B -- $NS_B (10.250.0.2)"
for side in A B; do
  ns_var=NS_$side if_var=IF_$side ns=${!ns_var} ifn=${!if_var}
  ip netns add "$ns"
  ip link add "$ifn" type veth peer name eth0 netns "$ns"
  ip link set "$ifn" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
done
ip -n "$NS_A" addr add 10.250.0.1/24 dev eth0
ip -n "$NS_B" addr add 10.250.0.2/24 dev eth0

CPU=$(( $(nproc) - 1 ))
cat > "$WORK/vwire.toml" <<CONF
[dataplane]
workers = [$CPU]
poll = "adaptive"
[metrics]
listen = "127.0.0.1:9100"
[[port]]
name = "a"
type = "afxdp"
interface = "$IF_A"
[[port]]
name = "b"
type = "afxdp"
interface = "$IF_B"
[[xconnect]]
a = "a"
b = "b"
CONF
echo "== config ($WORK/vwire.toml):"; sed 's/^/   /' "$WORK/vwire.toml"

./target/release/vwire run --config "$WORK/vwire.toml" 2> "$WORK/vwire.log" &
VWIRE_PID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:9100/metrics >/dev/null && break; sleep 0.1; done
curl -sf 127.0.0.1:9100/metrics >/dev/null || { cat "$WORK/vwire.log"; die "vwire did not start"; }
echo "== vwire is running (pid $VWIRE_PID):"; sed 's/^/   /' "$WORK/vwire.log"
ip -d link show "$IF_A" | grep -o 'prog/xdp id [0-9]* name [a-z_]*' | sed "s/^/   $IF_A: /"

echo "== ping a -> b, and b -> a (1400 bytes)"
ip netns exec "$NS_A" ping -c 3 -i 0.2 10.250.0.2 | tail -2 | sed 's/^/   /'
ip netns exec "$NS_B" ping -c 3 -i 0.2 -s 1400 10.250.0.1 | tail -2 | sed 's/^/   /'

echo "== iperf3 TCP a -> b, 3 s"
ip netns exec "$NS_B" iperf3 -s -D -1 --logfile /dev/null
sleep 0.3
ip netns exec "$NS_A" iperf3 -c 10.250.0.2 -t 3 | grep -E 'sender|receiver' | sed 's/^/   /'

echo "== vwire's counters (http://127.0.0.1:9100/metrics)"
curl -s 127.0.0.1:9100/metrics | grep -E '^vwire_(port_(rx|tx)_(packets|bytes)|worker_(busy|idle)_seconds)_total' | sed 's/^/   /'
curl -s 127.0.0.1:9100/metrics | grep -E '^vwire_port_drops_total' | grep -v ' 0$' | sed 's/^/   /' || echo "   no drops"

echo "== stopping vwire (SIGTERM)"
kill -TERM "$VWIRE_PID"; wait "$VWIRE_PID"; echo "   exit code $?"; VWIRE_PID=
if ip -d link show "$IF_A" | grep -q prog/xdp; then die "an XDP program was left on $IF_A"; fi
echo "   no XDP program left on $IF_A or $IF_B"
echo "== cleaning up"
