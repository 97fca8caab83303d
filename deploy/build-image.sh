#!/usr/bin/env bash
# Builds vwire's OCI image from Debian packages alone (no registry pull): a distroless-style
# single layer holding the release binary (debug info stripped, symbols kept for backtraces),
# the shared libraries `ldd` names and a few files under /etc. No shell, no package manager.
# umoci assembles the OCI image layout; the output is an OCI archive (a tar of that layout,
# what skopeo calls `oci-archive:`):
#
#   target/image/vwire-oci.tar        ref name "vwire:<version>" inside the archive
#
# Usage: bash deploy/build-image.sh [--no-build]   (--no-build: use target/release/vwire as is)
# Env:   SOURCE_DATE_EPOCH (default: the last commit's time) sets every mtime and the created date.
# Run as root on Debian 12 (it installs umoci and skopeo; root keeps file owners 0:0 in the layer).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
need_packages umoci skopeo binutils tar coreutils

BUILD=1
[ "${1:-}" = "--no-build" ] && BUILD=0

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
TAG=$VERSION
OUT=target/image
ARCHIVE=$OUT/vwire-oci.tar

if [ "$BUILD" = 1 ]; then
  need_rust
  echo "== building vwire (release)"
  cargo build --release --quiet -p vwire
fi
BIN=target/release/vwire
[ -x "$BIN" ] || die "$BIN is missing (build it, or drop --no-build)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
mkdir -p "$ROOT"/{usr/bin,etc/vwire,run/vwire,tmp,usr/share/doc}
chmod 1777 "$ROOT/tmp"

echo "== rootfs: vwire, its libraries, /etc"
objcopy --strip-debug "$BIN" "$ROOT/usr/bin/vwire"
chmod 0755 "$ROOT/usr/bin/vwire"

# Every library the dynamic linker would load, at the path ldd names (the interpreter included),
# plus the Debian copyright file of the package that ships it.
LIBS=$(ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
[ -n "$LIBS" ] || die "ldd found no libraries in $BIN"
for lib in $LIBS; do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"                      # the file, not the symlink
  pkg=$( (dpkg-query -S "$lib" || dpkg-query -S "$(readlink -f "$lib")") 2>/dev/null | head -1 | cut -d: -f1) || true
  if [ -n "$pkg" ] && [ -f "/usr/share/doc/$pkg/copyright" ]; then
    mkdir -p "$ROOT/usr/share/doc/$pkg"
    cp "/usr/share/doc/$pkg/copyright" "$ROOT/usr/share/doc/$pkg/"
  fi
  echo "   $lib  (${pkg:-?})"
done
# The image must start without any of the host's other files: run the copied loader on the copied
# binary with only the copied directories on its library path.
LIBDIRS=$(for lib in $LIBS; do echo "$ROOT$(dirname "$lib")"; done | sort -u | paste -sd:)
INTERP=$(for lib in $LIBS; do case $lib in */ld-linux*) echo "$ROOT$lib";; esac; done)
"$INTERP" --inhibit-cache --library-path "$LIBDIRS" "$ROOT/usr/bin/vwire" --version >/dev/null \
  || die "the copied loader and libraries cannot run vwire"

cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/:/nonexistent
nobody:x:65534:65534:nobody:/nonexistent:/nonexistent
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo "hosts: files dns" > "$ROOT/etc/nsswitch.conf"   # glibc 2.36: files and dns are built into libc
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"

if find "$ROOT" -name sh -o -name bash -o -name busybox | grep -q .; then die "a shell got into the rootfs"; fi
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

echo "== OCI layout (umoci)"
LAYOUT=$WORK/layout
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$TAG"
umoci insert --image "$LAYOUT:$TAG" --history.created "$CREATED" --history.created_by "deploy/build-image.sh" \
  "$ROOT" /
umoci config --image "$LAYOUT:$TAG" \
  --created "$CREATED" --history.created "$CREATED" --history.created_by "deploy/build-image.sh (config)" \
  --os linux --architecture "$(dpkg --print-architecture)" \
  --clear config.env --config.env PATH=/usr/bin \
  --clear config.entrypoint --config.entrypoint /usr/bin/vwire \
  --clear config.cmd --config.cmd run \
  --config.workingdir / --config.user 0:0 \
  --config.stopsignal SIGTERM \
  --config.label "org.opencontainers.image.title=vwire" \
  --config.label "org.opencontainers.image.description=userspace dataplane and NSM forwarder (AF_XDP, memif, VXLAN); no base image, Debian 12 libraries (see /usr/share/doc)" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.revision=$REVISION" \
  --config.label "org.opencontainers.image.created=$CREATED" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --manifest.annotation "org.opencontainers.image.version=$VERSION" \
  --manifest.annotation "org.opencontainers.image.revision=$REVISION" \
  --manifest.annotation "org.opencontainers.image.created=$CREATED"
umoci gc --layout "$LAYOUT"

echo "== OCI archive"
mkdir -p "$OUT"
chmod -R a+rX "$LAYOUT"
find "$LAYOUT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  -cf "$ARCHIVE.tmp" -C "$LAYOUT" .
mv "$ARCHIVE.tmp" "$ARCHIVE"
skopeo inspect "oci-archive:$ARCHIVE:$TAG" >/dev/null || die "skopeo cannot read $ARCHIVE"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
ARCHIVE_BYTES=$(stat -c %s "$ARCHIVE")
ROOT_BYTES=$(du -sb "$ROOT" | cut -f1)
echo "== $ARCHIVE (ref vwire:$TAG, oci-archive:$ARCHIVE:$TAG)"
echo "   archive (compressed layer): $(mib "$ARCHIVE_BYTES")  ($ARCHIVE_BYTES bytes)"
echo "   unpacked rootfs:            $(mib "$ROOT_BYTES")  ($ROOT_BYTES bytes)"
echo "   sha256 $(sha256sum "$ARCHIVE" | cut -d' ' -f1)"
[ "$ARCHIVE_BYTES" -lt $((40 * 1048576)) ] || echo "   warning: over the 40 MiB goal" >&2
