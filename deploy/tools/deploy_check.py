#!/usr/bin/env python3
"""Checks of the rendered Kubernetes manifests that schema validation and checkov don't do.

Used by scripts/deploy-check.sh (with the PyYAML of its tool venv):

  deploy_check.py gen-rule                      print the PrometheusRule made from
                                                deploy/prometheus/rules.yaml
  deploy_check.py rule-in-sync                  fail unless deploy/k8s/base/prometheusrule.yaml
                                                is exactly what gen-rule prints
  deploy_check.py split RENDERED CORE CRDS      write the core objects and the custom
                                                resources of a rendered overlay to two files
  deploy_check.py policy OVERLAY RENDERED       the project's own rules on a rendered overlay
  deploy_check.py egress-selftest RENDERED      the egress rule refuses a policy with a port
                                                missing or one too many (the check can fail)

Custom resources (ServiceMonitor, PrometheusRule) are not in kubernetes-validate's schema
set, so `policy` checks them here: their apiVersion and kind, the fields pisgate uses, and
what they refer to (the ServiceMonitor's selector finds the admin Service, whose port it
names; the PrometheusRule's groups are rules.yaml's, which promtool checks and tests).
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yaml"
RULE_MANIFEST = ROOT / "deploy/k8s/base/prometheusrule.yaml"
# The webhook dispatcher's port policy, read where the code keeps it.
WEBHOOK_PORTS_SOURCE = ROOT / "src/ledger/webhooks.rs"
# Egress that is not HTTPS to the internet: DNS and the database (or its pooler).
INFRA_PORTS = {53, 5432}

CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
LABEL_KEYS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
]
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
DATABASE_SECRET = "pisgate-database"
APP_SECRET = "pisgate-app"

RULE_HEADER = """\
# Generated from deploy/prometheus/rules.yaml: do not edit here. Regenerate with
#   python3 deploy/tools/deploy_check.py gen-rule > deploy/k8s/base/prometheusrule.yaml
# (scripts/deploy-check.sh fails while the two differ). Prometheus Operator installations
# often pick rules by a label (kube-prometheus-stack: release=<its release name>); add it in
# the overlay if yours does.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: pisgate
  labels:
    app.kubernetes.io/component: monitoring
spec:
"""



def seconds(value):
    """A duration setting as pisgate reads it ("60s", "2m", "1500ms", "90"), in seconds."""
    v = str(value).strip()
    for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if v.endswith(suffix) and v[: -len(suffix)].strip().replace(".", "", 1).isdigit():
            return float(v[: -len(suffix)]) * factor
    return float(v)

def gen_rule() -> str:
    body = [line for line in RULES.read_text().splitlines() if not line.startswith("#")]
    while body and not body[0].strip():
        body.pop(0)
    return RULE_HEADER + "".join(f"  {line}\n" if line else "\n" for line in body)


def rule_in_sync() -> list[str]:
    if not RULE_MANIFEST.exists() or RULE_MANIFEST.read_text() != gen_rule():
        return [
            f"{RULE_MANIFEST.relative_to(ROOT)} differs from what "
            f"{RULES.relative_to(ROOT)} generates; run: "
            "python3 deploy/tools/deploy_check.py gen-rule > deploy/k8s/base/prometheusrule.yaml"
        ]
    generated = yaml.safe_load(gen_rule())["spec"]["groups"]
    if generated != yaml.safe_load(RULES.read_text())["groups"]:
        return ["the generated PrometheusRule's groups differ from rules.yaml (generator bug)"]
    return []


def webhook_ports() -> set[int]:
    """ALLOWED_PORTS in src/ledger/webhooks.rs: where webhooks may be delivered."""
    m = re.search(r"pub const ALLOWED_PORTS: \[u16; \d+\] = \[([0-9, ]+)\];",
                  WEBHOOK_PORTS_SOURCE.read_text())
    if not m:
        raise SystemExit(f"ALLOWED_PORTS not found in {WEBHOOK_PORTS_SOURCE}")
    return {int(x) for x in m.group(1).split(",")}


def url_port(url: str) -> int:
    from urllib.parse import urlsplit
    u = urlsplit(url)
    return u.port or {"https": 443, "http": 80}[u.scheme]


def expected_egress(settings: dict) -> set[int]:
    """The TCP ports pisgate itself opens to the internet: the webhook policy's, the bank's
    (its base URL), and the configured webhook proxy's, if any."""
    ports = set(webhook_ports())
    for key, value in settings.items():
        if key.endswith("__BASE_URL") and value:
            ports.add(url_port(value))
    if settings.get("PISGATE__WEBHOOKS__PROXY"):
        ports.add(url_port(settings["PISGATE__WEBHOOKS__PROXY"]))
    return ports


def egress_errors(policy: dict, settings: dict) -> list[str]:
    tcp = {p.get("port") for rule in policy["spec"].get("egress", [])
           for p in rule.get("ports", []) if p.get("protocol", "TCP") == "TCP"}
    internet = tcp - INFRA_PORTS
    want = expected_egress(settings)
    errors = []
    if internet - want:
        errors.append(f"egress allows ports {sorted(internet - want, key=str)} that neither "
                      f"webhooks (ALLOWED_PORTS {sorted(webhook_ports())}), the bank nor the proxy use")
    if want - internet:
        errors.append(f"egress lacks ports {sorted(want - internet)} that webhooks, the bank "
                      f"or the proxy use")
    return errors


def egress_selftest(rendered: str) -> list[str]:
    docs = load(rendered)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    settings = next((d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"].startswith("pisgate-settings")), {})
    errors = egress_errors(policy, settings)
    if errors:
        return [f"the rendered policy fails already: {errors}"]
    import copy
    for name, change in [
        ("a port too many (80)", lambda rules: rules.append({"ports": [{"port": 80, "protocol": "TCP"}]})),
        ("8443 missing", lambda rules: [r.__setitem__("ports", [p for p in r.get("ports", []) if p.get("port") != 8443]) for r in rules]),
    ]:
        doctored = copy.deepcopy(policy)
        change(doctored["spec"]["egress"])
        if not egress_errors(doctored, settings):
            errors.append(f"the egress rule accepts a policy with {name}")
    proxied = dict(settings, PISGATE__WEBHOOKS__PROXY="http://egress-proxy:3128")
    if not egress_errors(policy, proxied):
        errors.append("the egress rule accepts a policy without the configured proxy's port")
    print(f"egress ports {sorted(expected_egress(settings))}: a missing, an extra and a proxy port are each refused")
    return errors


def load(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(Path(path).read_text()) if d]


def is_crd(doc: dict) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS


def split(rendered: str, core: str, crds: str) -> None:
    docs = load(rendered)
    Path(core).write_text(yaml.safe_dump_all([d for d in docs if not is_crd(d)], sort_keys=False))
    Path(crds).write_text(yaml.safe_dump_all([d for d in docs if is_crd(d)], sort_keys=False))


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def policy(overlay: str, rendered: str) -> list[str]:
    docs = load(rendered)
    errors: list[str] = []
    production = overlay == "production"

    def err(obj: dict, message: str) -> None:
        errors.append(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {message}")

    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        labels = d.get("metadata", {}).get("labels", {})
        missing = [k for k in LABEL_KEYS if not labels.get(k)]
        if missing:
            err(d, f"missing labels {missing}")
        if not d.get("metadata", {}).get("namespace"):
            err(d, "no namespace")

    if by_kind.get("Job"):
        for job in by_kind["Job"]:
            if "ttlSecondsAfterFinished" not in job["spec"]:
                err(job, "a Job needs ttlSecondsAfterFinished")
    if by_kind.get("Secret"):
        for s in by_kind["Secret"]:
            err(s, "Secrets are created out of band, not rendered")

    accounts = {a["metadata"]["name"]: a for a in by_kind.get("ServiceAccount", [])}
    settings = {}
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["name"].startswith("pisgate-settings"):
            settings = cm.get("data", {})
    if settings.get("PISGATE__ADMIN__LISTEN") != "0.0.0.0:9090":
        errors.append("ConfigMap pisgate-settings: PISGATE__ADMIN__LISTEN must be 0.0.0.0:9090")

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        errors.append(f"expected one Deployment, found {len(deployments)}")
        return errors
    dep = deployments[0]
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    if not matches(dep["spec"]["selector"]["matchLabels"], pod_labels):
        err(dep, "selector does not match the pod template")
    if "app.kubernetes.io/version" in dep["spec"]["selector"]["matchLabels"]:
        err(dep, "the version label must not be in the (immutable) selector")
    if "replicas" in dep["spec"]:
        err(dep, "spec.replicas is set: the HPA owns the count")

    # The restricted Pod Security Standard and the service account.
    if spec.get("automountServiceAccountToken") is not False:
        err(dep, "automountServiceAccountToken must be false")
    sa = spec.get("serviceAccountName", "default")
    if sa == "default" or sa not in accounts:
        err(dep, f"service account {sa!r} is not the dedicated one")
    elif accounts[sa].get("automountServiceAccountToken") is not False:
        err(accounts[sa], "automountServiceAccountToken must be false")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        err(dep, "pod runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err(dep, "pod seccompProfile must be RuntimeDefault")
    containers = spec.get("containers", [])
    inits = spec.get("initContainers", [])
    for c in containers + inits:
        where = f"container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            err(dep, f"{where}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            err(dep, f"{where}: capabilities must drop ALL")
        if sc.get("capabilities", {}).get("add"):
            err(dep, f"{where}: adds capabilities")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(dep, f"{where}: readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            err(dep, f"{where}: privileged")
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in c.get("resources", {}).get(kind, {}):
                    err(dep, f"{where}: no {kind}.{res}")
        image = c["image"]
        if production and not DIGEST.search(image):
            err(dep, f"{where}: production images must be pinned by digest, not {image!r}")
        if not DIGEST.search(image):
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if tag in ("", "latest"):
                err(dep, f"{where}: image {image!r} has no fixed tag or digest")

    # The migration initContainer sees the database secret, and of the app secret only the
    # ledger key (it seals the rows a binding migration binds).
    volumes = {v["name"]: v for v in spec.get("volumes", [])}

    def secrets_of(volume: dict) -> set:
        if "secret" in volume:
            return {volume["secret"]["secretName"]}
        if "projected" in volume:
            found = set()
            for source in volume["projected"]["sources"]:
                if set(source) != {"secret"}:
                    found.add(f"non-secret source {sorted(source)}")
                else:
                    found.add(source["secret"]["name"])
            return found
        if "emptyDir" in volume:
            return set()
        return {f"volume type {sorted(k for k in volume if k != 'name')}"}

    migrate = [c for c in inits if c.get("args") == ["migrate"]]
    if len(migrate) != 1:
        err(dep, "expected one initContainer running `pisgate migrate`")
    for c in migrate:
        seen = set()
        for m in c.get("volumeMounts", []):
            volume = volumes[m["name"]]
            found = secrets_of(volume)
            if found == {APP_SECRET}:
                items = {i["key"] for i in volume["secret"].get("items", [])}
                if items != {"ledger-key"}:
                    err(dep, f"the migrate initContainer mounts {sorted(items) or 'all'} of {APP_SECRET}, not only ledger-key")
            seen |= found
        if not seen <= {DATABASE_SECRET, APP_SECRET} or DATABASE_SECRET not in seen:
            err(dep, f"the migrate initContainer mounts {sorted(seen)}, not only {DATABASE_SECRET} (and the ledger key)")
        if c.get("envFrom"):
            err(dep, "the migrate initContainer takes envFrom; give it only the database settings")
        for e in c.get("env", []):
            if not (e["name"].startswith("PISGATE__DATABASE__") or e["name"] == "PISGATE__LEDGER__KEY_FILE"):
                err(dep, f"the migrate initContainer gets {e['name']}")

    # The serving container: named ports, probes on the admin port, the drain timing.
    main = [c for c in containers if c["name"] == "pisgate"]
    if len(main) != 1:
        err(dep, "expected one container named pisgate")
        return errors
    main = main[0]
    ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
    if ports != {"http": 8080, "admin": 9090}:
        err(dep, f"ports must be http 8080 and admin 9090, are {ports}")
    for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")):
        got = main.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") != "admin":
            err(dep, f"{probe} must GET {path} on port admin, is {got}")
    sleep = main.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = int(settings.get("PISGATE__SERVER__SHUTDOWN_TIMEOUT_SECS", 20))
    if not sleep or sleep < 5:
        err(dep, "the preStop sleep must give the endpoint removal at least 5 s")
    elif sleep + drain + 5 > grace:
        err(dep, f"preStop {sleep}s + drain {drain}s + 5s margin exceed the grace period {grace}s")
    # A token refresh or a shopper's code exchange under way at the stop runs to its commit
    # (src/app.rs, FINISH_MARGIN): up to the longest bank call or code exchange (with its
    # retries) plus 15 s from the stop, past the drain if need be.
    bank_call = max([int(v) for k, v in settings.items()
                     if k.endswith("__REQUEST_TIMEOUT_SECS") and k != "PISGATE__SERVER__REQUEST_TIMEOUT_SECS"]
                    + [30])
    exchange = seconds(settings.get("PISGATE__CALLBACK__EXCHANGE_DEADLINE", "60s"))
    longest = max(bank_call, exchange)
    if sleep and sleep + max(drain, longest + 15) + 5 > grace:
        err(dep, f"preStop {sleep}s + the longest bank exchange {longest}s + 15s to store its "
                 f"answer + 5s margin exceed the grace period {grace}s")
    if not spec.get("topologySpreadConstraints"):
        err(dep, "no topologySpreadConstraints")

    # Services: select the pods, target named container ports.
    services = by_kind.get("Service", [])
    for s in services:
        if not matches(s["spec"].get("selector", {}), pod_labels):
            err(s, "selector does not match the pisgate pods")
        for p in s["spec"]["ports"]:
            if p.get("targetPort") not in ports:
                err(s, f"targetPort {p.get('targetPort')!r} is not a container port name")
    public = [s for s in services if any(p.get("targetPort") == "admin" for p in s["spec"]["ports"])
              and any(p.get("targetPort") == "http" for p in s["spec"]["ports"])]
    if public:
        err(public[0], "exposes the admin port beside the public one")

    # HPA, PDB.
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if len(hpas) != 1 or hpas[0]["apiVersion"] != "autoscaling/v2":
        errors.append("expected one autoscaling/v2 HorizontalPodAutoscaler")
    for h in hpas:
        ref = h["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] != dep["metadata"]["name"]:
            err(h, "does not scale the pisgate Deployment")
        if not any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"]["metrics"]):
            err(h, "does not scale on CPU")
        if production and h["spec"].get("minReplicas", 1) < 3:
            err(h, "production runs at least 3 replicas")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if production and not pdbs:
        errors.append("production needs a PodDisruptionBudget")
    for p in pdbs:
        if not matches(p["spec"]["selector"]["matchLabels"], pod_labels):
            err(p, "selector does not match the pisgate pods")

    # NetworkPolicy.
    policies = by_kind.get("NetworkPolicy", [])
    if not any(matches(n["spec"]["podSelector"].get("matchLabels", {}), pod_labels)
               and {"Ingress", "Egress"} <= set(n["spec"].get("policyTypes", []))
               for n in policies):
        errors.append("no NetworkPolicy governs ingress and egress of the pisgate pods")
    for n in policies:
        inbound = {(p.get("port"), p.get("protocol", "TCP"))
                   for rule in n["spec"].get("ingress", []) for p in rule.get("ports", [])}
        outbound = {(p.get("port"), p.get("protocol", "TCP"))
                    for rule in n["spec"].get("egress", []) for p in rule.get("ports", [])}
        for need in (("http", "TCP"), ("admin", "TCP")):
            if need not in inbound:
                err(n, f"no ingress rule for {need}")
        for need in ((53, "UDP"), (53, "TCP"), (5432, "TCP")):
            if need not in outbound:
                err(n, f"no egress rule for {need}")
        for e in egress_errors(n, settings):
            err(n, e)
        for rule in n["spec"].get("ingress", []):
            if not rule.get("from"):
                err(n, "an ingress rule open to every source")

    # Custom resources: the fields pisgate uses, and what they point at.
    for kind in ("ServiceMonitor", "PrometheusRule"):
        if len(by_kind.get(kind, [])) != 1:
            errors.append(f"expected one {kind}")
    for sm in by_kind.get("ServiceMonitor", []):
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            err(sm, "apiVersion must be monitoring.coreos.com/v1")
        allowed = {"jobLabel", "selector", "endpoints", "namespaceSelector"}
        if set(sm["spec"]) - allowed:
            err(sm, f"unexpected spec fields {sorted(set(sm['spec']) - allowed)}")
        if sm["spec"].get("jobLabel") != "app.kubernetes.io/name":
            err(sm, "jobLabel must be app.kubernetes.io/name (the rules expect job=\"pisgate\")")
        targets = [s for s in services
                   if matches(sm["spec"]["selector"].get("matchLabels", {}),
                              s["metadata"].get("labels", {}))]
        if len(targets) != 1:
            err(sm, f"selects {len(targets)} Services, expected the admin one")
        for e in sm["spec"]["endpoints"]:
            allowed = {"port", "path", "scheme", "interval", "scrapeTimeout"}
            if set(e) - allowed:
                err(sm, f"unexpected endpoint fields {sorted(set(e) - allowed)}")
            if e.get("path") != "/metrics" or e.get("scheme", "http") != "http":
                err(sm, "must scrape http /metrics")
            for t in targets:
                named = {p.get("name"): p.get("targetPort") for p in t["spec"]["ports"]}
                if named.get(e.get("port")) != "admin":
                    err(sm, f"port {e.get('port')!r} is not the admin port of {t['metadata']['name']}")
            if t := next(iter(targets), None):
                if t["metadata"].get("labels", {}).get("app.kubernetes.io/name") != "pisgate":
                    err(sm, "the job label would not be pisgate")
    for pr in by_kind.get("PrometheusRule", []):
        if pr["apiVersion"] != "monitoring.coreos.com/v1":
            err(pr, "apiVersion must be monitoring.coreos.com/v1")
        if set(pr["spec"]) != {"groups"}:
            err(pr, "spec must hold only groups")
        elif pr["spec"]["groups"] != yaml.safe_load(RULES.read_text())["groups"]:
            err(pr, "groups differ from deploy/prometheus/rules.yaml")
    return errors


def main(argv: list[str]) -> int:
    if argv[:1] == ["gen-rule"]:
        sys.stdout.write(gen_rule())
        return 0
    if argv[:1] == ["rule-in-sync"]:
        errors = rule_in_sync()
    elif argv[:1] == ["split"] and len(argv) == 4:
        split(*argv[1:])
        return 0
    elif argv[:1] == ["policy"] and len(argv) == 3:
        errors = policy(argv[1], argv[2])
    elif argv[:1] == ["egress-selftest"] and len(argv) == 2:
        errors = egress_selftest(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for e in errors:
        print(f"  FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
