//! The simulated platform: runs with a fate drawn at random and recorded as truth, their
//! slots acquired, renewed and released and their rows and `started` activities written
//! exactly as the platform does it.
//!
//! Every store operation is retried until it succeeds (the platform waits out an outage
//! too); when waiting made a run miss a promise it depends on (a renewal, a completion, a
//! late session or row inside its window), the run is marked *lagged*: the oracle counts it
//! apart instead of calling what janitor did to it a false reap.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::db::Db;

/// What happens to a run. The truth the oracle checks janitor against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Completes before its deadline.
    Completes,
    /// Renews its slot, well past its original deadline, then completes.
    Renews,
    /// Gets its session late, within the grace.
    LateSession,
    /// Its slot is written before its row, within the grace.
    SlotFirst,
    /// Stops silently while holding its slot (after zero to two renewals).
    Silent,
    /// Never gets a session.
    NoSession,
    /// Skipped (the agent was busy at fire time): a row, no slot.
    Skipped,
    /// Stops renewing and writes `success` right around its deadline: either outcome.
    RacesDeadline,
    /// Finishes but leaks its slot.
    LeaksSlot,
    /// A slot with no row at all.
    NoRow,
}

/// Whether janitor must leave a run alone, must clean it up, or may do either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Alive,
    Dead,
    Racing,
}

impl Fate {
    pub const ALL: [Fate; 10] = [
        Fate::Completes,
        Fate::Renews,
        Fate::LateSession,
        Fate::SlotFirst,
        Fate::Silent,
        Fate::NoSession,
        Fate::Skipped,
        Fate::RacesDeadline,
        Fate::LeaksSlot,
        Fate::NoRow,
    ];

    /// Relative frequency, out of 100.
    fn weight(self) -> u32 {
        match self {
            Fate::Completes => 30,
            Fate::Renews => 10,
            Fate::LateSession => 8,
            Fate::SlotFirst => 8,
            Fate::Silent => 14,
            Fate::NoSession => 7,
            Fate::Skipped => 8,
            Fate::RacesDeadline => 6,
            Fate::LeaksSlot => 6,
            Fate::NoRow => 3,
        }
    }

    pub fn class(self) -> Class {
        match self {
            Fate::Completes | Fate::Renews | Fate::LateSession | Fate::SlotFirst => Class::Alive,
            Fate::Silent | Fate::NoSession | Fate::Skipped | Fate::LeaksSlot | Fate::NoRow => {
                Class::Dead
            }
            Fate::RacesDeadline => Class::Racing,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Fate::Completes => "alive: completes before its deadline",
            Fate::Renews => "alive: renews well past its first deadline",
            Fate::LateSession => "alive: session late, within the grace",
            Fate::SlotFirst => "alive: slot before row, within the grace",
            Fate::Silent => "dead: stops silently holding its slot",
            Fate::NoSession => "dead: never gets a session",
            Fate::Skipped => "dead: skipped",
            Fate::RacesDeadline => "racing: success right around its deadline",
            Fate::LeaksSlot => "dead: finishes but leaks its slot",
            Fate::NoRow => "dead: a slot with no row at all",
        }
    }

    fn draw(rng: &mut StdRng) -> Fate {
        let total: u32 = Fate::ALL.iter().map(|f| f.weight()).sum();
        let mut pick = rng.gen_range(0..total);
        for fate in Fate::ALL {
            if pick < fate.weight() {
                return fate;
            }
            pick -= fate.weight();
        }
        Fate::Completes
    }
}

/// The platform's thresholds as the truth knows them (what janitor is told, unless a
/// validation run misconfigures it).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub ttl_buffer: f64,
    pub missing_row_grace: f64,
    pub session_grace: f64,
    pub skipped_after: f64,
    pub renew_every: f64,
}

/// An agent of the simulated fleet and its execution timeout.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub name: String,
    pub timeout: i64,
}

/// Names with spaces, `/`, `:` and non-ASCII, next to plain ones.
pub fn fleet(rng: &mut StdRng) -> Vec<Agent> {
    [
        "alpha",
        "agent one",
        "team/research",
        "ns:beta",
        "café-ü",
        "日本-エージェント",
        "ops/night:shift",
        "worker-7",
        "O'Brien",
        "data pipeline/v2",
        "émile",
        "gamma",
    ]
    .into_iter()
    .map(|name| Agent {
        name: name.to_owned(),
        timeout: rng.gen_range(4..=9),
    })
    .collect()
}

/// One run's plan: drawn up front from the seed, so a seed replays the same platform.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub id: String,
    pub agent: usize,
    pub fate: Fate,
    /// Seconds after the soak's start.
    pub start_at: f64,
    /// A fraction in [0, 1) each fate turns into its own durations.
    pub u1: f64,
    pub u2: f64,
    /// Renewals before a silent run stops (0–2).
    pub renewals: u32,
    /// Whether started_at is written naive (the scheduler's style) or with a `Z`.
    pub naive: bool,
}

pub fn plans(rng: &mut StdRng, runs: usize, rate: f64, agents: usize) -> Vec<Plan> {
    (0..runs)
        .map(|i| Plan {
            id: format!("soak-{i:06}-{:08x}", rng.gen::<u32>()),
            agent: rng.gen_range(0..agents),
            fate: Fate::draw(rng),
            start_at: i as f64 / rate,
            u1: rng.gen(),
            u2: rng.gen(),
            renewals: rng.gen_range(0..=2),
            naive: rng.gen_bool(0.5),
        })
        .collect()
}

/// A seeded generator for one purpose (fleet, plans, faults) of one soak.
pub fn rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// What happened to one run, as the platform saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    pub id: String,
    pub agent: String,
    pub fate: Fate,
    pub timeout: i64,
    /// When the row was written (its `started_at`), unix seconds.
    pub row_at: Option<f64>,
    /// When the run's `started` activity insert committed (after the row's: the platform
    /// writes them one after the other, not in one transaction).
    pub activity_at: Option<f64>,
    /// The first slot score written.
    pub acquired: Option<f64>,
    /// The last slot score written (acquire or renewal).
    pub anchor: Option<f64>,
    /// When the platform's `success` compare-and-set ran, and whether it applied.
    pub completed: Option<(f64, bool)>,
    /// Whether the platform's own ZREM removed the slot (false: it was already gone).
    pub released: Option<bool>,
    /// The platform's release was retried, so who removed the slot is unknown.
    pub release_uncertain: bool,
    /// The instant from which janitor may (dead) or must not before (alive) act.
    pub due: Option<f64>,
    /// Harm the platform itself saw: its renewal refused, its slot or row taken.
    pub harmed: Vec<String>,
    /// Why the run's own actions came too late to hold janitor to its promise.
    pub lagged: Option<String>,
    pub history: Vec<String>,
}

impl Truth {
    fn note(&mut self, base: f64, what: impl AsRef<str>) {
        self.history
            .push(format!("t+{:.3}s {}", now() - base, what.as_ref()));
    }

    fn lag(&mut self, why: String) {
        if self.lagged.is_none() {
            self.lagged = Some(why);
        }
    }
}

/// Unix seconds now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn iso(at: f64, naive: bool) -> String {
    let t = janitor_core::from_unix_seconds(at).unwrap_or_default();
    if naive {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

async fn sleep_until(at: f64) {
    let wait = at - now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

/// The simulated platform's handles.
#[derive(Debug)]
pub struct Platform {
    pub redis: ConnectionManager,
    pub db: Db,
    pub timing: Timing,
    pub agents: Vec<Agent>,
    /// The soak's start, unix seconds.
    pub base: f64,
}

/// Retries a store operation until it succeeds; `Err` only never.
macro_rules! persist {
    ($op:expr) => {{
        let mut tries = 0u32;
        loop {
            match $op.await {
                Ok(v) => break v,
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(if tries < 10 { 50 } else { 200 }))
                        .await;
                }
            }
        }
    }};
}

impl Platform {
    fn slots_key(&self, agent: &str) -> String {
        format!("agent:slots:{agent}")
    }

    fn meta_key(&self, agent: &str, id: &str) -> String {
        format!("agent:slot:{agent}:{id}")
    }

    /// Plays one run to its end and returns what happened.
    pub async fn play(self: Arc<Self>, plan: Plan) -> Truth {
        let agent = self.agents[plan.agent].clone();
        let mut truth = Truth {
            id: plan.id.clone(),
            agent: agent.name.clone(),
            fate: plan.fate,
            timeout: agent.timeout,
            row_at: None,
            activity_at: None,
            acquired: None,
            anchor: None,
            completed: None,
            released: None,
            release_uncertain: false,
            due: None,
            harmed: Vec::new(),
            lagged: None,
            history: Vec::new(),
        };
        sleep_until(self.base + plan.start_at).await;
        let t = self.timing;
        let timeout = agent.timeout as f64;
        let life = timeout + t.ttl_buffer;
        match plan.fate {
            Fate::Completes => {
                self.insert_row(&mut truth, &plan, "running", Some("dispatched"))
                    .await;
                self.acquire(&mut truth).await;
                // Some finish inside the TTL buffer: legal, and what a janitor judging by
                // too short a TTL would fail.
                let at = self.anchor(&truth)
                    + (0.2 + 0.8 * plan.u1) * timeout
                    + 0.5 * plan.u2 * t.ttl_buffer;
                sleep_until(at).await;
                self.complete(&mut truth, true).await;
            }
            Fate::Renews => {
                self.insert_row(&mut truth, &plan, "running", Some("dispatched"))
                    .await;
                self.acquire(&mut truth).await;
                let end = self.anchor(&truth) + (1.5 + plan.u1) * life;
                while now() + t.renew_every < end {
                    sleep_until(self.anchor(&truth) + t.renew_every).await;
                    if !self.renew(&mut truth).await {
                        break;
                    }
                }
                sleep_until(end.min(self.anchor(&truth) + 0.5 * timeout)).await;
                self.complete(&mut truth, true).await;
            }
            Fate::LateSession => {
                self.insert_row(&mut truth, &plan, "running", None).await;
                self.acquire(&mut truth).await;
                let row_at = truth.row_at.unwrap_or_else(now);
                let session_at = row_at + (0.2 + 0.4 * plan.u1) * t.session_grace;
                sleep_until(session_at).await;
                self.set_session(&mut truth).await;
                let at = (self.anchor(&truth) + (0.3 + 0.6 * plan.u2) * timeout).max(now());
                sleep_until(at).await;
                self.complete(&mut truth, true).await;
            }
            Fate::SlotFirst => {
                self.acquire(&mut truth).await;
                let row_by = self.anchor(&truth) + (0.2 + 0.4 * plan.u1) * t.missing_row_grace;
                sleep_until(row_by).await;
                self.insert_row(&mut truth, &plan, "running", Some("dispatched"))
                    .await;
                let acquired = truth.acquired.unwrap_or_else(now);
                let committed = now();
                if committed > acquired + t.missing_row_grace {
                    truth.lag(format!(
                        "its row committed {:.3}s after the missing-row grace",
                        committed - acquired - t.missing_row_grace
                    ));
                }
                let at = (self.anchor(&truth) + (0.3 + 0.6 * plan.u2) * timeout).max(now());
                sleep_until(at).await;
                self.complete(&mut truth, true).await;
            }
            Fate::Silent => {
                self.insert_row(&mut truth, &plan, "running", Some("dispatched"))
                    .await;
                self.acquire(&mut truth).await;
                for _ in 0..plan.renewals {
                    sleep_until(self.anchor(&truth) + t.renew_every).await;
                    if !self.renew(&mut truth).await {
                        break;
                    }
                }
                truth.due = Some(self.anchor(&truth) + life);
                truth.note(self.base, "stops silently");
            }
            Fate::NoSession => {
                self.insert_row(&mut truth, &plan, "running", None).await;
                self.acquire(&mut truth).await;
                truth.due = truth.row_at.map(|at| at + t.session_grace);
                truth.note(self.base, "never gets a session");
            }
            Fate::Skipped => {
                self.insert_row(&mut truth, &plan, "skipped", None).await;
                truth.due = truth.row_at.map(|at| at + t.skipped_after);
            }
            Fate::RacesDeadline => {
                self.insert_row(&mut truth, &plan, "running", Some("dispatched"))
                    .await;
                self.acquire(&mut truth).await;
                truth.due = Some(self.anchor(&truth) + life);
                let at = self.anchor(&truth) + life + (plan.u1 * 2.0 - 1.0);
                sleep_until(at).await;
                self.complete(&mut truth, true).await;
            }
            Fate::LeaksSlot => {
                self.insert_row(&mut truth, &plan, "running", Some("dispatched"))
                    .await;
                self.acquire(&mut truth).await;
                let at = self.anchor(&truth) + (0.2 + 0.6 * plan.u1) * timeout;
                sleep_until(at).await;
                self.complete(&mut truth, false).await;
                truth.due = truth.completed.map(|(at, _)| at);
            }
            Fate::NoRow => {
                self.acquire(&mut truth).await;
                truth.due = truth.acquired.map(|at| at + t.missing_row_grace);
            }
        }
        truth
    }

    fn anchor(&self, truth: &Truth) -> f64 {
        truth.anchor.unwrap_or_else(now)
    }

    /// The row (and, for a run that starts, its `started` activity), as the platform writes
    /// them: `started_at` is now, in one of the two formats the platform mixes.
    async fn insert_row(
        &self,
        truth: &mut Truth,
        plan: &Plan,
        status: &str,
        session: Option<&str>,
    ) {
        let at = now();
        let started = iso(at, plan.naive);
        let sql = "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, \
                   message, triggered_by, claude_session_id) VALUES ($1, $2, $3, $4, $5, $6, 'schedule', $7)";
        let schedule = format!("sched-{}", plan.agent);
        persist!(self.db.execute(
            sql,
            &[
                Some(plan.id.as_str()),
                Some(schedule.as_str()),
                Some(truth.agent.as_str()),
                Some(status),
                Some(started.as_str()),
                Some("soak task"),
                session,
            ],
        ));
        if status == "running" {
            let sql =
                "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, \
                       started_at, triggered_by, related_execution_id, created_at) \
                       VALUES ($1, $2, 'schedule_start', 'started', $3, 'schedule', $4, $3)";
            let id = format!("act-{}", plan.id);
            persist!(self.db.execute(
                sql,
                &[
                    Some(id.as_str()),
                    Some(truth.agent.as_str()),
                    Some(started.as_str()),
                    Some(plan.id.as_str()),
                ],
            ));
            truth.activity_at = Some(now());
        }
        truth.row_at = Some(at);
        let lateness = now() - at;
        // A row that commits long after the started_at it carries looks, the moment it is
        // seen, as old as that started_at says: past its deadline with no slot yet, or past
        // the session grace. The platform broke its own promise (a row is written when the
        // run starts); the soak's compressed time makes a lock of seconds do this.
        let unseen_for = match session {
            _ if status != "running" => f64::MAX,
            None => self.timing.session_grace,
            Some(_) => truth.timeout as f64 + self.timing.ttl_buffer,
        };
        if lateness > unseen_for {
            truth.lag(format!(
                "its row committed {lateness:.3}s after the started_at it carries"
            ));
        }
        truth.note(
            self.base,
            format!("row {status} (session {session:?}) written, started_at {started} ({lateness:.3}s to commit)"),
        );
    }

    /// Acquire: `ZADD` score = now, the metadata hash with its own `timeout_seconds`, and
    /// `EXPIRE` = timeout + 300.
    async fn acquire(&self, truth: &mut Truth) {
        let (key, meta) = (
            self.slots_key(&truth.agent),
            self.meta_key(&truth.agent, &truth.id),
        );
        let score = persist!(async {
            let score = now();
            let mut conn = self.redis.clone();
            redis::pipe()
                .zadd(&key, &truth.id, score)
                .ignore()
                .hset_multiple(
                    &meta,
                    &[
                        ("started_at", iso(score, true)),
                        ("message_preview", "soak task".to_owned()),
                        ("slot_number", "1".to_owned()),
                        ("timeout_seconds", truth.timeout.to_string()),
                    ],
                )
                .ignore()
                .expire(&meta, truth.timeout + 300)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map(|()| score)
        });
        truth.acquired = Some(score);
        truth.anchor = Some(score);
        truth.note(self.base, format!("slot acquired, score {score:.3}"));
    }

    /// Renewal: `ZADD XX CH` with a fresh score, then re-`EXPIRE` of the hash. Returns
    /// false when the slot was gone (the run was reaped under it).
    async fn renew(&self, truth: &mut Truth) -> bool {
        let (key, meta) = (
            self.slots_key(&truth.agent),
            self.meta_key(&truth.agent, &truth.id),
        );
        let previous = self.anchor(truth);
        let (score, present) = persist!(async {
            let score = now();
            let mut conn = self.redis.clone();
            // A retried ZADD XX CH could count 0 for its own earlier write: ask ZSCORE.
            let (_, current): (i64, Option<f64>) = redis::pipe()
                .cmd("ZADD")
                .arg(&key)
                .arg("XX")
                .arg("CH")
                .arg(score)
                .arg(&truth.id)
                .cmd("ZSCORE")
                .arg(&key)
                .arg(&truth.id)
                .query_async(&mut conn)
                .await?;
            if current.is_some() {
                redis::cmd("EXPIRE")
                    .arg(&meta)
                    .arg(truth.timeout + 300)
                    .query_async::<i64>(&mut conn)
                    .await?;
            }
            Ok::<_, redis::RedisError>((score, current.is_some()))
        });
        if score > previous + truth.timeout as f64 + self.timing.ttl_buffer {
            truth.lag(format!(
                "renewed {:.3}s after its deadline",
                score - previous - truth.timeout as f64 - self.timing.ttl_buffer
            ));
        }
        if present {
            truth.anchor = Some(score);
            truth.note(self.base, format!("renewed, score {score:.3}"));
        } else {
            truth
                .harmed
                .push("renewal refused: the slot was gone".into());
            truth.note(self.base, "renewal refused: the slot was gone");
        }
        present
    }

    /// A late session: `claude_session_id` set on the still-running row.
    async fn set_session(&self, truth: &mut Truth) {
        let sql = "UPDATE schedule_executions SET claude_session_id = $1 \
                   WHERE id = $2 AND status = 'running' AND claude_session_id IS NULL";
        let session = format!("sess-{}", truth.id);
        let changed = persist!(self
            .db
            .execute(sql, &[Some(session.as_str()), Some(truth.id.as_str())]));
        let at = now();
        let grace_end = truth.row_at.unwrap_or(at) + self.timing.session_grace;
        if at > grace_end {
            truth.lag(format!(
                "its session came {:.3}s after the grace",
                at - grace_end
            ));
        }
        if changed == 0 {
            truth
                .harmed
                .push("session write refused: the row was no longer running".into());
        }
        truth.note(self.base, format!("session set (rows changed {changed})"));
    }

    /// Completion: the status compare-and-set (and the activity closed), then, unless the
    /// fate leaks it, `ZREM` + `DEL` of the slot.
    async fn complete(&self, truth: &mut Truth, release: bool) {
        let mut conn = self.redis.clone();
        let key = self.slots_key(&truth.agent);
        let before: Option<f64> = persist!(redis::cmd("ZSCORE")
            .arg(&key)
            .arg(&truth.id)
            .query_async::<Option<f64>>(&mut conn));
        if before.is_none() {
            truth
                .harmed
                .push("the slot was gone before the run completed".into());
        }
        let at = now();
        let finished = iso(at, false);
        let sql = "UPDATE schedule_executions SET status = 'success', completed_at = $1, \
                   response = 'done' WHERE id = $2 AND status = 'running'";
        let mut changed = persist!(self
            .db
            .execute(sql, &[Some(finished.as_str()), Some(truth.id.as_str())]));
        if changed == 0 {
            // A retried write may have committed the first time.
            let sql = "SELECT completed_at FROM schedule_executions WHERE id = $1";
            let mine = persist!(self.db.text(sql, &truth.id));
            if mine.as_deref() == Some(finished.as_str()) {
                changed = 1;
            }
        }
        let applied = changed == 1;
        let committed = now();
        if let Some(anchor) = truth.anchor {
            let deadline = anchor + truth.timeout as f64 + self.timing.ttl_buffer;
            if committed > deadline && truth.fate != Fate::RacesDeadline {
                truth.lag(format!(
                    "completed {:.3}s after its deadline",
                    committed - deadline
                ));
            }
        }
        if !applied && truth.fate != Fate::RacesDeadline {
            truth
                .harmed
                .push("the success write was refused: the row was no longer running".into());
        }
        let sql = "UPDATE agent_activities SET activity_state = 'completed', completed_at = $1 \
                   WHERE related_execution_id = $2 AND activity_state = 'started'";
        persist!(self
            .db
            .execute(sql, &[Some(finished.as_str()), Some(truth.id.as_str())]));
        truth.completed = Some((at, applied));
        truth.note(
            self.base,
            format!("success compare-and-set applied={applied}"),
        );
        if release {
            let meta = self.meta_key(&truth.agent, &truth.id);
            let attempts = std::sync::atomic::AtomicU32::new(0);
            let removed: i64 = persist!(async {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut conn = self.redis.clone();
                let (removed, _): (i64, i64) = redis::pipe()
                    .zrem(&key, &truth.id)
                    .del(&meta)
                    .query_async(&mut conn)
                    .await?;
                Ok::<_, redis::RedisError>(removed)
            });
            // A retried ZREM counts 0 for its own earlier removal: then who removed the
            // slot is unknown, and the oracle expects no audit row for it either way.
            let attempts = attempts.into_inner();
            truth.released = (attempts == 1).then_some(removed == 1);
            truth.release_uncertain = attempts > 1;
            truth.note(
                self.base,
                format!("slot released (ZREM removed {removed}, attempts {attempts})"),
            );
        }
    }
}
