//! The processes the soak runs and kills: a Redis of its own (so it can be killed -9 and
//! restarted from its AOF without touching the machine's) and janitor's producer and
//! workers, restarted after every kill as an orchestrator would.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A `redis-server` child with an append-only file fsynced on every write: a kill -9 loses
/// nothing the platform was told was written, so the truth stays the truth.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut redis = Self {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        redis.up()?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) -> anyhow::Result<()> {
        let log = File::create(self.dir.join(format!("redis-{}.log", unique_suffix())))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting redis-server (is it installed? make services)")?;
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique_suffix() -> String {
    format!("{:x}", crate::platform::now().to_bits() & 0xffff_ffff)
}

/// What a janitor process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Worker => "worker",
        }
    }
}

/// One janitor process slot: the child currently in it, and how it fared.
#[derive(Debug)]
pub struct Janitor {
    pub role: Role,
    pub index: usize,
    child: Option<Child>,
    generation: u32,
    pub unexpected_exits: Vec<String>,
}

/// How to start janitor: its binary, the environment every process gets, where logs go.
#[derive(Debug, Clone)]
pub struct Launch {
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
}

impl Janitor {
    pub fn new(role: Role, index: usize) -> Self {
        Self {
            role,
            index,
            child: None,
            generation: 0,
            unexpected_exits: Vec::new(),
        }
    }

    pub fn name(&self) -> String {
        format!("{}-{}", self.role.as_str(), self.index)
    }

    /// Starts the slot's process, unless one is running already: a restart scheduled after
    /// a kill can come after another fault restarted it (a Redis restart or an outage starts
    /// a process while its store is down), and a second start used to orphan the first
    /// child, which outlived the soak and took CPU from whatever ran next.
    pub fn start(&mut self, launch: &Launch) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.generation += 1;
        let log_path = launch
            .dir
            .join(format!("{}.{}.log", self.name(), self.generation));
        let log = File::create(&log_path)?;
        let child = Command::new(&launch.bin)
            .args(["run", "--role", self.role.as_str(), "--listen", "off"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", launch.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, then wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the graceful exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A process that exited without being killed: recorded and started again (it must
    /// wait for its stores, never exit; an orchestrator would back off for minutes).
    pub fn check(&mut self, launch: &Launch) -> anyhow::Result<()> {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait()?,
            None => return Ok(()),
        };
        if let Some(status) = exited {
            self.child = None;
            self.unexpected_exits.push(format!(
                "{} (generation {}) exited by itself: {status}; log {}",
                self.name(),
                self.generation,
                launch
                    .dir
                    .join(format!("{}.{}.log", self.name(), self.generation))
                    .display()
            ));
            self.start(launch)?;
        }
        Ok(())
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        self.kill();
    }
}
