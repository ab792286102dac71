//! The operator's page in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`): it loads, shows a seeded dead job with its error, refuses a retry
//! without the token, and with it the retry button moves the job back to due.
//!
//! Chromium is driven over W3C WebDriver by chromedriver. The client is the few JSON
//! calls this test needs over the suite's plain HTTP helper: a WebDriver crate would bring
//! its own HTTP and Unicode stacks into the build for six endpoints. Waiting is
//! chromedriver's implicit wait (an element lookup blocks until the element exists), so
//! the test never sleeps. `make test` installs the packages; the test skips, saying so, only
//! where they are missing.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use janitor_e2e::{http, seed_incident, Env, Kind};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-t0ken";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and the browsers it started, in a process group of their own: killed
/// together when this is dropped, so a failing test leaves no Chromium behind.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// A chromedriver process and one browser session on it.
struct Browser {
    _driver: Driver,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &str, chromedriver: &str) -> Self {
        let mut driver = Driver(
            Command::new(chromedriver)
                .arg("--port=0")
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // "ChromeDriver was started successfully on port 40123."
        let mut lines = BufReader::new(driver.0.stdout.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .map(|p| p.trim_end_matches('.').trim().to_owned())
            })
            .expect("chromedriver did not say where it listens");
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = format!("127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let (status, body) = http(
            &addr,
            "POST",
            "/session",
            None,
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}})
            .to_string(),
        );
        assert_eq!(status, 200, "new session: {body}");
        let session = parse(&body)["value"]["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        let browser = Self {
            _driver: driver,
            addr,
            session,
            _profile: profile,
        };
        // Element lookups wait up to 20 s for the element to appear.
        browser.call("POST", "timeouts", json!({"implicit": 20_000}));
        browser.call(
            "POST",
            "window/rect",
            json!({"width": 1280, "height": 1100}),
        );
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("/session/{}/{path}", self.session);
        let body = if method == "GET" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, reply) = http(&self.addr, method, &url, None, &body);
        assert_eq!(status, 200, "{method} {path}: {reply}");
        parse(&reply)["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "url", json!({ "url": url }));
    }

    /// The first element matching `css`, waiting for it to appear.
    fn find(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "element",
            json!({"using": "css selector", "value": css}),
        );
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.call("GET", &format!("element/{element}/text"), Value::Null)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &format!("element/{element}/click"), json!({}));
    }

    /// With `JANITOR_SCREENSHOTS=DIR`, saves the page as `DIR/NAME.png.b64` (base64 PNG, as
    /// WebDriver returns it; `base64 -d` turns it into the picture) for a person to look at.
    fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("JANITOR_SCREENSHOTS") else {
            return;
        };
        let png = self.call("GET", "screenshot", Value::Null);
        std::fs::write(
            Path::new(&dir).join(format!("{name}.png.b64")),
            png.as_str().unwrap(),
        )
        .unwrap();
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &format!("element/{element}/value"),
            json!({ "text": text }),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
            "",
        );
        // Then `driver` is dropped: the group goes.
    }
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The browser and its driver, from the environment or Debian's paths; `None` (with the
/// reason printed) when either is missing.
fn browser_binaries() -> Option<(String, String)> {
    let chromium = std::env::var("JANITOR_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    let driver = std::env::var("JANITOR_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
    for path in [&chromium, &driver] {
        if !Path::new(path).exists() {
            eprintln!(
                "SKIPPED: {path} is missing. `make test` installs it (apt-get install -y chromium chromium-driver); \
                 set JANITOR_CHROMIUM / JANITOR_CHROMEDRIVER to use others."
            );
            return None;
        }
    }
    Some((chromium, driver))
}

#[tokio::test]
async fn the_page_shows_a_dead_job_and_its_retry_button_re_drives_it() {
    let Some((chromium, chromedriver)) = browser_binaries() else {
        return;
    };
    let env = Env::new(Kind::Sqlite).await;
    env.run(&["migrate", "--create-platform-tables"]).ok();
    seed_incident(&env).await;
    env.run(&["sweep"]).ok();
    let dead = "reclaim_slot:agent:one:stale900:";
    let listed = env.run(&["queue", "list", "--state", "scheduled", "--json"]);
    listed.ok();
    let id = listed.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .find(|id| id.starts_with(dead))
        .unwrap_or_else(|| panic!("no reclaim job: {}", listed.stdout));
    let error = "gave up after 5 attempts: database is locked <script>alert(1)</script>";
    env.mark_dead(&id, 5, &json!({ "Err": error }).to_string())
        .await;
    let server = env.serve(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("JANITOR_ADMIN_TOKEN", TOKEN)],
    );

    let browser = Browser::start(&chromium, &chromedriver);
    browser.open(&format!("http://{}/", server.addr));
    browser.find("body[data-loaded='true']");

    // The overview and the dead job with its error, shown as text.
    assert_eq!(browser.text("[data-stat='dead'] .n"), "1");
    let row = format!("#dead-jobs tr[data-job-id='{id}']");
    let shown = browser.text(&row);
    assert!(shown.contains("reclaim_slot"), "{shown}");
    assert!(shown.contains(error), "the error, escaped: {shown}");
    // The stuck records carry their verdicts; the audit is empty (no worker ran).
    let stuck = browser.text("#stuck-records tr[data-execution='orphan']");
    assert!(stuck.contains("fail_orphan"), "{stuck}");
    assert!(browser.text("#audit-rows").contains("Nothing changed yet"));
    browser.screenshot("dead-job");

    // Without the token the server refuses and the job stays dead.
    browser.click(&format!("{row} button.retry"));
    let refused = browser.text("#flash[data-result='refused']");
    assert!(refused.contains("bearer token"), "{refused}");
    assert_eq!(
        env.run(&["queue", "stats", "--json"]).ok().json()["dead"],
        1
    );

    // With it the job moves back to due, and the page says so.
    browser.type_into("#token", TOKEN);
    browser.click(&format!("{row} button.retry"));
    let moved = browser.text("#flash[data-result='moved']");
    assert_eq!(moved, "Moved 1 job back to due.");
    assert!(browser.text("#dead-jobs").contains("No dead jobs"));
    browser.screenshot("re-driven");
    let shown = env.run(&["queue", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["job"]["state"], "scheduled", "{shown}");
    assert_eq!(shown["job"]["attempts"], 0, "{shown}");
    let stats = env.run(&["queue", "stats", "--json"]).ok().json();
    assert_eq!(stats["dead"], 0, "{stats}");
    assert!(stats["scheduled_due"].as_u64().unwrap() >= 1, "{stats}");

    drop(browser);
    server.stop();
}
