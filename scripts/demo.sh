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
  netns_down "$NS_A" "$NS_B"
  rm -rf "$WORK"
}
trap cleanup EXIT
netns_down "$NS_A" "$NS_B"   # leftovers of an earlier run

echo "== building vwire (release)"
cargo build --release --quiet -p vwire

echo "== topology: $NS_A (10.250.0.1) -- $IF_A =vwire= $IF_B -- $NS_B (10.250.0.2)"
pair_up "$NS_A" "$IF_A" "$NS_B" "$IF_B" 10.250.0.1 10.250.0.2
xconnect_config "$WORK/vwire.toml" "$IF_A" "$IF_B" 127.0.0.1:9100
echo "== config ($WORK/vwire.toml):"; sed 's/^/   /' "$WORK/vwire.toml"

start_vwire "$WORK/vwire.toml" "$WORK/vwire.log" 127.0.0.1:9100
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
