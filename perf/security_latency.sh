#!/usr/bin/env bash
# What zero trust costs a Request: Request/Close latency p50/p99 through a vwire with SPIFFE
# mTLS, path tokens and the default Rego policies, against an insecure vwire, in alternation,
# over one connection each, in the same run (ctrl/tests/nsm_security.rs,
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
  echo "$(date -u +%FT%TZ), kernel $(uname -r), $(nproc) CPUs, release build, $ROUNDS rounds. Two vwires side by"
  echo "side, one with SPIFFE mTLS + path tokens + the default policies, one insecure, measured in alternation"
  echo "round by round, each over one open connection (the TLS handshake is not in the figures: nsmgr keeps its"
  echo "connection to a forwarder). A round is a Request that no endpoint serves: refused (NotFound) by connect,"
  echo "the last element, after updatetoken and authorize ran, so the difference is what security adds to every"
  echo "Request. A KERNEL Request's own cost (veths, AF_XDP) is in nsm_latency.md. Then the CPU cost of one check"
  echo "of the four request policies and of one ES256 verification."
  echo
  echo '```'
  grep -E '^(rounds|chain|server defaults check|verify)' "$OUT"
  echo '```'
} > perf/reports/security_latency.md
cat perf/reports/security_latency.md
