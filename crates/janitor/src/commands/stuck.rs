//! `janitor stuck`: the operators' stuck-records query, made useful — every open run and
//! every slot without a live run, each with its deadline and the verdict the rules give.

use janitor_core::{format_timestamp, Timestamp, Verdict};
use janitor_producer::{observe, ActivityPair, Finding, ObserveStats, Pair, Scope};
use janitor_store::{CorruptRow, CorruptSlot, ExecutionStore, RuleOff, SlotStore};
use serde::Serialize;

use crate::cli::StuckArgs;
use crate::{context, settings::Settings};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    now: Timestamp,
    pairs: Vec<Pair>,
    /// How many pairs there were before [`Report::truncate`] (`pairs` holds them all
    /// otherwise).
    pairs_total: usize,
    corrupt_slots: Vec<CorruptSlotJson>,
    corrupt_rows: Vec<CorruptRowJson>,
    /// `started` activities rule 8 would close (the others are not listed).
    activities: Vec<ActivityPair>,
    /// The rules this database's schema switches off, and why.
    rules_off: Vec<RuleOff>,
    stats: ObserveStats,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CorruptSlotJson {
    key: String,
    member: String,
    reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CorruptRowJson {
    id: String,
    agent: String,
    status: String,
    reason: String,
}

pub async fn run(settings: &Settings, args: &StuckArgs) -> anyhow::Result<()> {
    let slots = context::slot_store(settings).await?;
    let rows = context::execution_store(settings).await?;
    let report = report(settings, &slots, &rows, args.actionable).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

impl Report {
    /// Keeps the first `limit` pairs (`pairs_total` still says how many there were).
    pub fn truncate(&mut self, limit: usize) {
        self.pairs.truncate(limit);
    }
}

/// Every open run and every slot without a live run (only actionable ones with
/// `actionable`), sorted by agent and run, with what could not be read.
pub async fn report(
    settings: &Settings,
    slots: &SlotStore,
    rows: &ExecutionStore,
    actionable: bool,
) -> anyhow::Result<Report> {
    let now = slots.server_time().await?;
    let mut pairs = Vec::new();
    let mut corrupt_slots = Vec::new();
    let mut corrupt_rows = Vec::new();
    let mut activities = Vec::new();
    let stats = observe::<janitor_store::StoreError>(
        slots,
        rows,
        &settings.policy,
        now,
        &Scope {
            batch: settings.scan_batch,
            // A report shows every activity rule 8 would close.
            activities: true,
            ..Scope::default()
        },
        async |finding| {
            match finding {
                Finding::Pair(pair) => {
                    if !actionable || pair.verdict.is_actionable() {
                        pairs.push(pair)
                    }
                }
                Finding::CorruptSlot(CorruptSlot {
                    key,
                    member,
                    reason,
                }) => corrupt_slots.push(CorruptSlotJson {
                    key,
                    member,
                    reason,
                }),
                Finding::CorruptRow(CorruptRow {
                    id,
                    agent,
                    status,
                    reason,
                }) => corrupt_rows.push(CorruptRowJson {
                    id,
                    agent,
                    status,
                    reason,
                }),
                Finding::Activity(found) => {
                    if found.verdict.is_actionable() {
                        activities.push(found)
                    }
                }
                Finding::RowsDone | Finding::End => {}
            }
            Ok(std::ops::ControlFlow::Continue(()))
        },
    )
    .await?;
    pairs.sort_by_key(sort_key);
    Ok(Report {
        now,
        pairs_total: pairs.len(),
        pairs,
        corrupt_slots,
        corrupt_rows,
        activities,
        rules_off: rows.schema().rules_off(),
        stats,
    })
}

/// Agent, then execution id: stable output an operator can diff.
fn sort_key(pair: &Pair) -> (String, String) {
    match (&pair.slot, &pair.row) {
        (Some(s), _) => (s.agent.to_string(), s.execution_id.to_string()),
        (None, Some(r)) => (r.agent.to_string(), r.execution_id.to_string()),
        (None, None) => Default::default(),
    }
}

fn print_table(report: &Report) {
    let header = [
        "AGENT",
        "EXECUTION",
        "STATUS",
        "SESSION",
        "AGE",
        "SLOT",
        "DEADLINE",
        "VERDICT",
    ];
    let mut lines: Vec<[String; 8]> = Vec::new();
    for pair in &report.pairs {
        let (agent, execution) = match (&pair.slot, &pair.row) {
            (Some(s), _) => (s.agent.to_string(), s.execution_id.to_string()),
            (None, Some(r)) => (r.agent.to_string(), r.execution_id.to_string()),
            (None, None) => continue,
        };
        let status = pair
            .row
            .as_ref()
            .map_or("(no row)".to_owned(), |r| r.status.to_string());
        let session = pair.row.as_ref().map_or("-".to_owned(), |r| {
            r.session
                .clone()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "(none)".into())
        });
        let started = match (&pair.row, &pair.slot) {
            (Some(r), _) if r.started_at.is_ok() => r.started_at.clone().ok(),
            (_, Some(s)) => janitor_core::from_unix_seconds(s.score),
            _ => None,
        };
        let age = started.map_or("?".to_owned(), |t| human(report.now - t));
        let slot = match (&pair.slot, pair.timeout_source) {
            (Some(_), Some(source)) => format!("yes ({})", serde_plain(&source)),
            (Some(_), None) => "yes".to_owned(),
            (None, _) => "no".to_owned(),
        };
        let deadline = pair.deadline.map_or("-".to_owned(), |d| {
            let left = d - report.now;
            if left.num_seconds() >= 0 {
                format!("{} (in {})", format_timestamp(d), human(left))
            } else {
                format!("{} ({} ago)", format_timestamp(d), human(-left))
            }
        });
        lines.push([
            agent,
            execution,
            status,
            session,
            age,
            slot,
            deadline,
            describe(&pair.verdict),
        ]);
    }
    if lines.is_empty() {
        println!("no open runs and no slots without a live run");
    } else {
        let mut widths = header.map(str::len);
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let print = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(w - cell.chars().count() + 2));
                }
            }
            println!("{}", out.trim_end());
        };
        print(&header.map(str::to_owned));
        for line in &lines {
            print(line);
        }
    }
    for c in &report.corrupt_slots {
        println!(
            "corrupt slot: key {:?} member {:?}: {}",
            c.key, c.member, c.reason
        );
    }
    for c in &report.corrupt_rows {
        println!(
            "corrupt row: id {:?} agent {:?} status {:?}: {}",
            c.id, c.agent, c.status, c.reason
        );
    }
    for a in &report.activities {
        println!(
            "activity {} ({}) started {}: close as {} ({})",
            a.activity.id,
            a.activity.agent,
            a.activity.started_at_raw,
            match &a.verdict {
                janitor_core::ActivityVerdict::Close { state, .. } => state,
                _ => &"?",
            },
            match &a.verdict {
                janitor_core::ActivityVerdict::Close {
                    reason: janitor_core::CloseReason::Stale,
                    ..
                } => "open past the stale-activity threshold with no run to finish it".to_owned(),
                janitor_core::ActivityVerdict::Close {
                    reason: janitor_core::CloseReason::RunFinished(s),
                    ..
                } => format!("its run is already {s}"),
                _ => String::new(),
            }
        );
    }
    for RuleOff { rule, why } in &report.rules_off {
        println!("rule off: {rule} ({why})");
    }
    let s = &report.stats;
    let verdicts: Vec<String> = s.verdicts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "\n{} slots and {} open rows scanned at {}; {}",
        s.slots_scanned,
        s.rows_scanned,
        format_timestamp(report.now),
        if verdicts.is_empty() {
            "nothing found".to_owned()
        } else {
            verdicts.join(" ")
        }
    );
}

/// The verdict in a few words.
fn describe(verdict: &Verdict) -> String {
    match verdict {
        Verdict::ReclaimStaleSlot { fail_row: true, .. } => "reclaim stale slot + fail run".into(),
        Verdict::ReclaimStaleSlot {
            fail_row: false, ..
        } => "reclaim stale slot".into(),
        Verdict::ReleaseLeakedSlot { reason } => match reason {
            janitor_core::LeakReason::RowTerminal(s) => format!("release leaked slot (run {s})"),
            janitor_core::LeakReason::RowMissing => "release leaked slot (no run)".into(),
        },
        Verdict::FailOrphan { .. } => "fail orphaned run (no slot)".into(),
        Verdict::FailNeverLaunched { .. } => "fail run: never got a session".into(),
        Verdict::FailBacklogExpired { .. } => "fail run: queued past the backlog expiry".into(),
        Verdict::RequeueLease { .. } => "re-queue: pull lease expired".into(),
        Verdict::FailLease { poison: true, .. } => {
            "fail run: pull lease expired at the re-delivery cap (poison)".into()
        }
        Verdict::FailLease { poison: false, .. } => "fail run: pull lease expired".into(),
        Verdict::FinalizeSkipped {
            as_failed: false, ..
        } => "finalize skipped as cancelled".into(),
        Verdict::FinalizeSkipped {
            as_failed: true, ..
        } => "finalize skipped as failed (the platform's rule)".into(),
        Verdict::Report(concern) => match concern {
            janitor_core::Concern::AwaitingSlot(s) => format!("report: {s}, waiting for a slot"),
            janitor_core::Concern::UnknownStatus(s) => {
                format!("report: unknown status {s:?}, left alone")
            }
            janitor_core::Concern::UnparseableStartedAt(t) => {
                format!("report: unparseable started_at {t:?}")
            }
            janitor_core::Concern::CorruptSlotScore(v) => format!("report: corrupt slot score {v}"),
            janitor_core::Concern::LeaseExpired(at) => format!(
                "report: lease expired {}: the platform re-queues it",
                format_timestamp(*at)
            ),
            janitor_core::Concern::UnparseableLease(t) => {
                format!("report: unparseable lease_expires_at {t:?}, left to the platform")
            }
            janitor_core::Concern::StaleSentinel(since) => format!(
                "report: backlog sentinel held since {}, left to the platform",
                format_timestamp(*since)
            ),
            janitor_core::Concern::AgentHasResult => {
                "report: the agent finished it moments ago; left to the platform".into()
            }
            janitor_core::Concern::AgentUnreachable => {
                "report: the agent did not answer; held until it does".into()
            }
        },
        Verdict::Alive { by, .. } => format!("alive: {}", by.describe()),
        Verdict::Healthy { .. } => "healthy".into(),
    }
}

fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `3d04h`, `1h05m`, `21m03s`, `45s`.
fn human(delta: chrono::TimeDelta) -> String {
    let secs = delta.num_seconds().max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use chrono::TimeDelta;

    #[test]
    fn human_durations() {
        assert_eq!(human(TimeDelta::seconds(45)), "45s");
        assert_eq!(human(TimeDelta::seconds(21 * 60 + 3)), "21m03s");
        assert_eq!(human(TimeDelta::seconds(3900)), "1h05m");
        assert_eq!(human(TimeDelta::seconds(3 * 86_400 + 4 * 3600)), "3d04h");
        assert_eq!(human(TimeDelta::seconds(-5)), "0s");
    }
}
