//! CPU seconds spent by each party of a scenario — Redis, PostgreSQL's server processes,
//! janitor's processes, and this process (whose sweeps are the catch-up's producer) — read
//! before and after a window. On a machine whose speed drifts by a fifth within an hour,
//! where a pair's CPU goes is steadier evidence than its rate alone.

use anyhow::Context as _;
use janitor_testkit::Kind;

use crate::Stage;

/// Cumulative CPU seconds, per party.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub redis: f64,
    /// PostgreSQL's server processes (all of them); 0 for SQLite, which runs inside
    /// janitor's processes.
    pub db: f64,
    /// The janitor processes asked about.
    pub janitor: f64,
    /// This process.
    pub bench: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            redis: self.redis - o.redis,
            db: self.db - o.db,
            janitor: self.janitor - o.janitor,
            bench: self.bench - o.bench,
        }
    }
}

impl Cpu {
    /// Reads every counter now; `janitor` sums the processes `pids` (none: 0).
    pub async fn read(stage: &Stage, kind: Kind, pids: &[u32]) -> anyhow::Result<Cpu> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut stage.sandbox.redis().await?)
            .await?;
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let mut janitor = 0.0;
        for &pid in pids {
            janitor += process_cpu(pid).context("janitor's CPU time")?;
        }
        Ok(Cpu {
            redis: field("used_cpu_user") + field("used_cpu_sys"),
            db: match kind {
                Kind::Postgres => postgres_cpu(),
                Kind::Sqlite => 0.0,
            },
            janitor,
            bench: process_cpu(std::process::id()).context("this process' CPU time")?,
        })
    }

    /// Every party's seconds together.
    pub fn total(&self) -> f64 {
        self.redis + self.db + self.janitor + self.bench
    }
}

/// The CPU seconds of each thread of process `pid` that runs an SQLite connection: sqlx
/// runs each on a thread of its own, named `sqlx-sqlite-worker-N` (the kernel keeps the
/// first 15 bytes). SQLite runs inside janitor, so these threads are its database's CPU;
/// the rest of the process is janitor's own work (judging, the queue, the runtime).
pub fn sqlite_threads(pid: u32) -> anyhow::Result<std::collections::BTreeMap<u32, f64>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the reads: it is then not counted.
        let Ok(comm) = std::fs::read_to_string(format!("{dir}/{tid}/comm")) else {
            continue;
        };
        if !comm.starts_with("sqlx-sqlite") {
            continue;
        }
        if let Some(seconds) = std::fs::read_to_string(format!("{dir}/{tid}/stat"))
            .ok()
            .and_then(|stat| stat_ticks(&stat, 11..13))
        {
            threads.insert(tid, seconds);
        }
    }
    Ok(threads)
}

/// The SQLite threads' CPU between two readings of [`sqlite_threads`]; `None` when a
/// thread of the first reading is gone from the second (its last seconds are lost, so the
/// sum would flatter the window: the caller falls back to the whole process).
pub fn sqlite_between(
    before: &std::collections::BTreeMap<u32, f64>,
    after: &std::collections::BTreeMap<u32, f64>,
) -> Option<f64> {
    if before.keys().any(|tid| !after.contains_key(tid)) {
        return None;
    }
    Some(
        after
            .iter()
            .map(|(tid, end)| end - before.get(tid).copied().unwrap_or(0.0))
            .sum(),
    )
}

/// User + system CPU seconds of one process, from `/proc`.
fn process_cpu(pid: u32) -> Option<f64> {
    stat_ticks(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
        11..13,
    )
}

/// The sum of some of the fields of a `/proc/{pid}/stat` line after the process' name
/// (11, 12: its own user and system ticks; 13, 14: those of its children that exited), in
/// seconds. The name is in parentheses and may hold spaces and parentheses itself.
fn stat_ticks(stat: &str, fields: std::ops::Range<usize>) -> Option<f64> {
    let all: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let mut ticks = 0u64;
    for i in fields {
        ticks += all.get(i)?.parse::<u64>().ok()?;
    }
    Some(ticks as f64 / 100.0)
}

/// CPU seconds of every PostgreSQL server process (the backends serving janitor, and the
/// server's own), plus those of the backends that exited (a connection closed during the
/// window: its CPU is in its parent's children's ticks).
fn postgres_cpu() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| {
            stat_ticks(
                &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
                11..15,
            )
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::stat_ticks;

    #[test]
    fn sqlite_threads_are_counted_only_when_none_ended_in_the_window() {
        use std::collections::BTreeMap;
        let before = BTreeMap::from([(10, 1.0), (11, 2.0)]);
        // A thread born in the window counts whole; the others by their difference.
        let after = BTreeMap::from([(10, 1.5), (11, 2.25), (12, 0.5)]);
        assert_eq!(super::sqlite_between(&before, &after), Some(1.25));
        let ended = BTreeMap::from([(10, 3.0)]);
        assert_eq!(super::sqlite_between(&before, &ended), None);
    }

    #[test]
    fn this_process_sqlite_connection_runs_on_a_thread_the_reading_finds() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection as _;
            let before = super::sqlite_threads(std::process::id()).unwrap();
            let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
                .await
                .unwrap();
            sqlx::query("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) SELECT SUM(i) FROM n")
                .execute(&mut conn)
                .await
                .unwrap();
            let after = super::sqlite_threads(std::process::id()).unwrap();
            assert!(
                after.keys().any(|tid| !before.contains_key(tid)),
                "no new SQLite thread: {before:?} → {after:?}"
            );
            conn.close().await.unwrap();
        });
    }

    #[test]
    fn ticks_are_read_after_a_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime ...
        let line = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 50 7 3 20 0";
        assert_eq!(stat_ticks(line, 11..13), Some(3.0));
        assert_eq!(stat_ticks(line, 11..15), Some(3.1));
        assert_eq!(stat_ticks("4242 (x) S 1", 11..13), None);
        assert_eq!(stat_ticks("no name", 11..13), None);
    }
}
