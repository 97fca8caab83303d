#!/usr/bin/env bash
# Runs vwire's OCI image with a real OCI runtime (runc, from Debian) and repeats scripts/demo.sh
# through it. The container is privileged (all capabilities, no seccomp, no masked paths, every
# device) and has no network namespace of its own: it joins a test namespace ($NS_HOST) that plays
# the node's host network, holding the two veths vwire cross-connects over AF_XDP, whose peers are
# "eth0" in $NS_A (10.250.1.1) and $NS_B (10.250.1.2). It checks:
#   - ping both ways and a 3 s iperf3 TCP run through the cross-connect;
#   - the probe answers: `vwire health` run with `runc exec` inside the container (no shell) over
#     the NSM API socket (plaintext: the test vwire runs with nsm.insecure), exit 0 = SERVING;
#   - `runc kill <id> TERM` stops vwire with exit code 0, and leaves no XDP program on the veths,
#     no process in the test namespace, no API socket and no container.
# Usage: bash deploy/test-image.sh [ARCHIVE]   (default target/image/vwire-oci.tar, built if missing)
# Run as root on Debian 12; it installs what it needs. Removes everything it made, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages runc umoci skopeo jq iproute2 iputils-ping iperf3 procps curl

ARCHIVE=${1:-target/image/vwire-oci.tar}
if [ ! -f "$ARCHIVE" ]; then
  [ $# -eq 0 ] || die "$ARCHIVE: no such file"
  echo "== $ARCHIVE is missing: building it"
  bash deploy/build-image.sh
fi
ARCHIVE=$(readlink -f "$ARCHIVE")

ID=vwire-imgtest-$$
NS_HOST=vwimg-host NS_A=vwimg-a NS_B=vwimg-b IF_A=vwimg-a0 IF_B=vwimg-b0
METRICS=127.0.0.1:9100
WORK=$(mktemp -d)
RUNC_PID=
OK=0

cleanup() {
  set +e
  if [ "$OK" != 1 ]; then
    echo "== FAILED: vwire's log (container stdout/stderr):" >&2
    sed 's/^/   /' "$WORK/vwire.log" >&2 2>/dev/null
  fi
  if runc state "$ID" >/dev/null 2>&1; then
    runc kill "$ID" KILL 2>/dev/null
    sleep 0.2
    runc delete -f "$ID" 2>/dev/null
  fi
  [ -n "$RUNC_PID" ] && { kill "$RUNC_PID" 2>/dev/null; wait "$RUNC_PID" 2>/dev/null; }
  netns_down "$NS_A" "$NS_B" "$NS_HOST"
  rm -rf "$WORK"
}
trap cleanup EXIT
netns_down "$NS_A" "$NS_B" "$NS_HOST"   # leftovers of an earlier run

echo "== image: $ARCHIVE -> OCI layout (skopeo) -> runtime bundle (umoci unpack)"
REF=$(tar -xOf "$ARCHIVE" ./index.json | jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"]')
skopeo copy --quiet "oci-archive:$ARCHIVE:$REF" "oci:$WORK/layout:$REF"
umoci unpack --image "$WORK/layout:$REF" "$WORK/bundle" >/dev/null
BUNDLE=$WORK/bundle
for sh in sh bash dash busybox; do
  [ -z "$(find "$BUNDLE/rootfs" -name "$sh")" ] || die "the image holds a shell ($sh)"
done
echo "   rootfs: $(find "$BUNDLE/rootfs" -type f | sort | sed "s|$BUNDLE/rootfs||" | paste -sd' ')"

echo "== topology: $NS_A (10.250.1.1) -- $IF_A =vwire in a container= $IF_B -- $NS_B (10.250.1.2)"
echo "   the container shares $NS_HOST's network namespace (the \"host network\" of this test)"
pair_up "$NS_A" "$IF_A" "$NS_B" "$IF_B" 10.250.1.1 10.250.1.2
ip netns add "$NS_HOST"
ip -n "$NS_HOST" link set lo up
for ifc in "$IF_A" "$IF_B"; do
  ip link set "$ifc" netns "$NS_HOST"
  ip -n "$NS_HOST" link set "$ifc" up
done

mkdir -p "$WORK/etc" "$WORK/run"
xconnect_config "$WORK/etc/vwire.toml" "$IF_A" "$IF_B" "$METRICS"
cat >> "$WORK/etc/vwire.toml" <<'CONF'
[nsm]
listen_on = "unix:///run/vwire/listen.on.sock"
insecure = true
tunnel_ip = "none"
CONF
echo "== config (/etc/vwire/vwire.toml in the container):"; sed 's/^/   /' "$WORK/etc/vwire.toml"

# Every capability this script holds (its bounding set: a sandbox may withhold some, e.g. CAP_SYS_RESOURCE;
# runc cannot grant more), by bit number.
CAP_NAMES=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
  NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE
  SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL
  SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
CAPBND=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
CAPS=() MISSING=()
for i in "${!CAP_NAMES[@]}"; do
  if (( (CAPBND >> i) & 1 )); then CAPS+=("CAP_${CAP_NAMES[$i]}"); else MISSING+=("CAP_${CAP_NAMES[$i]}"); fi
done
CAPS=$(printf '%s\n' "${CAPS[@]}" | jq -R . | jq -sc .)
[ ${#MISSING[@]} -eq 0 ] || echo "   note: this machine withholds ${MISSING[*]}: the container gets every other capability"

# The runtime spec umoci wrote, made privileged and put into the test namespace's network:
# no pid/ipc/uts namespaces (the host's, as hostPID/hostIPC would), the config mounted read-only,
# the API socket's directory bind-mounted, a read-only root filesystem.
jq --argjson caps "$CAPS" --argjson nofile "$(ulimit -Hn)" --arg netns "/var/run/netns/$NS_HOST" --arg etc "$WORK/etc" --arg run "$WORK/run" '
    .process.terminal = false
  | .process.args = ["/usr/bin/vwire", "run", "--config", "/etc/vwire/vwire.toml"]
  | .process.env += ["NSM_LOG_LEVEL=INFO"]
  | .process.noNewPrivileges = false
  | .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps, inheritable: $caps, ambient: $caps}
  | .process.rlimits = [{type: "RLIMIT_NOFILE", hard: $nofile, soft: $nofile}]
  | del(.hostname)
  | .root.readonly = true
  | .linux.namespaces = [{type: "mount"}, {type: "network", path: $netns}]
  | del(.linux.seccomp) | del(.linux.maskedPaths) | del(.linux.readonlyPaths)
  | .linux.resources.devices = [{allow: true, access: "rwm"}]
  | .mounts |= map(if .destination == "/sys" then .options = ["nosuid", "noexec", "nodev", "rw"] else . end)
  | .mounts += [{destination: "/etc/vwire", type: "bind", source: $etc, options: ["rbind", "ro"]},
                {destination: "/run/vwire", type: "bind", source: $run, options: ["rbind", "rw"]},
                {destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"]}]
' "$BUNDLE/config.json" > "$WORK/config.json"
mv "$WORK/config.json" "$BUNDLE/config.json"

echo "== runc run $ID (privileged, network of $NS_HOST)"
runc run --bundle "$BUNDLE" "$ID" </dev/null >"$WORK/vwire.log" 2>&1 &
RUNC_PID=$!
up=0
for _ in $(seq 200); do
  if ip netns exec "$NS_HOST" curl -sf "http://$METRICS/metrics" >/dev/null; then up=1; break; fi
  kill -0 "$RUNC_PID" 2>/dev/null || break
  sleep 0.05
done
[ "$up" = 1 ] || die "vwire did not start in the container"
echo "== vwire is running in the container (runc state: $(runc state "$ID" | jq -r .status), pid $(runc state "$ID" | jq -r .pid)):"
sed 's/^/   /' "$WORK/vwire.log"
ip -n "$NS_HOST" -d link show "$IF_A" | grep -o 'prog/xdp id [0-9]* name [a-z_]*' | sed "s/^/   $IF_A: /" \
  || die "no XDP program on $IF_A"

echo "== ping a -> b, and b -> a (1400 bytes)"
ip netns exec "$NS_A" ping -c 3 -i 0.2 -W 2 10.250.1.2 | tail -2 | sed 's/^/   /'
ip netns exec "$NS_B" ping -c 3 -i 0.2 -W 2 -s 1400 10.250.1.1 | tail -2 | sed 's/^/   /'

echo "== iperf3 TCP a -> b, 3 s"
ip netns exec "$NS_B" iperf3 -s -D -1 --logfile /dev/null
sleep 0.3
ip netns exec "$NS_A" iperf3 -c 10.250.1.2 -t 3 | grep -E 'sender|receiver' | sed 's/^/   /'

echo "== vwire's counters (http://$METRICS/metrics in $NS_HOST)"
ip netns exec "$NS_HOST" curl -s "http://$METRICS/metrics" \
  | grep -E '^vwire_port_(rx|tx)_packets_total' | sed 's/^/   /'

echo "== probe: runc exec $ID /usr/bin/vwire health --addr unix:///run/vwire/listen.on.sock"
rc=0
out=$(runc exec "$ID" /usr/bin/vwire health --addr unix:///run/vwire/listen.on.sock 2>&1) || rc=$?
echo "$out" | sed 's/^/   /'
[ "$rc" -eq 0 ] || die "vwire health exited $rc (SERVING expected)"
echo "   exit code 0 (SERVING)"
if runc exec "$ID" /usr/bin/vwire health --addr unix:///run/vwire/absent.sock --timeout 1s >/dev/null 2>&1; then
  die "vwire health exited 0 for a socket nobody serves"
fi
echo "   and non-zero for a socket nobody serves (unix:///run/vwire/absent.sock)"

echo "== stopping the container: runc kill $ID TERM"
runc kill "$ID" TERM
rc=0
for _ in $(seq 100); do kill -0 "$RUNC_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RUNC_PID" 2>/dev/null && die "vwire did not stop within 10 s of SIGTERM"
wait "$RUNC_PID" || rc=$?
RUNC_PID=
echo "   vwire exited with code $rc"; tail -3 "$WORK/vwire.log" | sed 's/^/   /'
[ "$rc" -eq 0 ] || die "vwire exited $rc after SIGTERM (0 expected)"
for ifc in "$IF_A" "$IF_B"; do
  if ip -n "$NS_HOST" -d link show "$ifc" | grep -q 'prog/xdp'; then die "an XDP program was left on $ifc"; fi
done
echo "   no XDP program left on $IF_A or $IF_B"
[ -z "$(ip netns pids "$NS_HOST")" ] || die "processes left in $NS_HOST: $(ip netns pids "$NS_HOST" | paste -sd' ')"
echo "   no process left in $NS_HOST"
[ -z "$(ls -A "$WORK/run")" ] || die "left in the socket directory: $(ls -A "$WORK/run")"
echo "   no API socket left"
if runc state "$ID" >/dev/null 2>&1; then die "runc still knows container $ID"; fi
echo "   no container state left (runc)"
OK=1
echo "== PASS; cleaning up"
