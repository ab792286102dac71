//! Helpers for the end-to-end tests: run the real `janitor` binary with an isolated
//! environment, and shape Redis and the database the way the platform leaves them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use janitor_testkit::{redis_url, ts_ago, Kind, Sandbox, TestDb};

/// The `janitor` binary next to this test executable (`make test` builds it first).
pub fn janitor_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(format!("janitor{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p janitor`, which `make test` does)",
        bin.display()
    );
    bin
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "janitor failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// An isolated janitor environment: a [`Sandbox`] (its own database and slot prefixes)
/// and its own working directory, so no stray `janitor.toml` is picked up.
#[derive(Debug)]
pub struct Env {
    pub sandbox: Sandbox,
    pub workdir: tempfile::TempDir,
}

impl std::ops::Deref for Env {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Env {
    pub async fn new(kind: Kind) -> Self {
        Self {
            sandbox: Sandbox::new(kind).await.unwrap(),
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// A command with only this environment's settings (via env, as an operator would
    /// configure a deployment).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(janitor_bin());
        cmd.current_dir(self.workdir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("REDIS_URL", redis_url())
            .env("JANITOR_SLOT_PREFIX", &self.slot_prefix)
            .env("JANITOR_SLOT_META_PREFIX", &self.meta_prefix)
            .env("JANITOR_LOG_FORMAT", "text");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        run(self.command().args(args))
    }
}

/// Runs a prepared command and captures its output.
pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
