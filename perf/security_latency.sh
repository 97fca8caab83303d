#!/usr/bin/env bash
# What zero trust costs a Request: Request/Close latency p50/p99 through a vwire with SPIFFE
# mTLS, path tokens and the default Rego policies, against an insecure vwire, sequentially over
# one connection each, in the same run (ctrl/tests/nsm_security.rs,
# request_latency_with_and_without_security: a test Workload API, an mTLS nsmgr client and
# NSE stand-in written from the protocol; Kernel2Kernel connections with real veths). Also the
# CPU cost of one check of the four request policies and of one ES256 verification.
#
# Usage (root): bash perf/security_latency.sh [ROUNDS]   → perf/reports/security_latency.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2
need_rust

ROUNDS=${1:-200}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
cargo build --release --quiet -p vwire
SECURITY_LATENCY_ROUNDS=$ROUNDS cargo test --release --quiet -p vwire --test nsm_security -- \
  --ignored --nocapture --exact request_latency_with_and_without_security 2>&1 | tee -a "$OUT"
cargo test --release --quiet -p vwire --lib -- --ignored --nocapture check_latency 2>&1 | tee -a "$OUT"
{
  echo "# What zero trust adds to a Request"
  echo
  echo "$(date -u +%FT%TZ), kernel $(uname -r), $(nproc) CPUs, release build, $ROUNDS sequential Request+Close rounds"
  echo "per vwire (Kernel2Kernel, real veths), each over one open connection: the TLS handshake is not in"
  echo "the figures, as nsmgr keeps its connection to a forwarder."
  echo
  echo '```'
  grep -E '^(rounds|mTLS|plaintext|added|server defaults check|verify)' "$OUT"
  echo '```'
} > perf/reports/security_latency.md
cat perf/reports/security_latency.md
