//! The platform's scheduler is Python: tests/python/test_skip_hook.py (standard library only)
//! hands skipped runs to a live janitor in the three documented ways — the README's HTTP client
//! (retrying through a lost connection and a 503, never through a refusal), `janitor skip` from
//! a subprocess, and nothing at all (the sweep) — and this test checks the queue afterwards:
//! every run enqueued exactly once, whatever was retried.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use janitor_e2e::{janitor_bin, repo, run, ts_ago, Env, Kind};

const TOKEN: &str = "hook-t0ken";

#[tokio::test]
async fn a_python_scheduler_hands_over_skipped_runs_each_enqueued_once() {
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    let now = env.redis_now().await.unwrap();
    let agent = "agent one";
    for (id, status, ago) in [
        ("skip-http", "skipped", 60.0),
        ("skip-flaky", "skipped", 60.0),
        ("skip-cli", "skipped", 60.0),
        ("skip-unhooked", "skipped", 11.0 * 60.0),
        ("run-live", "running", 60.0),
    ] {
        env.seed_run(id, agent, status, &ts_ago(now, ago, "naive"), Some("sess"))
            .await
            .unwrap();
    }
    let server = env.serve(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("JANITOR_ADMIN_TOKEN", TOKEN)],
    );
    // Python with exactly the settings janitor's own commands get (for `janitor skip` and
    // `janitor sweep` from the subprocess), plus where janitor listens.
    let settings = env.command();
    let mut python = Command::new("python3");
    python
        .env_clear()
        .envs(settings.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("JANITOR_URL", format!("http://{}", server.addr))
        .env("JANITOR_TOKEN", TOKEN)
        .env("JANITOR_BIN", janitor_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(env.workdir.path())
        .arg(repo().join("tests/python/test_skip_hook.py"));
    let python = run(&mut python);
    server.stop();
    assert_eq!(
        python.code,
        Some(0),
        "the Python scheduler's tests failed:\n{}\n{}",
        python.stdout,
        python.stderr
    );
    assert!(python.stderr.contains("Ran 6 tests"), "{}", python.stderr);

    let listed = env
        .run(&[
            "queue",
            "list",
            "--state",
            "scheduled",
            "--json",
            "--limit",
            "100",
        ])
        .ok()
        .json();
    let mut runs: Vec<String> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            assert_eq!(j["job"]["kind"], "finalize_skipped", "{j}");
            j["job"]["execution_id"].as_str().unwrap().to_owned()
        })
        .collect();
    runs.sort();
    assert_eq!(
        runs,
        [
            "skip-cli",
            "skip-early",
            "skip-flaky",
            "skip-http",
            "skip-unhooked"
        ],
        "{listed}"
    );
}

/// The README shows the client the test above runs, verbatim.
#[test]
fn the_readme_shows_the_tested_client() {
    let client = std::fs::read_to_string(repo().join("clients/python/janitor_skip.py")).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```python\n{client}```")),
        "README.md does not show clients/python/janitor_skip.py as it is"
    );
}
