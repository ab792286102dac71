//! One observation pass over both stores.

use std::collections::HashMap;
use std::ops::ControlFlow;

use chrono::TimeDelta;
use futures::StreamExt as _;
use janitor_core::{
    decide, decide_activity, row_deadline, slot_deadline, ActivityObservation, ActivityVerdict,
    AgentName, ExecutionId, Liveness, Policy, RowObservation, SlotObservation, SlotTimeout, Status,
    TimeoutSource, Timestamp, Verdict,
};
use janitor_store::{
    ActivityCursor, ActivityEntry, CensusReport, CensusWalk, CorruptRow, CorruptSlot,
    ExecutionStore, PairedSet, RowCursor, RowEntry, SlotEntry, SlotRead, SlotStore, StoreError,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// One judged (slot?, row?) pair.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Pair {
    pub slot: Option<SlotObservation>,
    pub row: Option<RowObservation>,
    /// When the pair becomes actionable by itself: the slot's deadline, a slotless run's
    /// deadline, or a skipped run's finalize time.
    pub deadline: Option<Timestamp>,
    /// Where the slot's TTL came from, when there is a slot.
    pub timeout_source: Option<TimeoutSource>,
    /// The evidence beside the stores the verdict used (markers, the agent's answer).
    pub live: Liveness,
    pub verdict: Verdict,
}

/// One judged `started` activity (rule 8).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ActivityPair {
    pub activity: ActivityObservation,
    pub verdict: ActivityVerdict,
}

/// Everything a pass can find. (Findings are handed on one at a time and nearly all are
/// pairs: boxing them would allocate per item for nothing.)
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Finding {
    Pair(Pair),
    Activity(ActivityPair),
    CorruptSlot(CorruptSlot),
    CorruptRow(CorruptRow),
    /// Every open row has been judged; the slot pass follows (it may first wait for the
    /// census of slot ZSETs). A sink that holds findings back may hand them on here.
    RowsDone,
    /// Every open row and every slot has been judged.
    End,
}

/// Counts of what a pass read and judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ObserveStats {
    pub slots_scanned: u64,
    pub rows_scanned: u64,
    pub corrupt_slots: u64,
    pub corrupt_rows: u64,
    /// `started` activities judged (rule 8).
    pub activities_scanned: u64,
    /// The sink stopped the pass early (the sweep had no more room to enqueue).
    pub truncated: bool,
    /// Where the next pass may resume its row pass when this one stopped in it: the
    /// start of the page it stopped on (what this pass handed on before it is not read
    /// again). `None` when it stopped elsewhere, or on its first page from the start.
    #[serde(skip)]
    pub resume: Option<RowCursor>,
    /// Verdict name → count.
    pub verdicts: std::collections::BTreeMap<&'static str, u64>,
    /// What the census walk did this pass (`None` when the pass stopped before it ended).
    pub census: Option<CensusReport>,
}

/// a few batches while Redis reads, SQL reads and judging overlap.
const READ_AHEAD: usize = 2;
/// Pages of open rows whose slots are being looked up at once.
const LOOKUPS_IN_FLIGHT: usize = 2;
/// Both, in a pass that may stop early: every page read past the stop is read again by
/// the next pass (a catch-up's passes stop a few pages in, and with the full read-ahead
/// read twice as many pages as they used).
const AHEAD_WHEN_STOPPING: usize = 1;
/// And its row pages are this fraction of the batch, for the same reason.
const PAGE_DIVISOR_WHEN_STOPPING: usize = 4;

/// A page of open rows, each with its run's slot when it holds one (or why it is
/// unreadable), after the cursor it was read from.
type RowBatch = (Option<RowCursor>, Vec<(RowEntry, SlotRead)>);

/// What a pass reads, and from where.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Rows and slots read per batch.
    pub batch: usize,
    /// Read every `started` activity rule 8 could close (its slow cadence), not only
    /// those of the runs janitor finalized lately.
    pub activities: bool,
    /// Start the row pass after this row: a catch-up's next pass goes on where the last
    /// one stopped ([`ObserveStats::resume`]) instead of reading again what it queued.
    pub after: Option<RowCursor>,
    /// The sink may stop the pass early (a forced catch-up pass, at the backlog cap): the
    /// census of slot ZSETs waits for the end of the row pass instead of running beside
    /// it, since a pass stopped in the row pass never uses it and the census walks the
    /// whole keyspace (every job's metadata too, in a catch-up).
    pub may_stop_early: bool,
    /// How much of the keyspace the census walks this pass (the census of slot ZSET keys
    /// is kept across passes: [`SlotStore::census_walk`]).
    pub census: CensusWalk,
}

/// A batch of slots not paired from the row side, with the rows of their runs (by id,
/// whatever their status).
type SlotBatch = (Vec<SlotEntry>, HashMap<String, RowEntry>);

/// Streams every open row and every slot, judges each pair at `now` and hands each finding
/// to `sink`, which may stop the pass early (`ControlFlow::Break`). Rule 8's activities are
/// judged too: with `scope.activities` every `started` one it could close, without only
/// those of the runs janitor finalized in the last [`FINALIZED_LOOKBACK_SECS`].
///
/// Each item is read once. The row pass pages the open rows by (agent, id) and looks up
/// their slots in Redis (a ZSET read per agent), counting the slots it paired per ZSET in a
/// scratch HASH in Redis and adding those ZSETs to the census, a SET of every slot ZSET key
/// kept across passes; meanwhile the census walks its share of the keyspace
/// (`scope.census`). The slot pass then reads the census and — filtered inside Redis by
/// those counts — reads only the ZSETs holding a slot no open row claimed (leaked, rowless
/// or corrupt ones), fetching their rows by id. Reading is pipelined: reader tasks fetch the next batches
/// while the caller judges the current one, so a pass takes about as long as its slowest
/// stage. Memory is bounded by a few batches.
///
/// A pass from `scope.after` judges only the open rows after it (and then every unpaired
/// slot, leaving alone those whose row is open: the earlier passes judged them). A pass
/// that may stop early reads smaller pages, less far ahead, and walks the keyspace only
/// once its row pass is done.
pub async fn observe<E: From<StoreError>>(
    slots: &SlotStore,
    rows: &ExecutionStore,
    policy: &Policy,
    now: Timestamp,
    scope: &Scope,
    sink: impl AsyncFnMut(Finding) -> Result<ControlFlow<()>, E>,
) -> Result<ObserveStats, E> {
    let paired = slots.paired_set();
    let pass = Pass { policy, now, scope };
    let result = observe_with(slots, rows, &paired, &pass, sink).await;
    // Best effort: the set expires by itself if this fails.
    if let Err(e) = slots.drop_paired(&paired).await {
        tracing::warn!(key = paired.key(), error = %e, "could not delete the sweep's scratch set");
    }
    result
}

/// What one observation reads and judges with.
struct Pass<'a> {
    policy: &'a Policy,
    now: Timestamp,
    scope: &'a Scope,
}

async fn observe_with<E: From<StoreError>>(
    slots: &SlotStore,
    rows: &ExecutionStore,
    paired: &PairedSet,
    pass: &Pass<'_>,
    mut sink: impl AsyncFnMut(Finding) -> Result<ControlFlow<()>, E>,
) -> Result<ObserveStats, E> {
    let &Pass { policy, now, scope } = pass;
    let Scope {
        batch,
        activities,
        ref after,
        may_stop_early,
        census: walk,
    } = *scope;
    let batch = batch.max(1);
    let mut stats = ObserveStats::default();
    let started = std::time::Instant::now();
    // Dropping the set (an early stop or an error) aborts the readers.
    let mut readers = JoinSet::new();
    macro_rules! emit {
        ($finding:expr, $stats:expr) => {{
            let finding = $finding;
            match &finding {
                Finding::Pair(pair) => {
                    if pair.slot.is_some() {
                        $stats.slots_scanned += 1;
                    }
                    *$stats.verdicts.entry(pair.verdict.name()).or_default() += 1
                }
                Finding::Activity(a) => {
                    $stats.activities_scanned += 1;
                    if a.verdict.is_actionable() {
                        *$stats.verdicts.entry("close_activity").or_default() += 1;
                    }
                }
                Finding::CorruptSlot(_) => $stats.corrupt_slots += 1,
                Finding::CorruptRow(_) => $stats.corrupt_rows += 1,
                Finding::RowsDone | Finding::End => {}
            }
            if sink(finding).await?.is_break() {
                $stats.truncated = true;
                return Ok($stats);
            }
        }};
    }

    // Every `started` activity (rule 8's slow cadence) is independent of both passes: read
    // alongside them. The few of the runs janitor finalized lately are read only once the
    // passes are done: a pass that stops early (a catch-up at the backlog cap, several a
    // second) never uses them, and at a catch-up's pace that read — every run janitor
    // failed in the lookback — was most of the database's work.
    let every_activity = activities.then(|| read_activities(&mut readers, rows, batch, true, now));

    // The census of slot ZSET keys walks (its share of) the keyspace while the row pass
    // runs: walking is most of the slot pass's cost, and it needs nothing from the row
    // pass. (A pass that may stop early walks once its row pass is done.)
    let start_census = || {
        let slots = slots.clone();
        AbortOnDrop(tokio::spawn(
            async move { slots.census_walk(walk, now).await },
        ))
    };
    let mut census = (!may_stop_early).then(start_census);

    // SQL → Redis: every open row (after `after`), with its slot if it holds one.
    let (page, ahead) = if may_stop_early {
        (
            (batch / PAGE_DIVISOR_WHEN_STOPPING).max(1),
            (AHEAD_WHEN_STOPPING, AHEAD_WHEN_STOPPING),
        )
    } else {
        (batch, (READ_AHEAD, LOOKUPS_IN_FLIGHT))
    };
    let mut row_batches = read_open_rows(
        &mut readers,
        slots,
        rows,
        paired,
        page,
        after.clone(),
        ahead,
    );
    while let Some(read) = row_batches.recv().await {
        let (from, page) = read.map_err(E::from)?;
        // A stop on this page resumes at its start: what it handed on before the stop is
        // read again, never what it did not reach.
        stats.resume = from;
        stats.rows_scanned += page.len() as u64;
        let mut judged = Vec::with_capacity(page.len());
        for (entry, slot) in page {
            match (entry, slot) {
                (RowEntry::Corrupt(c), _) => emit!(Finding::CorruptRow(c), stats),
                // The run's slot cannot be read: never judge the run as slotless.
                (RowEntry::Row(_), Err(c)) => emit!(Finding::CorruptSlot(c), stats),
                (RowEntry::Row(row), Ok(slot)) => judged.push((slot, Some(row))),
            }
        }
        for pair in judge_all(slots, judged, now, policy)
            .await
            .map_err(E::from)?
        {
            emit!(Finding::Pair(pair), stats)
        }
    }

    stats.resume = None;
    tracing::debug!(
        rows = stats.rows_scanned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "row pass done"
    );
    emit!(Finding::RowsDone, stats);

    let census = census.get_or_insert_with(start_census);
    match (&mut census.0).await {
        Ok(result) => stats.census = Some(result.map_err(E::from)?),
        Err(e) => {
            return Err(E::from(StoreError::Protocol(format!(
                "the census of slot ZSETs stopped: {e}"
            ))))
        }
    }

    // Redis → SQL: the slots of the ZSETs where the row pass did not pair every slot, with
    // their rows whatever their status. A slot whose row is open was judged with it above
    // (or its run started after that row was read: the next pass judges it).
    let mut slot_batches = read_unpaired_slots(&mut readers, slots, rows, paired, batch);
    while let Some(read) = slot_batches.recv().await {
        let (entries, mut by_id) = read.map_err(E::from)?;
        let mut judged = Vec::with_capacity(entries.len());
        for entry in entries {
            let slot = match entry {
                SlotEntry::Slot(s) => s.observation,
                SlotEntry::Corrupt(c) => {
                    emit!(Finding::CorruptSlot(c), stats);
                    continue;
                }
            };
            match by_id.remove(slot.execution_id.as_str()) {
                Some(RowEntry::Row(row)) if !row.status.is_terminal() => {}
                // Reported by the row pass when open.
                Some(RowEntry::Corrupt(c)) if !Status::parse(&c.status).is_terminal() => {}
                // A row we cannot read safely: report it; never judge its slot as rowless.
                Some(RowEntry::Corrupt(c)) => emit!(Finding::CorruptRow(c), stats),
                Some(RowEntry::Row(row)) => judged.push((Some(slot), Some(row))),
                None => judged.push((Some(slot), None)),
            }
        }
        for pair in judge_all(slots, judged, now, policy)
            .await
            .map_err(E::from)?
        {
            emit!(Finding::Pair(pair), stats)
        }
    }

    tracing::debug!(
        slots = stats.slots_scanned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "slot pass done"
    );

    // Activities left `started` that rule 8 can close: paged by id, with their runs.
    let mut activity_pages =
        every_activity.unwrap_or_else(|| read_activities(&mut readers, rows, batch, false, now));
    while let Some(read) = activity_pages.recv().await {
        for entry in read.map_err(E::from)? {
            match entry {
                ActivityEntry::Activity(activity) => {
                    let verdict = decide_activity(&activity, now, policy);
                    emit!(Finding::Activity(ActivityPair { activity, verdict }), stats)
                }
                ActivityEntry::Corrupt(c) => emit!(Finding::CorruptRow(c), stats),
            }
        }
    }

    emit!(Finding::End, stats);
    Ok(stats)
}

/// Aborts the task when dropped (a pass that stops early or fails leaves nothing running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends each result down `tx`; stops after the first error or once the receiver is gone.
async fn forward<T>(tx: &mpsc::Sender<Result<T, StoreError>>, item: Result<T, StoreError>) -> bool {
    let failed = item.is_err();
    tx.send(item).await.is_ok() && !failed
}

/// How far back a sweep that does not read every activity looks for activities of runs
/// janitor finalized (see [`ExecutionStore::activities_of_finalized`]): several sweep
/// intervals, so a sweep that fails or runs late loses none.
const FINALIZED_LOOKBACK_SECS: i64 = 600;

/// Starts the reader of the activities rule 8 can close: with `every`, every `started`
/// activity page by page; without, only those of the runs janitor finalized lately.
fn read_activities(
    readers: &mut JoinSet<()>,
    rows: &ExecutionStore,
    batch: usize,
    every: bool,
    now: Timestamp,
) -> mpsc::Receiver<Result<Vec<ActivityEntry>, StoreError>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let rows = rows.clone();
    if !every {
        readers.spawn(async move {
            let since = now - TimeDelta::seconds(FINALIZED_LOOKBACK_SECS);
            let found = rows.activities_of_finalized(since, batch as u32).await;
            forward(&tx, found).await;
        });
        return rx;
    }
    readers.spawn(async move {
        let mut after: Option<ActivityCursor> = None;
        loop {
            let page = rows.open_activities(after.as_ref(), batch as u32).await;
            let next = page.as_ref().ok().and_then(|(_, next)| next.clone());
            if !forward(&tx, page.map(|(entries, _)| entries)).await {
                return;
            }
            match next {
                Some(next) => after = Some(next),
                None => return,
            }
        }
    });
    rx
}

/// Starts the row pass's readers: keyset pages of open rows flow to a task that looks up
/// their runs' slots (and records them as paired).
fn read_open_rows(
    readers: &mut JoinSet<()>,
    slots: &SlotStore,
    rows: &ExecutionStore,
    paired: &PairedSet,
    batch: usize,
    after: Option<RowCursor>,
    (read_ahead, lookups): (usize, usize),
) -> mpsc::Receiver<Result<RowBatch, StoreError>> {
    let (paged_tx, paged_rx) = mpsc::channel(read_ahead);
    let (joined_tx, joined_rx) = mpsc::channel(read_ahead);
    let pager = rows.clone();
    readers.spawn(async move {
        let mut cursor = after;
        loop {
            let page = pager.open_rows(cursor.as_ref(), batch as u32).await;
            let next = page.as_ref().ok().and_then(|p| p.next.clone());
            let from = cursor.clone();
            if !forward(&paged_tx, page.map(|p| (from, p.rows))).await {
                return;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return,
            }
        }
    });
    let (slots, rows, paired) = (slots.clone(), rows.clone(), paired.clone());
    readers.spawn(async move {
        let pages = futures::stream::unfold(paged_rx, |mut rx| async move {
            rx.recv().await.map(|read| (read, rx))
        });
        // Pages' lookups overlap (in order): Redis serves one while janitor decodes another.
        let joined = pages
            .map(|read| {
                let (slots, rows, paired) = (slots.clone(), rows.clone(), paired.clone());
                async move {
                    match read {
                        Ok((from, page)) => {
                            let mut page = pair_page(&slots, &paired, page).await?;
                            read_needed_timeouts(&rows, &mut page).await?;
                            Ok((from, page))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(lookups);
        let mut joined = std::pin::pin!(joined);
        while let Some(joined) = joined.next().await {
            if !forward(&joined_tx, joined).await {
                return;
            }
        }
    });
    joined_rx
}

/// One page of open rows with their slots.
async fn pair_page(
    slots: &SlotStore,
    paired: &PairedSet,
    page: Vec<RowEntry>,
) -> Result<Vec<(RowEntry, SlotRead)>, StoreError> {
    let runs: Vec<_> = page
        .iter()
        .filter_map(|entry| match entry {
            RowEntry::Row(r) => Some((r.agent.clone(), r.execution_id.clone())),
            RowEntry::Corrupt(_) => None,
        })
        .collect();
    let mut found = slots.pair_open(paired, &runs).await?.into_iter();
    Ok(page
        .into_iter()
        .map(|entry| {
            let slot = match entry {
                RowEntry::Row(_) => found.next().unwrap_or(Ok(None)),
                RowEntry::Corrupt(_) => Ok(None),
            };
            (entry, slot)
        })
        .collect())
}

/// Reads the effective timeouts a page of open rows was read without, for the runs whose
/// deadline needs one: those with no slot, or whose slot declares no usable timeout of its
/// own (one query for the page; none at all when every slot declares its timeout).
async fn read_needed_timeouts(
    rows: &ExecutionStore,
    page: &mut [(RowEntry, SlotRead)],
) -> Result<(), StoreError> {
    let mut needed: Vec<&mut RowObservation> = page
        .iter_mut()
        .filter_map(|(entry, slot)| match (entry, slot) {
            (RowEntry::Row(row), Ok(slot)) if row.timeout_unread => {
                let declared = slot
                    .as_ref()
                    .is_some_and(|s| matches!(s.timeout, SlotTimeout::Declared(_)));
                (!declared).then_some(row)
            }
            _ => None,
        })
        .collect();
    rows.read_timeouts(&mut needed).await
}

/// Starts the slot pass's readers: batches of unpaired slots flow to a task that fetches
/// their rows.
fn read_unpaired_slots(
    readers: &mut JoinSet<()>,
    slots: &SlotStore,
    rows: &ExecutionStore,
    paired: &PairedSet,
    batch: usize,
) -> mpsc::Receiver<Result<SlotBatch, StoreError>> {
    let (scanned_tx, mut scanned_rx) = mpsc::channel(READ_AHEAD);
    let (joined_tx, joined_rx) = mpsc::channel(READ_AHEAD);
    let scan = slots.scan_unpaired(batch, paired);
    readers.spawn(async move {
        let mut scan = std::pin::pin!(scan);
        while let Some(read) = scan.next().await {
            if !forward(&scanned_tx, read).await {
                return;
            }
        }
    });
    let rows = rows.clone();
    readers.spawn(async move {
        while let Some(read) = scanned_rx.recv().await {
            let joined = match read {
                Ok(entries) => rows_of(&rows, entries).await,
                Err(e) => Err(e),
            };
            if !forward(&joined_tx, joined).await {
                return;
            }
        }
    });
    joined_rx
}

/// A batch of slots with their runs' rows, by id.
async fn rows_of(rows: &ExecutionStore, entries: Vec<SlotEntry>) -> Result<SlotBatch, StoreError> {
    let ids: Vec<ExecutionId> = entries
        .iter()
        .filter_map(|e| match e {
            SlotEntry::Slot(s) => Some(s.observation.execution_id.clone()),
            SlotEntry::Corrupt(_) => None,
        })
        .collect();
    let by_id = rows
        .rows_by_ids(&ids)
        .await?
        .into_iter()
        .map(|entry| (entry.id().to_owned(), entry))
        .collect();
    Ok((entries, by_id))
}

/// Judges a batch of pairs. Evidence of life can only hold a rule back, never make one
/// act, so it is read only for the pairs a rule would act on (or report): first the
/// in-flight markers (one `MGET`), then, when the agent liveness probe is on, the agents of
/// the pairs whose verdict would fail a run or remove a slot on evidence a wrong view could
/// fake (one request per agent). Those pairs are judged again with what was found. A pair
/// that is healthy by the stores alone is never read for markers: at 1M slots that is a
/// million keys a sweep does not need.
pub(crate) async fn judge_all(
    slots: &SlotStore,
    items: Vec<(Option<SlotObservation>, Option<RowObservation>)>,
    now: Timestamp,
    policy: &Policy,
) -> Result<Vec<Pair>, StoreError> {
    let mut pairs: Vec<Pair> = items
        .into_iter()
        .map(|(slot, row)| judge(slot, row, &Liveness::NONE, now, policy))
        .collect();
    let held_by_rule =
        |p: &Pair| !matches!(p.verdict, Verdict::Healthy { .. } | Verdict::Alive { .. });
    let (at, ids): (Vec<usize>, Vec<ExecutionId>) = pairs
        .iter()
        .enumerate()
        .filter(|(_, p)| held_by_rule(p))
        .filter_map(|(i, p)| p.run().map(|(_, id)| (i, id)))
        .unzip();
    if !ids.is_empty() {
        for (i, live) in at.into_iter().zip(slots.liveness(&ids).await?) {
            if live.in_flight {
                let pair = &mut pairs[i];
                *pair = judge(pair.slot.take(), pair.row.take(), &live, now, policy);
            }
        }
    }
    if slots.probe().is_none() {
        return Ok(pairs);
    }
    let runs: Vec<(AgentName, ExecutionId)> = pairs.iter().filter_map(Pair::run).collect();
    if runs.len() != pairs.len() {
        return Ok(pairs);
    }
    let mut live: Vec<Liveness> = pairs.iter().map(|p| p.live).collect();
    slots
        .ask_agents(&runs, &mut live, |i| pairs[i].verdict.is_guarded())
        .await;
    for (pair, live) in pairs.iter_mut().zip(live) {
        if live.agent.is_some() {
            *pair = judge(pair.slot.take(), pair.row.take(), &live, now, policy);
        }
    }
    Ok(pairs)
}

impl Pair {
    /// The run the pair is about.
    pub fn run(&self) -> Option<(AgentName, ExecutionId)> {
        match (&self.slot, &self.row) {
            (Some(s), _) => Some((s.agent.clone(), s.execution_id.clone())),
            (None, Some(r)) => Some((r.agent.clone(), r.execution_id.clone())),
            (None, None) => None,
        }
    }
}

/// Runs the verdict and attaches the deadline an operator wants to see next to it.
pub fn judge(
    slot: Option<SlotObservation>,
    row: Option<RowObservation>,
    live: &Liveness,
    now: Timestamp,
    policy: &Policy,
) -> Pair {
    let verdict = decide(slot.as_ref(), row.as_ref(), live, now, policy);
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
    // A lease or a sentinel's bound is what the pair waits for, not a slot or row deadline.
    let deadline = match &verdict {
        Verdict::Alive {
            recheck_at: Some(at),
            ..
        } => Some(*at),
        _ => deadline,
    };
    Pair {
        slot,
        row,
        deadline,
        timeout_source,
        live: *live,
        verdict,
    }
}
