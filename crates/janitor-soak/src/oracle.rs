//! The oracle: every run's truth against the rows, the slots left and `janitor_audit`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::platform::{Class, Fate, Truth};

/// Audit rows and the row of the run are compared on janitor's clock (Redis `TIME`) and the
/// platform's (the same machine's): allow them this much skew.
const CLOCK_TOLERANCE: f64 = 0.05;

/// What the stores hold once the soak has quiesced.
#[derive(Debug, Default)]
pub struct World {
    /// id → (status, error, completed_at)
    pub rows: HashMap<String, (String, Option<String>, Option<String>)>,
    /// execution id → activity states
    pub activities: HashMap<String, Vec<String>>,
    pub audit: Vec<AuditRow>,
    /// (agent, execution id) of every slot left.
    pub slots: HashSet<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub at: f64,
    pub action: String,
    pub execution_id: String,
    pub agent: String,
    pub change_key: String,
    pub status_after: String,
}

impl AuditRow {
    fn is_slot(&self) -> bool {
        matches!(self.action.as_str(), "slot_reclaimed" | "slot_released")
    }

    fn is_row(&self) -> bool {
        matches!(self.action.as_str(), "run_failed" | "run_cancelled")
    }
}

/// Every oracle figure; each list holds the offending run ids.
#[derive(Debug, Default, Serialize)]
pub struct Verdicts {
    pub false_reaps: Vec<String>,
    /// Alive runs the platform itself let down (their renewal, completion, session or row
    /// came too late): excluded from false reaps.
    pub lagged: Vec<String>,
    /// Of the lagged, those janitor acted on.
    pub lagged_reaped: Vec<String>,
    pub misses: Vec<String>,
    pub duplicates: Vec<String>,
    pub missing_audit: Vec<String>,
    /// Audit rows for a change the stores do not show.
    pub phantom_audit: Vec<String>,
    pub wrong_effects: Vec<String>,
    /// Runs whose `started` activity the platform wrote after janitor had finalized the run
    /// (it writes the row, then the activity, not in one transaction) and that is still open
    /// at the end (rule 8 closes it on a later sweep). Reported, not counted as janitor's
    /// wrong effect.
    pub late_activities: Vec<String>,
    /// Seconds from each dead run's deadline to janitor's last effect on it.
    pub latencies: Vec<f64>,
    /// The same, for the stale slots (runs that stopped silently holding their slot) due
    /// before the first fault.
    pub calm_latencies: Vec<f64>,
    /// Dead (and racing) runs still outstanding, for the quiesce wait.
    pub outstanding: usize,
}

impl Verdicts {
    pub fn failures(&self) -> usize {
        self.false_reaps.len()
            + self.misses.len()
            + self.duplicates.len()
            + self.missing_audit.len()
            + self.phantom_audit.len()
            + self.wrong_effects.len()
    }

    /// p in [0, 1] of the latencies, seconds.
    pub fn latency(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p)
    }
}

/// p in [0, 1] of `values` (nearest rank).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// What janitor must have done to a dead run by the end, by fate. `late_activity`: its
/// activity was opened after janitor finalized the run (see [`Verdicts::late_activities`]).
fn cleaned(truth: &Truth, world: &World, late_activity: bool) -> bool {
    let row = world.rows.get(&truth.id).map(|(s, _, _)| s.as_str());
    let slot_gone = !world
        .slots
        .contains(&(truth.agent.clone(), truth.id.clone()));
    let activity_closed = late_activity
        || world
            .activities
            .get(&truth.id)
            .is_none_or(|states| states.iter().all(|s| s != "started"));
    match truth.fate {
        Fate::Silent | Fate::NoSession => row == Some("failed") && slot_gone && activity_closed,
        Fate::Skipped => row == Some("cancelled"),
        Fate::LeaksSlot | Fate::NoRow => slot_gone,
        Fate::RacesDeadline => {
            matches!(row, Some("success") | Some("failed")) && slot_gone && activity_closed
        }
        _ => true,
    }
}

/// Checks every run. `end` is when the stores were read; `bound` how long after its
/// deadline a dead run may still be outstanding.
/// Stale slots due before `calm_until` are the calm latency sample.
pub fn judge(truths: &[Truth], world: &World, end: f64, bound: f64, calm_until: f64) -> Verdicts {
    let mut audit: HashMap<&str, Vec<&AuditRow>> = HashMap::new();
    for row in &world.audit {
        audit
            .entry(row.execution_id.as_str())
            .or_default()
            .push(row);
    }
    let mut v = Verdicts::default();
    for truth in truths {
        let id = truth.id.as_str();
        let mine: &[&AuditRow] = audit.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let row = world.rows.get(id);
        let status = row.map(|(s, _, _)| s.as_str());
        let slot_left = world
            .slots
            .contains(&(truth.agent.clone(), truth.id.clone()));

        // Duplicates: one change, one row; a run has at most one status change and its one
        // slot at most one removal.
        let row_changes = mine.iter().filter(|a| a.is_row()).count();
        let slot_changes = mine.iter().filter(|a| a.is_slot()).count();
        if row_changes > 1 || slot_changes > 1 {
            v.duplicates.push(truth.id.clone());
        }
        let keys: HashSet<&str> = mine
            .iter()
            .map(|a| a.change_key.as_str())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.len() < mine.iter().filter(|a| !a.change_key.is_empty()).count() {
            v.duplicates.push(truth.id.clone());
        }

        // Every change the stores show has its audit row, and every audit row its change.
        let janitor_status = matches!(status, Some("failed") | Some("cancelled"));
        if janitor_status && row_changes == 0 {
            v.missing_audit.push(truth.id.clone());
        }
        if row_changes > 0 && !janitor_status {
            v.phantom_audit.push(truth.id.clone());
        }
        let slot_removed_by_janitor = truth.acquired.is_some()
            && !slot_left
            && truth.released != Some(true)
            && !truth.release_uncertain;
        if slot_removed_by_janitor && slot_changes == 0 {
            v.missing_audit.push(truth.id.clone());
        }
        if slot_changes > 0 && (truth.released == Some(true) || slot_left) {
            v.phantom_audit.push(truth.id.clone());
        }

        // Wrong effects.
        let platform_finished = matches!(truth.completed, Some((_, true)));
        if platform_finished && status != Some("success") {
            v.wrong_effects.push(truth.id.clone());
        }
        if janitor_status {
            let (_, error, completed_at) = row.cloned().unwrap_or_default();
            if error.is_none_or(|e| e.trim().is_empty()) || completed_at.is_none() {
                v.wrong_effects.push(truth.id.clone());
            }
        }
        let terminal = matches!(status, Some("success" | "failed" | "cancelled"));
        let activity_started = world
            .activities
            .get(id)
            .is_some_and(|states| states.iter().any(|s| s == "started"));
        let mut late_activity = false;
        if terminal && activity_started {
            let finalized = mine
                .iter()
                .filter(|a| a.is_row())
                .map(|a| a.at)
                .fold(f64::NAN, f64::max);
            let opened_after = truth
                .activity_at
                .is_some_and(|at| at + CLOCK_TOLERANCE > finalized);
            if opened_after {
                late_activity = true;
                v.late_activities.push(truth.id.clone());
            } else {
                v.wrong_effects.push(truth.id.clone());
            }
        }
        // A lagged run's own rows and slots said it was due earlier than its plan.
        if truth.fate.class() != Class::Alive && truth.lagged.is_none() {
            if let Some(due) = truth.due {
                if mine.iter().any(|a| a.at + CLOCK_TOLERANCE < due) {
                    v.wrong_effects.push(truth.id.clone());
                }
            }
        }

        match truth.fate.class() {
            Class::Alive => {
                let completed_at = truth.completed.map(|(at, _)| at).unwrap_or(f64::MAX);
                let touched = !truth.harmed.is_empty()
                    || janitor_status
                    || row_changes > 0
                    || mine
                        .iter()
                        .any(|a| a.is_slot() && a.at + CLOCK_TOLERANCE < completed_at);
                if truth.lagged.is_some() {
                    v.lagged.push(truth.id.clone());
                    if touched {
                        v.lagged_reaped.push(truth.id.clone());
                    }
                } else if touched {
                    v.false_reaps.push(truth.id.clone());
                }
            }
            Class::Dead | Class::Racing => {
                let due = truth.due.unwrap_or(end);
                let done = cleaned(truth, world, late_activity);
                let last = mine.iter().map(|a| a.at).fold(f64::NAN, f64::max);
                if !done {
                    v.outstanding += 1;
                    if due + bound < end {
                        v.misses.push(truth.id.clone());
                    }
                } else if truth.fate.class() == Class::Dead && !last.is_nan() {
                    let latency = (last - due).max(0.0);
                    v.latencies.push(latency);
                    if truth.fate == Fate::Silent && due < calm_until {
                        v.calm_latencies.push(latency);
                    }
                    if latency > bound {
                        v.misses.push(truth.id.clone());
                    }
                }
            }
        }
    }
    for list in [
        &mut v.duplicates,
        &mut v.wrong_effects,
        &mut v.missing_audit,
        &mut v.phantom_audit,
        &mut v.misses,
    ] {
        list.sort();
        list.dedup();
    }
    v
}

/// Runs per fate.
pub fn fates(truths: &[Truth]) -> BTreeMap<Fate, usize> {
    let mut counts = BTreeMap::new();
    for truth in truths {
        *counts.entry(truth.fate).or_default() += 1;
    }
    counts
}

/// One offending run's whole story: what the platform did, what janitor wrote, what is left.
pub fn history(truth: &Truth, world: &World, base: f64) -> String {
    let mut out = format!(
        "run {} ({}) agent {:?} timeout {}s due {}\n",
        truth.id,
        truth.fate.label(),
        truth.agent,
        truth.timeout,
        truth
            .due
            .map(|d| format!("t+{:.3}s", d - base))
            .unwrap_or_else(|| "-".into()),
    );
    for line in &truth.history {
        out.push_str(&format!("  platform: {line}\n"));
    }
    for harm in &truth.harmed {
        out.push_str(&format!("  harmed:   {harm}\n"));
    }
    if let Some(lag) = &truth.lagged {
        out.push_str(&format!("  lagged:   {lag}\n"));
    }
    for a in world.audit.iter().filter(|a| a.execution_id == truth.id) {
        out.push_str(&format!(
            "  janitor:  t+{:.3}s {} -> {} ({})\n",
            a.at - base,
            a.action,
            a.status_after,
            a.change_key
        ));
    }
    out.push_str(&format!(
        "  finally:  row {:?}, activity {:?}, slot {}\n",
        world.rows.get(&truth.id),
        world.activities.get(&truth.id),
        if world
            .slots
            .contains(&(truth.agent.clone(), truth.id.clone()))
        {
            "present"
        } else {
            "gone"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(fate: Fate) -> Truth {
        Truth {
            id: "r1".into(),
            agent: "a".into(),
            fate,
            timeout: 5,
            row_at: Some(100.0),
            activity_at: Some(100.0),
            acquired: Some(100.0),
            anchor: Some(100.0),
            completed: None,
            released: None,
            release_uncertain: false,
            due: Some(108.0),
            harmed: Vec::new(),
            lagged: None,
            history: Vec::new(),
        }
    }

    fn audit(at: f64, action: &str, key: &str) -> AuditRow {
        AuditRow {
            at,
            action: action.into(),
            execution_id: "r1".into(),
            agent: "a".into(),
            change_key: key.into(),
            status_after: "failed".into(),
        }
    }

    fn failed_world(audit_rows: Vec<AuditRow>) -> World {
        let mut world = World::default();
        world.rows.insert(
            "r1".into(),
            ("failed".into(), Some("stale".into()), Some("t".into())),
        );
        world.audit = audit_rows;
        world
    }

    #[test]
    fn a_cleaned_dead_run_passes_with_its_latency() {
        let world = failed_world(vec![
            audit(109.0, "slot_reclaimed", "k1"),
            audit(109.5, "run_failed", "k2"),
        ]);
        let v = judge(&[truth(Fate::Silent)], &world, 200.0, 30.0, 0.0);
        assert_eq!(v.failures(), 0, "{v:?}");
        assert_eq!(v.latencies, vec![1.5]);
        assert!(v.calm_latencies.is_empty(), "due after the calm window");
        let v = judge(&[truth(Fate::Silent)], &world, 200.0, 30.0, 200.0);
        assert_eq!(v.calm_latencies, vec![1.5]);
    }

    #[test]
    fn an_alive_run_janitor_failed_is_a_false_reap_unless_it_lagged() {
        let world = failed_world(vec![audit(109.0, "run_failed", "k2")]);
        let mut t = truth(Fate::Completes);
        t.completed = Some((110.0, false));
        t.harmed.push("refused".into());
        let v = judge(std::slice::from_ref(&t), &world, 200.0, 30.0, 0.0);
        assert_eq!(v.false_reaps, vec!["r1".to_owned()]);
        t.lagged = Some("completed late".into());
        let v = judge(&[t], &world, 200.0, 30.0, 0.0);
        assert!(v.false_reaps.is_empty());
        assert_eq!(v.lagged_reaped, vec!["r1".to_owned()]);
    }

    #[test]
    fn a_dead_run_left_running_past_the_bound_is_a_miss() {
        let mut world = World::default();
        world
            .rows
            .insert("r1".into(), ("running".into(), None, None));
        world.slots.insert(("a".into(), "r1".into()));
        let v = judge(&[truth(Fate::Silent)], &world, 120.0, 30.0, 0.0);
        assert!(v.misses.is_empty(), "within the bound");
        assert_eq!(v.outstanding, 1);
        let v = judge(&[truth(Fate::Silent)], &world, 140.0, 30.0, 0.0);
        assert_eq!(v.misses, vec!["r1".to_owned()]);
    }

    #[test]
    fn two_removals_of_one_slot_are_a_duplicate_and_an_unaudited_change_is_missing() {
        let world = failed_world(vec![
            audit(109.0, "slot_reclaimed", "k1"),
            audit(109.1, "slot_released", "k3"),
            audit(109.5, "run_failed", "k2"),
        ]);
        let v = judge(&[truth(Fate::Silent)], &world, 200.0, 30.0, 0.0);
        assert_eq!(v.duplicates, vec!["r1".to_owned()]);
        let world = failed_world(vec![audit(109.0, "slot_reclaimed", "k1")]);
        let v = judge(&[truth(Fate::Silent)], &world, 200.0, 30.0, 0.0);
        assert_eq!(v.missing_audit, vec!["r1".to_owned()]);
    }

    #[test]
    fn acting_before_the_deadline_is_a_wrong_effect() {
        let world = failed_world(vec![
            audit(107.0, "slot_reclaimed", "k1"),
            audit(107.0, "run_failed", "k2"),
        ]);
        let v = judge(&[truth(Fate::Silent)], &world, 200.0, 30.0, 0.0);
        assert_eq!(v.wrong_effects, vec!["r1".to_owned()]);
    }

    #[test]
    fn an_activity_left_started_is_wrong_unless_the_platform_opened_it_after_the_fail() {
        let mut world = failed_world(vec![
            audit(109.0, "slot_reclaimed", "k1"),
            audit(109.5, "run_failed", "k2"),
        ]);
        world.activities.insert("r1".into(), vec!["started".into()]);
        let v = judge(&[truth(Fate::Silent)], &world, 200.0, 30.0, 0.0);
        assert_eq!(v.wrong_effects, vec!["r1".to_owned()]);
        let mut late = truth(Fate::Silent);
        late.activity_at = Some(110.0);
        let v = judge(&[late], &world, 200.0, 30.0, 0.0);
        assert!(v.wrong_effects.is_empty(), "{v:?}");
        assert_eq!(v.late_activities, vec!["r1".to_owned()]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = Verdicts {
            latencies: (1..=100).map(f64::from).collect(),
            ..Verdicts::default()
        };
        assert_eq!(v.latency(0.5), Some(50.0));
        assert_eq!(v.latency(0.99), Some(99.0));
        assert_eq!(v.latency(1.0), Some(100.0));
    }
}
