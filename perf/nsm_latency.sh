#!/usr/bin/env bash
# NSM control-plane latency: COUNT Kernel2Kernel connections requested and closed through a
# running vwire and vwire-nse, one at a time, 32 at a time and 100 at a time (vwire-nsm-bench).
# Reports Request and Close latency p50/p99 and vwire's RSS (before the run, peak, growth per
# connection), as JSON lines and a markdown table.
#
# Then LIVE connections held at once (32 requested at a time), each pinged once through vwire,
# with vwire's RSS while they are all live.
#
# Then a soak: CYCLES Request/Close cycles, 8 at a time, with vwire's fds, threads and RSS and the
# interfaces on the host and in both namespaces counted before and after (leaks show as growth).
#
# Usage (root): bash perf/nsm_latency.sh [COUNT] [CYCLES] [LIVE]   → perf/reports/nsm_latency.{json,md}
#               (defaults 200, 10000 and 1000; CYCLES=0 skips the soak, LIVE=0 the live run)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 python3
need_rust

COUNT=${1:-200}
CYCLES=${2:-10000}
LIVE=${3:-1000}
# Pool frames for connections: 64 per idle connection and room for traffic, at least vwire's
# default (16384). REPORT names the report files (default nsm_latency).
FRAMES=${FRAMES:-$(( LIVE * 64 + 8192 > 16384 ? LIVE * 64 + 8192 : 16384 ))}
REPORT=${REPORT:-nsm_latency}
D=$(mktemp -d)
NS_C=vwbench-c NS_E=vwbench-e
VP= NP=
# The kernel's ARP table is one for all namespaces: LIVE connections make two entries each (the
# client's and the endpoint's), past the default hard limit of 1024 (a node with that many
# connections needs the same). Raised for the run, restored after.
GC_SAVED=$(sysctl -n net.ipv4.neigh.default.gc_thresh1 net.ipv4.neigh.default.gc_thresh2 net.ipv4.neigh.default.gc_thresh3 | tr '\n' ' ')
cleanup() {
  read -r g1 g2 g3 <<< "$GC_SAVED"
  sysctl -qw net.ipv4.neigh.default.gc_thresh1="$g1" net.ipv4.neigh.default.gc_thresh2="$g2" \
    net.ipv4.neigh.default.gc_thresh3="$g3" || true
  [ -n "$VP" ] && kill "$VP" 2>/dev/null && wait "$VP" 2>/dev/null || true
  [ -n "$NP" ] && kill "$NP" 2>/dev/null && wait "$NP" 2>/dev/null || true
  netns_down "$NS_C" "$NS_E"
  rm -rf "$D"
}
trap cleanup EXIT
sysctl -qw net.ipv4.neigh.default.gc_thresh2=$(( LIVE * 4 + 2048 )) net.ipv4.neigh.default.gc_thresh3=$(( LIVE * 4 + 4096 ))
netns_down "$NS_C" "$NS_E"
cargo build --release --quiet -p vwire -p vwire-examples
ip netns add "$NS_C"; ip netns add "$NS_E"
ip -n "$NS_C" link set lo up; ip -n "$NS_E" link set lo up
cat > "$D/vw.toml" <<CONF
[dataplane]
workers = [$(( $(nproc) - 1 ))]
connection_frames = $FRAMES
[metrics]
listen = "127.0.0.1:9196"
[nsm]
name = "fwd"
listen_on = "unix://$D/fwd.sock"
insecure = true
tunnel_ip = "none"    # single node: no uplink
[[endpoint]]
name = "nse-1"
url = "unix://$D/nse.sock"
service = "icmp-responder"
CONF
./target/release/vwire run --config "$D/vw.toml" 2>"$D/vw.log" & VP=$!
ip netns exec "$NS_E" ./target/release/vwire-nse --listen "unix://$D/nse.sock" --cidr 172.16.0.0/16 2>"$D/nse.log" & NP=$!
for _ in $(seq 100); do [ -S "$D/fwd.sock" ] && [ -S "$D/nse.sock" ] && break; sleep 0.05; done
: > "$D/results"
for conc in 1 32 100; do
  ip netns exec "$NS_C" ./target/release/vwire-nsm-bench --connect "unix://$D/fwd.sock" \
    --count "$COUNT" --concurrency "$conc" --pid "$VP" | tee -a "$D/results"
done
: > "$D/live"
if [ "$LIVE" -gt 0 ]; then
  ip netns exec "$NS_C" ./target/release/vwire-nsm-bench --connect "unix://$D/fwd.sock" \
    --count "$LIVE" --concurrency 32 --hold --pid "$VP" | tee "$D/live"
fi
# What vwire holds and what exists in the kernel, as one JSON object.
snapshot() {
  printf '{"fds": %s, "threads": %s, "rss_kib": %s, "host_links": %s, "nsc_links": %s, "nse_links": %s, "xdp_links": %s}\n' \
    "$(ls /proc/$VP/fd | wc -l)" "$(ls /proc/$VP/task | wc -l)" "$(awk '/^VmRSS/ {print $2}' /proc/$VP/status)" \
    "$(ip -o link | wc -l)" "$(ip -n "$NS_C" -o link | wc -l)" "$(ip -n "$NS_E" -o link | wc -l)" \
    "$(ip -d -o link | grep -c 'prog/xdp' || true)"
}
: > "$D/soak"
if [ "$CYCLES" -gt 0 ]; then
  snapshot > "$D/soak"
  ip netns exec "$NS_C" ./target/release/vwire-nsm-bench --connect "unix://$D/fwd.sock" \
    --count "$CYCLES" --concurrency 8 --pid "$VP" | tee "$D/soak-run"
  sleep 2
  snapshot >> "$D/soak"
  cat "$D/soak"
fi
python3 - "$D/results" perf/reports "$D/soak" "$D/soak-run" "$D/live" "$REPORT" "$FRAMES" <<'PY'
import json, sys, datetime, platform
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = sys.argv[2]
rep = {"benchmark": "nsm_latency", "date": datetime.datetime.utcnow().isoformat() + "Z",
       "kernel": platform.release(), "runs": rows}
json.dump(rep, open(f"{out}/{sys.argv[6]}.json", "w"), indent=2)
lines = "\n".join(
    f"| {r['concurrency']} | {r['ok']}/{r['count']} | {r['request_ms']['p50']:.1f} | {r['request_ms']['p99']:.1f} "
    f"| {r['close_ms']['p50']:.1f} | {r['close_ms']['p99']:.1f} | {r['rss_kib']['before'] / 1024:.1f} | {r['rss_kib']['peak'] / 1024:.1f} "
    f"| {(r['rss_kib']['after'] - r['rss_kib']['before']) / max(r['ok'], 1):.1f} |"
    for r in rows)
md = f"""# NSM control-plane latency (Kernel2Kernel through vwire and vwire-nse)

{rep['date']}, kernel {rep['kernel']}, release build, one worker, `connection_frames = {sys.argv[7]}`.

| concurrency | ok | Request p50 ms | Request p99 ms | Close p50 ms | Close p99 ms | RSS before MiB | RSS peak MiB | RSS growth KiB/connection |
|---|---|---|---|---|---|---|---|---|
{lines}
"""
live = [json.loads(l) for l in open(sys.argv[5]) if l.strip()]
if live:
    l = live[0]
    rep["live"] = l
    json.dump(rep, open(f"{out}/{sys.argv[6]}.json", "w"), indent=2)
    md += f"""
## {l['count']} connections live at once (requested 32 at a time)

| established | answering a ping through vwire | Request p50 / p99 ms | RSS before MiB | RSS all live MiB | RSS per connection KiB | Close p50 / p99 ms |
|---|---|---|---|---|---|---|
| {l['live']}/{l['count']} | {l['ping_ok']} | {l['request_ms']['p50']:.1f} / {l['request_ms']['p99']:.1f} | {l['rss_kib']['before'] / 1024:.1f} | {l['rss_kib']['live'] / 1024:.1f} | {(l['rss_kib']['live'] - l['rss_kib']['before']) / max(l['live'], 1):.1f} | {l['close_ms']['p50']:.1f} / {l['close_ms']['p99']:.1f} |

First error, if any: {l['first_error'] or 'none'}
"""
soak = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
if len(soak) == 2:
    run = json.loads(open(sys.argv[4]).read())
    rep["soak"] = {"before": soak[0], "after": soak[1], "run": run}
    json.dump(rep, open(f"{out}/{sys.argv[6]}.json", "w"), indent=2)
    keys = ["fds", "threads", "rss_kib", "host_links", "nsc_links", "nse_links", "xdp_links"]
    md += f"""
## Soak: {run['count']} Request/Close cycles, 8 at a time ({run['ok']} ok, {run['seconds']:.0f} s)

| | {' | '.join(keys)} |
|---|{'---|' * len(keys)}
| before | {' | '.join(str(soak[0][k]) for k in keys)} |
| after | {' | '.join(str(soak[1][k]) for k in keys)} |
"""
open(f"{out}/{sys.argv[6]}.md", "w").write(md)
print(md)
PY
