//! The operator kit against a live process: every metric the Prometheus rules and the Grafana
//! dashboard read is one `/metrics` actually exposes (a rule over a misspelt name never fires;
//! a panel over one stays empty), and the objective's bucket is the one the exporter writes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use janitor_e2e::{metric, repo, scrape, seed_incident, Env, Kind};
use janitor_testkit::eventually;

/// A file of the repository (tests run in `tests/`).
fn repo_file(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The `janitor_…` metric names a text mentions (label values and strings included: a
/// quoted name is a name too).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("janitor_") {
        let starts_a_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if starts_a_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every query of the dashboard.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn the_rules_and_the_dashboard_read_only_metrics_that_metrics_exposes() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_incident(&env).await;
    // Producer and workers in one process: after its first cycle it has swept, enqueued,
    // applied, reaped and run a due pass, so every histogram has samples.
    let served = env.serve(
        &["run", "--listen", "127.0.0.1:0"],
        &[("JANITOR_SWEEP_INTERVAL_SECS", "3600")],
    );
    let mut text = String::new();
    eventually(
        "a reap, a due pass and a worker heartbeat",
        Duration::from_secs(60),
        || {
            text = scrape(&served.addr);
            let done = text.contains("janitor_reap_latency_seconds_count")
                && text.contains("janitor_due_pass_duration_seconds_count")
                && text.contains("janitor_due_index_pairs")
                && text.contains("janitor_queue_workers_alive ")
                && !text.contains("janitor_queue_workers_alive 0");
            async move { done }
        },
    )
    .await;
    served.stop();

    // Sample names, and the families `# TYPE` names (a histogram's own name).
    let exposed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(family) => family.split(' ').next(),
            None if l.starts_with('#') || l.is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_owned)
        .collect();
    assert!(exposed.len() >= 25, "{text}");
    // The objective's share selects this exact bucket label (`metric` panics on no sample).
    let within = metric(
        &text,
        "janitor_reap_latency_seconds_bucket",
        &[("le", "60")],
    );
    let reaps = metric(&text, "janitor_reap_latency_seconds_count", &[]);
    assert!(reaps >= 1.0 && within <= reaps, "{text}");

    let rules = repo_file("deploy/prometheus/janitor-rules.yaml");
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/janitor.json")).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    for (source, names) in [
        ("deploy/prometheus/janitor-rules.yaml", metric_names(&rules)),
        (
            "deploy/grafana/janitor.json",
            metric_names(&queries.join("\n")),
        ),
    ] {
        assert!(names.len() >= 8, "{source}: {names:?}");
        let missing: Vec<&String> = names.iter().filter(|n| !exposed.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{source} reads metrics /metrics does not expose: {missing:?}\nexposed: {exposed:?}"
        );
    }
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"sum by (le) (rate(janitor_reap_latency_seconds_bucket{le="60"}[5m])) / janitor:reaps:rate5m + x_janitor_not"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["janitor_reap_latency_seconds_bucket"]
    );
}
