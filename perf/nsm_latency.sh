#!/usr/bin/env bash
# NSM control-plane latency: COUNT Kernel2Kernel connections requested and closed through a
# running vwire and vwire-nse, one at a time, 32 at a time and 100 at a time (vwire-nsm-bench).
# Reports Request and Close latency p50/p99 and vwire's RSS (before the run, peak, growth per
# connection), as JSON lines and a markdown table.
#
# Usage (root): bash perf/nsm_latency.sh [COUNT]   → perf/reports/nsm_latency.{json,md}
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 python3
need_rust

COUNT=${1:-200}
D=$(mktemp -d)
NS_C=vwbench-c NS_E=vwbench-e
VP= NP=
cleanup() {
  [ -n "$VP" ] && kill "$VP" 2>/dev/null && wait "$VP" 2>/dev/null || true
  [ -n "$NP" ] && kill "$NP" 2>/dev/null && wait "$NP" 2>/dev/null || true
  netns_down "$NS_C" "$NS_E"
  rm -rf "$D"
}
trap cleanup EXIT
netns_down "$NS_C" "$NS_E"
cargo build --release --quiet -p vwire -p vwire-examples
ip netns add "$NS_C"; ip netns add "$NS_E"
ip -n "$NS_C" link set lo up; ip -n "$NS_E" link set lo up
cat > "$D/vw.toml" <<CONF
[dataplane]
workers = [$(( $(nproc) - 1 ))]
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
python3 - "$D/results" perf/reports <<'PY'
import json, sys, datetime, platform
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = sys.argv[2]
rep = {"benchmark": "nsm_latency", "date": datetime.datetime.utcnow().isoformat() + "Z",
       "kernel": platform.release(), "runs": rows}
json.dump(rep, open(f"{out}/nsm_latency.json", "w"), indent=2)
lines = "\n".join(
    f"| {r['concurrency']} | {r['ok']}/{r['count']} | {r['request_ms']['p50']:.1f} | {r['request_ms']['p99']:.1f} "
    f"| {r['close_ms']['p50']:.1f} | {r['close_ms']['p99']:.1f} | {r['rss_kib']['before'] / 1024:.1f} | {r['rss_kib']['peak'] / 1024:.1f} "
    f"| {(r['rss_kib']['after'] - r['rss_kib']['before']) / max(r['ok'], 1):.1f} |"
    for r in rows)
md = f"""# NSM control-plane latency (Kernel2Kernel through vwire and vwire-nse)

{rep['date']}, kernel {rep['kernel']}, release build.

| concurrency | ok | Request p50 ms | Request p99 ms | Close p50 ms | Close p99 ms | RSS before MiB | RSS peak MiB | RSS growth KiB/connection |
|---|---|---|---|---|---|---|---|---|
{lines}
"""
open(f"{out}/nsm_latency.md", "w").write(md)
print(md)
PY
