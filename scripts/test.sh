#!/usr/bin/env bash
# Runs vwire's whole test suite: formatting and lints, unit tests, the privileged integration
# tests (network namespaces, veth pairs, AF_XDP, ping, iperf3), and every bench once in test
# mode. Run as root on Debian 12; it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages iproute2 iputils-ping iperf3 ethtool procps gcc g++ libc6-dev dpdk-dev librte-net-memif23
need_rust

# Tests that need an optional kernel feature probe for it; where it is missing they say so in
# this file (ctrl/tests/common: not_checked) instead of failing. Listed at the end of every run.
NOT_CHECKED_REPORT=$(mktemp)
export NOT_CHECKED_REPORT
report_not_checked() {
  local rc=$?
  if [ -s "$NOT_CHECKED_REPORT" ]; then
    echo "== NOT CHECKED on this machine (kernel features missing):"
    sort -u "$NOT_CHECKED_REPORT" | sed 's/^/   - /'
  elif [ "$rc" -eq 0 ]; then
    echo "== every kernel-dependent check ran (no optional kernel feature missing)"
  fi
  rm -f "$NOT_CHECKED_REPORT"
}
trap report_not_checked EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== fuzz targets build"
fuzz/build.sh --quiet
echo "== cargo test"
cargo test --workspace --all-targets
echo "== doc tests (incl. the compile_fail proofs of the RCU API)"
cargo test --workspace --doc
echo "== deployment manifests: the kustomize base and the Helm chart, rendered and validated against Kubernetes 1.29+"
bash deploy/test-manifests.sh
echo "== container image: built from Debian packages (umoci), run with runc in a test namespace"
bash deploy/build-image.sh
bash deploy/test-image.sh
