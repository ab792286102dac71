//! The janitor processes a scenario starts, stopped however the scenario ends.
//!
//! A `std::process::Child` dropped is left running: a scenario that failed (or was
//! interrupted) used to leave its `janitor work` processes behind, polling their queue and
//! taking CPU from every run after it. And a worker that exited on its own (bad settings, a
//! crash) left the catch-up waiting for work nobody would do.

use std::process::Child;

use anyhow::bail;

/// Running janitor processes; killed on drop unless [`Procs::stop`] stopped them.
pub struct Procs(Vec<Child>);

impl Procs {
    pub fn new(children: Vec<Child>) -> Self {
        Self(children)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }

    /// Fails if any of them has exited: they run until stopped.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!("janitor (pid {}) exited early with {status}", child.id());
            }
        }
        Ok(())
    }

    /// Asks each to stop (SIGTERM, as an orchestrator would) and waits; fails if any exited
    /// with an error, with what it printed.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let children = std::mem::take(&mut self.0);
        for child in &children {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in children {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "janitor exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
