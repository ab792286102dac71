#!/usr/bin/env bash
# Prints the Prometheus Operator's PrometheusRule for deploy/prometheus/janitor-rules.yaml:
# the same groups under `spec:`, so the Kubernetes copy can never drift from the tested one.
#   scripts/render-prometheus-rule.sh > deploy/k8s/monitoring/prometheus-rule.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
cat <<'HEAD'
# Rendered from deploy/prometheus/janitor-rules.yaml by scripts/render-prometheus-rule.sh:
# edit that file (and its tests), then render again. Do not edit this copy.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: janitor
  namespace: janitor
  labels:
    app.kubernetes.io/part-of: janitor
spec:
HEAD
# The rules file without its leading comment block, indented under spec.
sed -e '/^#/d' -e '/^$/d' -e 's/^/  /' deploy/prometheus/janitor-rules.yaml
