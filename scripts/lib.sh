# Shared by scripts/demo.sh and scripts/test.sh: preconditions and installs for a fresh
# Debian 12 machine. Sourced, not run.

die() { echo "error: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run this as root (vwire attaches XDP programs and creates network namespaces): sudo bash $0"
}

# Installs the Debian packages given, if any is missing.
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Makes cargo available: the one on PATH or in ~/.cargo, else a rustup install.
need_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "== installing the Rust toolchain (rustup)"
    need_packages curl ca-certificates gcc libc6-dev
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt >/dev/null
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo is not available and could not be installed"
}

# Two end hosts for a cross-connect: namespace $1 and $3, each holding "eth0" with address $5 and
# $6 (/24), whose veth peers $2 and $4 stay in this namespace for vwire (or a bridge) to use.
pair_up() {
  local ns_a=$1 if_a=$2 ns_b=$3 if_b=$4 ip_a=$5 ip_b=$6
  for side in "$ns_a $if_a $ip_a" "$ns_b $if_b $ip_b"; do
    set -- $side
    ip netns add "$1"
    ip link add "$2" type veth peer name eth0 netns "$1"
    ip link set "$2" up
    ip -n "$1" link set lo up
    ip -n "$1" link set eth0 up
    ip -n "$1" addr add "$3/24" dev eth0
  done
}

# Removes namespaces (ending what still runs inside, which would keep them and their veths alive).
netns_down() {
  for ns in "$@"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Writes a vwire config to $1: AF_XDP ports "a" on $2 and "b" on $3, cross-connected, metrics
# on $4, one worker on CPU $6 (default: the last) polling as $5 (default: adaptive).
xconnect_config() {
  pair_config "$1" "${6:-$(( $(nproc) - 1 ))}" "${5:-adaptive}" "$4" \
    "type = \"afxdp\"
interface = \"$2\"" "type = \"afxdp\"
interface = \"$3\""
}

# Writes a vwire config to $1: memif servers "a" on $4/a.sock and "b" on $4/b.sock,
# cross-connected, metrics on $3, one busy-polling worker on CPU $2.
memif_xconnect_config() {
  pair_config "$1" "$2" busy "$3" \
    "type = \"memif\"
socket = \"$4/a.sock\"
role = \"server\"" "type = \"memif\"
socket = \"$4/b.sock\"
role = \"server\""
}

# Writes a vwire config to $1: one worker on CPU $2 polling as $3, metrics on $4, and ports "a"
# ($5: its keys after the name) and "b" ($6), cross-connected.
pair_config() {
  cat > "$1" <<CONF
[dataplane]
workers = [$2]
poll = "$3"
[metrics]
listen = "$4"
[[port]]
name = "a"
$5
[[port]]
name = "b"
$6
[[xconnect]]
a = "a"
b = "b"
CONF
}

# Starts ./target/release/vwire with config $1, logging to $2, and waits for /metrics at $3.
# Sets VWIRE_PID.
start_vwire() {
  ./target/release/vwire run --config "$1" 2>>"$2" &
  VWIRE_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://$3/metrics" >/dev/null && return 0
    sleep 0.05
  done
  cat "$2" >&2
  die "vwire did not start"
}
