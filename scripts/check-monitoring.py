"""Checks janitor's monitoring files beyond what promtool does (run by validate-deploy.sh).

- deploy/grafana/janitor.json: a dashboard Grafana can import: unique panel ids, every
  panel on the 24-column grid with a Prometheus query per target under the `datasource`
  variable, and every recording rule it reads (`janitor:…`) defined in the rules file.
  (That every `janitor_…` metric it reads is exposed by /metrics is checked against a live
  process by `make test`: tests/operator_kit.rs.)
- deploy/prometheus/janitor-rules.yaml: every alert has a summary and a runbook pointing at
  a README heading that exists.
- deploy/k8s/monitoring/prometheus-rule.yaml: its groups are exactly the rules file's.

Usage: check-monitoring.py [--print-rule-spec FILE]  (writes the PrometheusRule's spec as a
plain rules file, for promtool).
"""

import json
import re
import sys

import yaml

RULES = "deploy/prometheus/janitor-rules.yaml"
RULE_CR = "deploy/k8s/monitoring/prometheus-rule.yaml"
DASHBOARD = "deploy/grafana/janitor.json"
README = "README.md"

problems = []


def anchor(heading):
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def check_rules():
    rules = yaml.safe_load(open(RULES))
    readme = open(README).read()
    anchors = {anchor(h) for h in re.findall(r"^#+ (.*)$", readme, re.M)}
    records, alerts = set(), []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                records.add(rule["record"])
            else:
                alerts.append(rule)
    for rule in alerts:
        notes = rule.get("annotations", {})
        if not notes.get("summary"):
            problems.append(f"alert {rule['alert']} has no summary")
        runbook = notes.get("runbook", "")
        m = re.fullmatch(r"README\.md#([\w-]+)", runbook)
        if not m:
            problems.append(f"alert {rule['alert']}: runbook {runbook!r} is not README.md#anchor")
        elif m.group(1) not in anchors:
            problems.append(f"alert {rule['alert']}: README.md has no heading #{m.group(1)}")
    cr = yaml.safe_load(open(RULE_CR))
    if cr["spec"] != rules:
        problems.append(f"{RULE_CR} is out of date: scripts/render-prometheus-rule.sh > {RULE_CR}")
    return records, len(alerts)


def check_dashboard(records):
    dash = json.load(open(DASHBOARD))
    ids = set()
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if "datasource" not in variables:
        problems.append("dashboard: no datasource variable")
    count = 0
    for panel in dash["panels"]:
        pid = panel.get("id")
        if pid in ids:
            problems.append(f"dashboard: panel id {pid} used twice")
        ids.add(pid)
        grid = panel.get("gridPos", {})
        if not all(k in grid for k in "hwxy") or grid["x"] + grid["w"] > 24:
            problems.append(f"dashboard: panel {panel.get('title')!r} is off the grid: {grid}")
        if panel["type"] == "row":
            continue
        count += 1
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"dashboard: panel {panel['title']!r} has no query")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"dashboard: panel {panel['title']!r} does not use $datasource")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.append(f"dashboard: panel {panel['title']!r} repeats a refId")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                problems.append(f"dashboard: panel {panel['title']!r} has an empty query")
            for name in re.findall(r"\bjanitor:[\w:]+", expr):
                if name not in records:
                    problems.append(f"dashboard: {panel['title']!r} reads {name}, which no rule records")
    return count


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--print-rule-spec":
        spec = yaml.safe_load(open(RULE_CR))["spec"]
        yaml.safe_dump(spec, open(sys.argv[2], "w"), sort_keys=False)
        return
    records, alerts = check_rules()
    panels = check_dashboard(records)
    if problems:
        for p in problems:
            print(f"check-monitoring: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"check-monitoring: {alerts} alerts with runbooks, {len(records)} recording rules, "
          f"{panels} dashboard panels")


main()
