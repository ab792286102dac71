//! The admin JSON API of `janitor serve` (and `janitor run`): reads open, changes behind the
//! bearer token, bad requests answered with a 4xx and a JSON error.
#![allow(clippy::unwrap_used)]

use janitor_e2e::{http, metric, scrape, seed_incident, Env, Kind};
use serde_json::Value;

const TOKEN: &str = "t0ken";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// (status, JSON body), asserting an error body carries a message.
fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let (status, reply) = http(addr, method, path, token, body);
    let value = json(&reply);
    if status >= 400 {
        assert!(value["error"].is_string(), "{method} {path}: {reply}");
    }
    (status, value)
}

#[tokio::test]
async fn the_admin_api_reads_the_queue_and_re_drives_behind_a_token() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_incident(&env).await;
    let server = env.serve(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("JANITOR_ADMIN_TOKEN", TOKEN)],
    );
    let a = server.addr.as_str();

    // Reads.
    let (status, stats) = call(a, "GET", "/api/v1/queue/stats", None, "");
    assert_eq!((status, &stats["scheduled_due"]), (200, &Value::from(0)));
    let (status, stuck) = call(a, "GET", "/api/v1/stuck?actionable=true", None, "");
    assert_eq!(status, 200);
    assert!(!stuck["pairs"].as_array().unwrap().is_empty(), "{stuck}");
    for (path, want) in [
        ("/api/v1/jobs?state=bogus", 400),
        ("/api/v1/jobs?state=dead&limit=ten", 400),
        ("/api/v1/jobs?state=dead&kind=nope", 400),
        ("/api/v1/jobs?state=dead&extra=1", 400),
        ("/api/v1/audit?since=yesterday", 400),
        // schemathesis: a NUL in a filter was a 503 on PostgreSQL ("invalid byte sequence").
        ("/api/v1/audit?agent=a%00b", 400),
        ("/api/v1/audit?execution=run%0A1", 400),
        ("/api/v1/audit?execution=a:b", 400),
        ("/api/v1/stuck?actionable=maybe", 400),
        ("/api/v1/jobs/fail_run:nobody:x:-", 404),
    ] {
        assert_eq!(call(a, "GET", path, None, "").0, want, "{path}");
    }

    // The page and its assets; an unknown asset is a 404 with a JSON error.
    let (status, page) = janitor_e2e::http(a, "GET", "/", None, "");
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/assets/app.js\""), "{page}");
    for asset in ["/assets/app.js", "/assets/app.css"] {
        assert_eq!(
            janitor_e2e::http(a, "GET", asset, None, "").0,
            200,
            "{asset}"
        );
    }
    // Only the embedded files exist: no path reaches the file system.
    assert_eq!(
        janitor_e2e::http(a, "GET", "/assets/../Cargo.toml", None, "").0,
        404
    );
    assert_eq!(call(a, "GET", "/assets/nope.js", None, "").0, 404);

    // A sweep on demand: only with the token.
    assert_eq!(call(a, "POST", "/api/v1/sweep", None, "{}").0, 401);
    assert_eq!(call(a, "POST", "/api/v1/sweep", Some("wrong"), "{}").0, 401);
    assert_eq!(
        call(
            a,
            "POST",
            "/api/v1/sweep",
            Some(TOKEN),
            "{\"force\":\"yes\"}"
        )
        .0,
        400
    );
    // schemathesis: serde reads a struct from an array too, and `[]` was a sweep.
    assert_eq!(call(a, "POST", "/api/v1/sweep", Some(TOKEN), "[]").0, 400);
    assert_eq!(
        call(a, "POST", "/api/v1/sweep", Some(TOKEN), "[true]").0,
        400
    );
    let (status, report) = call(a, "POST", "/api/v1/sweep", Some(TOKEN), "{}");
    assert_eq!(status, 200, "{report}");
    let enqueued: u64 = report["kinds"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["enqueued"].as_u64().unwrap())
        .sum();
    let (_, page) = call(a, "GET", "/api/v1/jobs?state=scheduled&limit=500", None, "");
    assert_eq!(
        page["jobs"].as_array().unwrap().len() as u64,
        enqueued,
        "{page}"
    );

    // One job gives up, as the library leaves it; the API finds it, shows it, re-drives it.
    let dead = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .find(|id| id.starts_with("reclaim_slot:agent:one:stale900:"))
        .unwrap();
    env.mark_dead(
        &dead,
        5,
        r#"{"Err":"AbortError: gave up after 5 attempts: redis: timed out"}"#,
    )
    .await;
    let (_, listed) = call(
        a,
        "GET",
        "/api/v1/jobs?state=dead&kind=reclaim_slot",
        None,
        "",
    );
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{listed}");
    assert_eq!(
        jobs[0]["last_error"],
        "AbortError: gave up after 5 attempts: redis: timed out"
    );
    let (status, shown) = call(a, "GET", &format!("/api/v1/jobs/{dead}"), None, "");
    assert_eq!(
        (status, &shown["job"]["state"]),
        (200, &Value::from("dead")),
        "{shown}"
    );
    let retry = format!("{{\"ids\":[\"{dead}\"]}}");
    assert_eq!(call(a, "POST", "/api/v1/jobs/retry", None, &retry).0, 401);
    assert_eq!(
        call(a, "POST", "/api/v1/jobs/retry", Some(TOKEN), "{}").0,
        400
    );
    assert_eq!(
        call(a, "POST", "/api/v1/jobs/retry", Some(TOKEN), "{not json").0,
        400
    );
    let (status, moved) = call(a, "POST", "/api/v1/jobs/retry", Some(TOKEN), &retry);
    assert_eq!(
        (status, &moved["moved"][0]),
        (200, &Value::from(dead.as_str())),
        "{moved}"
    );
    let (_, again) = call(a, "POST", "/api/v1/jobs/retry", Some(TOKEN), &retry);
    assert_eq!(again["not_dead"][0], dead.as_str(), "idempotent: {again}");
    let (_, stats) = call(a, "GET", "/api/v1/queue/stats", None, "");
    assert_eq!(stats["dead"], 0);

    // Retention and the audit trail.
    let purge = |body: &str| call(a, "POST", "/api/v1/jobs/purge", Some(TOKEN), body);
    assert_eq!(purge(r#"{"state":"done","older_than":"soon"}"#).0, 400);
    assert_eq!(purge(r#"{"state":"scheduled","older_than":"1d"}"#).0, 400);
    let (status, report) = purge(r#"{"state":"done","older_than":"7d"}"#);
    assert_eq!(
        (status, &report["purged"]),
        (200, &Value::from(0)),
        "{report}"
    );
    let (status, trail) = call(a, "GET", "/api/v1/audit?since=1h&limit=10", None, "");
    assert_eq!(status, 200);
    assert!(
        trail.as_array().unwrap().is_empty(),
        "no worker ran: {trail}"
    );

    server.stop();
}

fn wait_for(lines: &mut impl Iterator<Item = String>, needle: &str) -> String {
    lines
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("the process ended before logging {needle:?}"))
}

#[tokio::test]
async fn metrics_count_what_the_producer_found_and_the_workers_did() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let verdicts = seed_incident(&env).await;
    let long = [("JANITOR_SWEEP_INTERVAL_SECS", "3600")];

    // A producer: one sweep, then its metrics.
    let (producer, mut logs) = env.serve_logged(
        &["run", "--role", "producer", "--listen", "127.0.0.1:0"],
        &long,
    );
    wait_for(&mut logs, "sweep done");
    let text = scrape(&producer.addr);
    producer.stop();
    assert_eq!(
        metric(&text, "janitor_sweeps_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        metric(&text, "janitor_sweep_duration_seconds_count", &[]),
        1.0
    );
    assert!(
        metric(
            &text,
            "janitor_sweep_items_scanned_total",
            &[("item", "slot")]
        ) >= 4.0
    );
    assert!(
        metric(
            &text,
            "janitor_sweep_items_scanned_total",
            &[("item", "row")]
        ) >= 6.0
    );
    let count = |verdict: &str| verdicts.values().filter(|v| **v == verdict).count() as f64;
    for (kind, verdicts) in [
        ("reclaim_slot", count("reclaim_stale_slot")),
        ("release_slot", count("release_leaked_slot")),
        (
            "fail_run",
            count("fail_orphan") + count("fail_never_launched"),
        ),
        ("finalize_skipped", count("finalize_skipped")),
    ] {
        assert!(verdicts >= 1.0, "{kind}");
        let found = metric(&text, "janitor_violations_found_total", &[("kind", kind)]);
        assert_eq!(found, verdicts, "{kind}");
        assert_eq!(
            metric(&text, "janitor_jobs_enqueued_total", &[("kind", kind)]),
            found
        );
    }
    let enqueued = metric(&text, "janitor_jobs_enqueued_total", &[]);
    assert_eq!(
        metric(&text, "janitor_queue_jobs", &[("state", "scheduled_due")]),
        enqueued
    );
    assert_eq!(
        metric(&text, "janitor_queue_jobs", &[("state", "dead")]),
        0.0
    );
    assert_eq!(metric(&text, "janitor_queue_up", &[]), 1.0);
    // A producer alone: no worker heartbeats on this queue.
    assert_eq!(metric(&text, "janitor_queue_workers_alive", &[]), 0.0);
    assert_eq!(metric(&text, "janitor_breaker_tripped", &[]), 0.0);
    assert!(metric(&text, "janitor_last_sweep_timestamp_seconds", &[]) > 1.7e9);
    assert!(
        text.contains("# HELP janitor_sweeps_total Sweeps finished"),
        "{text}"
    );

    // The stale run reports success after janitor judged it dead: a late completion.
    env.sql("UPDATE schedule_executions SET status = 'success' WHERE id = 'stale900'")
        .await
        .unwrap();

    // A worker: applies every job, then its metrics.
    let (worker, mut logs) = env.serve_logged(
        &["run", "--role", "worker", "--listen", "127.0.0.1:0"],
        &long,
    );
    for _ in 0..enqueued as usize {
        wait_for(&mut logs, "job done");
    }
    let text = scrape(&worker.addr);
    worker.stop();
    let applied = metric(&text, "janitor_actions_total", &[("outcome", "applied")]);
    let moot = metric(
        &text,
        "janitor_actions_total",
        &[("outcome", "no_longer_needed")],
    );
    assert_eq!(applied + moot, enqueued, "{text}");
    assert_eq!(metric(&text, "janitor_late_completions_total", &[]), 1.0);
    assert_eq!(
        metric(
            &text,
            "janitor_effects_total",
            &[("effect", "run_cancelled")]
        ),
        count("finalize_skipped")
    );
    assert_eq!(
        metric(&text, "janitor_effects_total", &[("effect", "run_failed")]),
        count("fail_orphan") + count("fail_never_launched"),
        "the late success was not failed"
    );
    // The orphan was failed some minutes after its deadline.
    let reaped = metric(
        &text,
        "janitor_reap_latency_seconds_count",
        &[("kind", "fail_run")],
    );
    assert!(reaped >= 1.0, "{text}");
    let late = metric(
        &text,
        "janitor_reap_latency_seconds_sum",
        &[("kind", "fail_run")],
    );
    assert!(late > 0.0, "{text}");
    // The library acks (in flight → done) in batches after the handlers return, so at
    // the last handler's log line some (or all) may not be done yet; once the worker has
    // stopped (it flushes its acks), all are.
    let done = metric(&text, "janitor_queue_jobs", &[("state", "done")]);
    assert!(done <= enqueued, "{done} of {enqueued}: {text}");
    let stats = env.run(&["queue", "stats", "--json"]).ok().json();
    assert_eq!(stats["done"].as_f64(), Some(enqueued), "{stats}");
    assert_eq!(
        metric(&text, "janitor_queue_jobs", &[("state", "dead")]),
        0.0
    );
    assert_eq!(
        metric(&text, "janitor_queue_jobs", &[("state", "scheduled_due")]),
        0.0
    );
    assert_eq!(
        metric(&text, "janitor_queue_oldest_due_age_seconds", &[]),
        0.0
    );
    assert!(
        text.contains("# TYPE janitor_reap_latency_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "janitor_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}
