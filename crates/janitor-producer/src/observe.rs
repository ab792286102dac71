//! One observation pass over both stores.

use std::collections::HashMap;
use std::ops::ControlFlow;

use chrono::TimeDelta;
use futures::TryStreamExt as _;
use janitor_core::{
    decide, row_deadline, slot_deadline, ExecutionId, Policy, RowObservation, SlotObservation,
    Status, TimeoutSource, Timestamp, Verdict,
};
use janitor_store::{
    CorruptRow, CorruptSlot, ExecutionStore, RowEntry, SlotEntry, SlotStore, StoreError,
};
use serde::Serialize;

/// One judged (slot?, row?) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    pub slot: Option<SlotObservation>,
    pub row: Option<RowObservation>,
    /// When the pair becomes actionable by itself: the slot's deadline, a slotless run's
    /// deadline, or a skipped run's finalize time.
    pub deadline: Option<Timestamp>,
    /// Where the slot's TTL came from, when there is a slot.
    pub timeout_source: Option<TimeoutSource>,
    pub verdict: Verdict,
}

/// Everything a pass can find.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Pair(Pair),
    CorruptSlot(CorruptSlot),
    CorruptRow(CorruptRow),
    /// Every slot has been judged; open rows without a slot follow.
    EndOfSlots,
}

/// Counts of what a pass read and judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObserveStats {
    pub slots_scanned: u64,
    pub rows_scanned: u64,
    pub corrupt_slots: u64,
    pub corrupt_rows: u64,
    /// The sink stopped the pass early (the sweep had no more room to enqueue).
    pub truncated: bool,
    /// Verdict name → count.
    pub verdicts: std::collections::BTreeMap<&'static str, u64>,
}

/// Streams every slot and every open row, judges each pair at `now` and hands each finding
/// to `sink`, which may stop the pass early (`ControlFlow::Break`). Slots are read in `batch`-sized SCAN batches with their rows fetched by id;
/// then open rows are paged by id, and those holding a slot (already judged from the slot
/// side) are skipped.
pub async fn observe<E: From<StoreError>>(
    slots: &SlotStore,
    rows: &ExecutionStore,
    policy: &Policy,
    now: Timestamp,
    batch: usize,
    mut sink: impl AsyncFnMut(Finding) -> Result<ControlFlow<()>, E>,
) -> Result<ObserveStats, E> {
    let mut stats = ObserveStats::default();
    macro_rules! emit {
        ($finding:expr, $stats:expr) => {{
            let finding = $finding;
            match &finding {
                Finding::Pair(pair) => {
                    *$stats.verdicts.entry(pair.verdict.name()).or_default() += 1
                }
                Finding::CorruptSlot(_) => $stats.corrupt_slots += 1,
                Finding::CorruptRow(_) => $stats.corrupt_rows += 1,
                Finding::EndOfSlots => {}
            }
            if sink(finding).await?.is_break() {
                $stats.truncated = true;
                return Ok($stats);
            }
        }};
    }

    // Redis → SQL: every slot, with its row whatever that row's status.
    let mut scan = std::pin::pin!(slots.scan(batch));
    while let Some(entries) = scan.try_next().await.map_err(E::from)? {
        let mut found = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry {
                SlotEntry::Slot(s) => found.push(s.observation),
                SlotEntry::Corrupt(c) => emit!(Finding::CorruptSlot(c), stats),
            }
        }
        stats.slots_scanned += found.len() as u64;
        let ids: Vec<ExecutionId> = found.iter().map(|s| s.execution_id.clone()).collect();
        let mut by_id: HashMap<String, RowEntry> = rows
            .rows_by_ids(&ids)
            .await
            .map_err(E::from)?
            .into_iter()
            .map(|entry| (entry.id().to_owned(), entry))
            .collect();
        for slot in found {
            match by_id.remove(slot.execution_id.as_str()) {
                // A row we cannot read safely: report it; never judge its slot as rowless.
                Some(RowEntry::Corrupt(c)) => emit!(Finding::CorruptRow(c), stats),
                Some(RowEntry::Row(row)) => {
                    emit!(
                        Finding::Pair(judge(Some(slot), Some(row), now, policy)),
                        stats
                    )
                }
                None => emit!(Finding::Pair(judge(Some(slot), None, now, policy)), stats),
            }
        }
    }

    emit!(Finding::EndOfSlots, stats);

    // SQL → Redis: every open row that holds no slot.
    let mut cursor: Option<String> = None;
    loop {
        let page = rows
            .open_rows(cursor.as_deref(), batch as u32)
            .await
            .map_err(E::from)?;
        stats.rows_scanned += page.rows.len() as u64;
        let mut open = Vec::with_capacity(page.rows.len());
        for entry in page.rows {
            match entry {
                RowEntry::Row(row) => open.push(row),
                RowEntry::Corrupt(c) => emit!(Finding::CorruptRow(c), stats),
            }
        }
        let keys: Vec<_> = open
            .iter()
            .map(|r| (r.agent.clone(), r.execution_id.clone()))
            .collect();
        let held = slots.holds(&keys).await.map_err(E::from)?;
        for (row, holds) in open.into_iter().zip(held) {
            if !holds {
                emit!(Finding::Pair(judge(None, Some(row), now, policy)), stats);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(stats)
}

/// Runs the verdict and attaches the deadline an operator wants to see next to it.
pub fn judge(
    slot: Option<SlotObservation>,
    row: Option<RowObservation>,
    now: Timestamp,
    policy: &Policy,
) -> Pair {
    let verdict = decide(slot.as_ref(), row.as_ref(), now, policy);
    let (deadline, timeout_source) = match (&slot, &row) {
        (Some(s), r) => match slot_deadline(s, r.as_ref(), policy) {
            Some((deadline, source)) => (Some(deadline), Some(source)),
            None => (None, None),
        },
        (None, Some(r)) if r.status == Status::Running => (row_deadline(r, policy), None),
        (None, Some(r)) if r.status == Status::Skipped => (
            r.started_at
                .as_ref()
                .ok()
                .map(|s| *s + TimeDelta::seconds(policy.skipped_after_secs)),
            None,
        ),
        _ => (None, None),
    };
    Pair {
        slot,
        row,
        deadline,
        timeout_source,
        verdict,
    }
}
