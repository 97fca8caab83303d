#!/usr/bin/env bash
# Instructions per packet of the tunnel cores in two trees, counted by valgrind's cachegrind:
# deterministic, so a change of a few instructions shows, which criterion's times on this 2-vCPU
# VM cannot (their round-to-round spread is up to ±25%). It complements `cargo bench`; it does
# not replace it (instructions are not cycles: cache misses and branch mispredictions do not
# show).
#
# For each tree: build `benches/examples/tunnel_icount.rs` (copied from this tree into the older
# one), run each workload for R and R + 1000 rounds of a 32-frame burst, and divide the
# difference by 32 000 packets (start-up costs cancel out).
#
# Usage: bash perf/tunnel_icount.sh BASE_REV [NEW_REV]   (NEW_REV: the working tree)
#        → perf/reports/tunnel_icount.md
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_packages valgrind bc git
need_rust

BASE=${1:?usage: perf/tunnel_icount.sh BASE_REV [NEW_REV]}
NEW=${2:-}
ROOT=$PWD
WORK=$(mktemp -d)
cleanup() {
  rm -rf "$WORK"
  git -C "$ROOT" worktree prune
}
trap cleanup EXIT

# tree REV → a worktree of REV with this tree's harness in it (the working tree for "").
tree() {
  if [ -z "$1" ]; then echo "$ROOT"; return; fi
  local t="$WORK/$(git rev-parse --short "$1")"
  git worktree add -q --detach "$t" "$1"
  mkdir -p "$t/benches/examples"
  cp benches/examples/tunnel_icount.rs "$t/benches/examples/"
  echo "$t"
}

# build TREE NAME → the path of a copy of its harness binary. Each tree builds in its own
# target directory (the working tree in target/, a revision in target/icount-REV/, kept for the
# next run): cargo names a workspace crate's artifacts the same in every checkout, so two trees
# sharing one target directory would link each other's crates.
build() {
  local dir="$ROOT/target"
  [ "$1" = "$ROOT" ] || dir="$ROOT/target/icount-$2"
  (cd "$1" && CARGO_TARGET_DIR="$dir" cargo build -q --release -p vwire-benches \
    --example tunnel_icount)
  echo "$dir/release/examples/tunnel_icount"
}

# ir BIN OP SIZE ROUNDS → instructions executed
ir() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 |
    awk '/I *refs/ { gsub(",", "", $4); print $4 }'
}
per_packet() {
  local a b
  a=$(ir "$1" "$2" "$3" 100)
  b=$(ir "$1" "$2" "$3" 1100)
  echo "scale=1; ($b - $a) / 32000" | bc
}

base_tree=$(tree "$BASE")
new_tree=$(tree "$NEW")
base_name=$(git rev-parse --short "$BASE")
base_bin=$(build "$base_tree" "$base_name")
new_bin=$(build "$new_tree" "$([ -n "$NEW" ] && git rev-parse --short "$NEW")")
new_name=$([ -n "$NEW" ] && git rev-parse --short "$NEW" || echo "working tree ($(git rev-parse --short HEAD)+)")

report=perf/reports/tunnel_icount.md
{
  echo "# Tunnel cores: instructions per packet, $base_name vs $new_name"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), \`bash perf/tunnel_icount.sh $BASE${NEW:+ $NEW}\`: valgrind cachegrind,"
  echo "the workloads of \`benches/tunnel.rs\` (bursts of 32 frames), (I(1100 rounds) − I(100 rounds)) / 32000."
  echo
  echo "| workload | frame | $base_name | $new_name | new/base |"
  echo "|---|---|---|---|---|"
  for op in encap_l2 encap_ip srv6_decap encap_v4 encap_v4_csum encap_v6 decap_v4 decap_v6; do
    for size in 64 1500; do
      b=$(per_packet "$base_bin" "$op" "$size")
      n=$(per_packet "$new_bin" "$op" "$size")
      echo "| $op | $size | $b | $n | $(echo "scale=3; $n / $b" | bc) |"
    done
  done
} | tee "$report"
