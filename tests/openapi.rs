//! The admin API's OpenAPI document: the committed copy is the one served, and schemathesis
//! (from the deploy venv `make validate-deploy` sets up) fuzzes a live `janitor serve` on
//! real Redis and PostgreSQL against it: no 5xx, every status and body documented (every
//! error a JSON `{"error": …}`), and every mutating endpoint refusing a request without the
//! token.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use janitor_e2e::{http, repo, run, seed_incident, Env, Kind};

const TOKEN: &str = "fuzz-t0ken";

#[tokio::test]
async fn the_committed_document_is_the_one_served() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let server = env.serve(&["serve", "--listen", "127.0.0.1:0"], &[]);
    let (status, served) = http(&server.addr, "GET", "/api/v1/openapi.json", None, "");
    server.stop();
    assert_eq!(status, 200);
    let committed = std::fs::read_to_string(repo().join("docs/openapi.json")).unwrap();
    assert!(
        served == committed,
        "docs/openapi.json is not what GET /api/v1/openapi.json serves: \
         run `make openapi` and commit it"
    );
    let printed = env.run(&["openapi"]);
    assert_eq!(printed.ok().stdout, served);

    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/",
        "/assets/{file}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/queue/stats",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/stuck",
        "/api/v1/audit",
        "/api/v1/jobs/retry",
        "/api/v1/jobs/purge",
        "/api/v1/sweep",
        "/api/v1/skip",
    ] {
        assert!(paths.contains(&path), "{path} is not documented: {paths:?}");
    }
    // Every change names the bearer scheme; every read is open.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = operation.get("security").is_some();
            assert_eq!(secured, method == "post", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let schemathesis = repo().join("target/deploy-venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: `make validate-deploy` installs it (`make test` runs it first)",
        schemathesis.display()
    );
    let env = Env::new(Kind::Postgres).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    // Something in every listing: done jobs and audit rows from one cycle, then the
    // incident again for the stuck report and the queue.
    seed_incident(&env).await;
    env.run(&["run", "--once"]).ok();
    env.run(&["sweep"]).ok();
    let server = env.serve(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("JANITOR_ADMIN_TOKEN", TOKEN)],
    );
    let report = env.workdir.path().join("schemathesis");
    let out = run(Command::new(&schemathesis)
        .current_dir(env.workdir.path())
        .env("NO_COLOR", "1")
        .args([
            "run",
            &format!("http://{}/api/v1/openapi.json", server.addr),
            "--checks",
            "all",
            // A schema cannot say which execution ids exist or which `since` texts parse:
            // a valid-looking request may still get its documented 4xx.
            "--exclude-checks",
            "positive_data_acceptance",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
            "--max-examples",
            "25",
            // One worker: CPython 3.11's `ast` can fail in threads (hypothesis parses
            // sources to describe its strategies), an error of the tool, not of the API.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report));
    assert_eq!(
        out.code,
        Some(0),
        "schemathesis found problems:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    // It generated and checked a real number of requests.
    let generated: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.trim().split_once(" generated, "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", out.stdout));
    assert!(generated >= 100, "{}", out.stdout);

    // Every documented change refuses a request without the token, or with a wrong one.
    let (_, served) = http(&server.addr, "GET", "/api/v1/openapi.json", None, "");
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    let mut changes = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("post").is_none() {
            continue;
        }
        changes += 1;
        for token in [None, Some("wrong")] {
            let (status, body) = http(&server.addr, "POST", path, token, "{}");
            assert_eq!(status, 401, "POST {path} with {token:?}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
    }
    server.stop();
    assert_eq!(changes, 4, "retry, purge, sweep, skip");
}
