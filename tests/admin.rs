//! The admin JSON API of `janitor serve` (and `janitor run`): reads open, changes behind the
//! bearer token, bad requests answered with a 4xx and a JSON error.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};

use janitor_e2e::{http, seed_incident, Env, Kind};
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
    env.run(&["migrate"]).ok();
    seed_incident(&env).await;
    let mut server = env
        .command()
        .env("JANITOR_ADMIN_TOKEN", TOKEN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .to_owned();
    let a = addr.as_str();

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
        ("/api/v1/stuck?actionable=maybe", 400),
        ("/api/v1/jobs/fail_run:nobody:x:-", 404),
    ] {
        assert_eq!(call(a, "GET", path, None, "").0, want, "{path}");
    }

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

    std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}
