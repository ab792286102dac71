//! Reads and compare-and-set writes on `schedule_executions` (and the paired activity).
//!
//! Every status write names the status it expects (`WHERE id = … AND status = …`), so a late
//! `success` is never overwritten and nothing terminal is resurrected. A write, the closing
//! of the run's open activity and the audit row happen in one transaction.

use janitor_core::{
    format_timestamp, parse_timestamp, AgentName, ExecutionId, RowObservation, Status, Timestamp,
};
use sqlx::Row as _;

use std::collections::HashMap;

use super::audit::{insert_audit_rows, AuditAction, AuditRow, Evidence};
use super::{marks, with_pool, Backend, Database, Schema};
use crate::StoreError;

/// Most ids bound in one `IN (…)` list.
const MAX_IDS_PER_QUERY: usize = 500;

/// The statuses a row is never moved out of, as a SQL list. Matches the partial index
/// `janitor_executions_open` so open-row reads can use it.
const OPEN_FILTER: &str = "e.status NOT IN ('success', 'failed', 'cancelled', 'completed')";

/// A row janitor could read but whose identity is unusable: reported, never changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRow {
    pub id: String,
    pub agent: String,
    pub status: String,
    pub reason: String,
}

/// One row read from `schedule_executions`.
#[derive(Debug, Clone, PartialEq)]
pub enum RowEntry {
    Row(RowObservation),
    Corrupt(CorruptRow),
}

impl RowEntry {
    pub fn id(&self) -> &str {
        match self {
            Self::Row(r) => r.execution_id.as_str(),
            Self::Corrupt(c) => &c.id,
        }
    }
}

/// One page of open rows, in (agent, id) order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPage {
    pub rows: Vec<RowEntry>,
    /// The cursor for the next page; `None` after the last one.
    pub next: Option<RowCursor>,
}

/// Where a page of open rows ended: the last row's (agent, id), as stored (bytes: a key
/// that is not UTF-8 must still sort where SQLite sorts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowCursor {
    agent: Vec<u8>,
    id: Vec<u8>,
}

/// Result of a compare-and-set status write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The row had the expected status and was moved; `activities_closed` paired
    /// activities were closed with it.
    Applied {
        agent: String,
        activities_closed: u64,
    },
    /// The row is already terminal (e.g. a late `success`): nothing written.
    AlreadyTerminal(Status),
    /// The row moved to another non-terminal status since it was read: nothing written.
    Conflict(Status),
    /// No such row.
    NotFound,
}

/// A requested re-queue of a leased run.
#[derive(Debug, Clone)]
pub struct Requeue<'a> {
    pub execution_id: &'a ExecutionId,
    /// `lease_expires_at` exactly as read.
    pub lease_raw: &'a str,
    /// `redelivery_count` as read.
    pub redelivery_count: i64,
    pub evidence: &'a Evidence,
}

/// A requested status change.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub execution_id: &'a ExecutionId,
    /// The status the row must still have.
    pub expected: &'a Status,
    pub error: &'a str,
    /// When the change is made (Redis time); written as `completed_at`.
    pub now: Timestamp,
    /// The run's `started_at`, for `duration_ms` (NULL when unknown).
    pub started_at: Option<Timestamp>,
    /// `started_at` exactly as read: the row must still have it (a re-queued or rewritten
    /// run is not the run the verdict judged).
    pub started_at_raw: &'a str,
    /// The verdict relied on the run having no session (rule 4): the row must still have
    /// none, or a session written since the read would be failed.
    pub require_no_session: bool,
    /// The platform's finalize of a `skipped` row ([`janitor_core::SkippedPolicy::Platform`]):
    /// only while `completed_at` is still NULL, with `completed_at = COALESCE(started_at,
    /// now)` and `duration_ms = 0`, as the platform's own cleanup writes it.
    pub platform_skipped: bool,
    /// A lease rule's change: the row must still hold this lease (`lease_expires_at` as
    /// read). `None`: the row must hold no lease (a run claimed since the read is not
    /// janitor's).
    pub expected_lease: Option<&'a str>,
    pub evidence: &'a Evidence,
}

#[derive(Debug)]
struct RawRow {
    id: String,
    agent: String,
    status: String,
    started_at: String,
    session: Option<String>,
    timeout: Option<i64>,
    lease: Option<String>,
    redeliveries: Option<i64>,
    /// 1 when `completed_at` is set.
    completed: Option<i64>,
    /// Why a column could not be read as text (its bytes are not UTF-8): the row is
    /// reported as corrupt, and its other columns hold the bytes escaped.
    undecodable: Option<String>,
    /// (agent, id) exactly as stored, for the page cursor, when that differs from the text
    /// (`None`: the text is exact, as for every row read as text).
    key: Option<(Vec<u8>, Vec<u8>)>,
}

/// `bytes` as text, with every byte that is not part of valid UTF-8 written `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Reads one SQLite row of [`ExecutionStore::select_sql`]'s columns byte by byte: SQLite
/// stores whatever bytes it was given as TEXT, and one value that is not UTF-8 must make
/// its own row corrupt, not fail the statement (and with it every sweep).
fn raw_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<RawRow, sqlx::Error> {
    let mut undecodable = None;
    let key: (Option<Vec<u8>>, Option<Vec<u8>>) = (row.try_get("agent_name")?, row.try_get("id")?);
    let mut text = |column: &str| -> Result<Option<String>, sqlx::Error> {
        let bytes: Option<Vec<u8>> = row.try_get(column)?;
        Ok(bytes.map(|b| match String::from_utf8(b) {
            Ok(text) => text,
            Err(e) => {
                let escaped = escape_bytes(e.as_bytes());
                undecodable.get_or_insert_with(|| format!("{column} is not UTF-8: {escaped:?}"));
                escaped
            }
        }))
    };
    let id = text("id")?.unwrap_or_default();
    let agent = text("agent_name")?.unwrap_or_default();
    let status = text("status")?.unwrap_or_default();
    let started_at = text("started_at")?.unwrap_or_default();
    let session = text("session")?;
    let lease = text("lease")?;
    Ok(RawRow {
        id,
        agent,
        status,
        started_at,
        session,
        timeout: row.try_get("timeout")?,
        lease,
        redeliveries: row.try_get("redeliveries")?,
        completed: row.try_get("completed")?,
        undecodable,
        key: Some((key.0.unwrap_or_default(), key.1.unwrap_or_default())),
    })
}

/// A row of a [`select_sql`] query, its columns read by position (in `select_sql`'s
/// order: by name, sqlx searched the columns for each of nine names on every row) and
/// without sqlx's per-value type check: `select_sql` casts every column to the type read
/// here (`TEXT` or `BIGINT`), and the check was a tenth of a sweep's own CPU.
macro_rules! raw_row {
    ($row:expr) => {
        RawRow {
            id: $row
                .try_get_unchecked::<Option<String>, _>(0)?
                .unwrap_or_default(),
            agent: $row
                .try_get_unchecked::<Option<String>, _>(1)?
                .unwrap_or_default(),
            status: $row
                .try_get_unchecked::<Option<String>, _>(2)?
                .unwrap_or_default(),
            started_at: $row
                .try_get_unchecked::<Option<String>, _>(3)?
                .unwrap_or_default(),
            session: $row.try_get_unchecked(4)?,
            timeout: $row.try_get_unchecked(5)?,
            lease: $row.try_get_unchecked(6)?,
            redeliveries: $row.try_get_unchecked(7)?,
            completed: $row.try_get_unchecked(8)?,
            undecodable: None,
            key: None,
        }
    };
}

impl RawRow {
    /// The page cursor after this row.
    fn cursor(&self) -> RowCursor {
        let (agent, id) = match &self.key {
            Some((agent, id)) => (agent.clone(), id.clone()),
            None => (self.agent.as_bytes().to_vec(), self.id.as_bytes().to_vec()),
        };
        RowCursor { agent, id }
    }
}

impl RawRow {
    fn into_entry(self, schema: &Schema) -> RowEntry {
        if let Some(reason) = self.undecodable {
            return RowEntry::Corrupt(CorruptRow {
                id: self.id,
                agent: self.agent,
                status: self.status,
                reason,
            });
        }
        let ids = ExecutionId::parse(self.id.clone())
            .and_then(|id| AgentName::parse(self.agent.clone()).map(|agent| (id, agent)));
        match ids {
            Ok((execution_id, agent)) => RowEntry::Row(RowObservation {
                execution_id,
                agent,
                status: Status::parse(&self.status),
                started_at: parse_timestamp(&self.started_at),
                started_at_raw: self.started_at,
                session: self.session,
                session_tracked: schema.session,
                effective_timeout: self.timeout,
                timeout_unread: false,
                // An empty lease is no lease (the platform clears it to NULL; a text
                // column may hold '').
                lease: self
                    .lease
                    .as_deref()
                    .filter(|l| !l.trim().is_empty())
                    .map(parse_timestamp),
                lease_raw: self.lease.filter(|l| !l.trim().is_empty()),
                redelivery_count: self.redeliveries.unwrap_or(0),
                completed: self.completed.unwrap_or(0) != 0,
            }),
            Err(e) => RowEntry::Corrupt(CorruptRow {
                id: self.id,
                agent: self.agent,
                status: self.status,
                reason: e.to_string(),
            }),
        }
    }
}

/// `schedule_executions` and its neighbours on one database.
#[derive(Debug, Clone)]
pub struct ExecutionStore {
    db: Database,
    schema: Schema,
    open_rows_sql: String,
    /// SQLite only: a page of [`Self::open_rows_sql`] as one JSON array (see `open_rows`).
    open_rows_json_sql: String,
    /// PostgreSQL only: the rows whose ids are in one array parameter.
    rows_by_ids_sql: String,
}

impl ExecutionStore {
    /// Checks the schema (the tables janitor needs exist) and prepares the queries.
    pub async fn open(db: Database) -> Result<Self, StoreError> {
        let schema = db.schema().await?;
        let open_rows_sql = format!(
            "{} WHERE {OPEN_FILTER} AND (e.agent_name, e.id) > (CAST($1 AS TEXT), CAST($2 AS TEXT)) \
             ORDER BY e.agent_name, e.id LIMIT $3",
            select_sql(&schema, db.backend(), "schedule_executions e", false)
        );
        let open_rows_json_sql = format!(
            "SELECT json_group_array(json_array(id, agent_name, status, started_at, session, timeout, lease, redeliveries, completed)) \
             AS page FROM ({}) AS p",
            marks(Backend::Sqlite, &open_rows_sql)
        );
        let rows_by_ids_sql = select_sql(
            &schema,
            Backend::Postgres,
            "UNNEST(CAST($1 AS TEXT[])) AS wanted(id) JOIN schedule_executions e ON e.id = wanted.id",
            true,
        );
        Ok(Self {
            db,
            schema,
            open_rows_sql,
            open_rows_json_sql,
            rows_by_ids_sql,
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// One page of non-terminal rows after `after` (keyset pagination on `(agent_name, id)`),
    /// read without the runs' effective timeouts: only a run with no slot, or whose slot
    /// declares no usable timeout, needs one, and joining the schedule and agent of every
    /// row of a sweep was most of the page's cost. The rows say so
    /// ([`RowObservation::timeout_unread`]: deadlines then take the longest timeout, so a
    /// timeout never read can only delay a reap); [`Self::read_timeouts`] reads them.
    pub async fn open_rows(
        &self,
        after: Option<&RowCursor>,
        limit: u32,
    ) -> Result<RowPage, StoreError> {
        let limit = limit.max(1);
        let (agent, id): (&[u8], &[u8]) = after.map_or((b"", b""), |c| (&c.agent, &c.id));
        let raw = match &self.db {
            // PostgreSQL text is UTF-8 by the server's own rule.
            Database::Postgres(pool) => {
                let (agent, id) = (String::from_utf8_lossy(agent), String::from_utf8_lossy(id));
                let rows = sqlx::query(&self.open_rows_sql)
                    .bind(agent.as_ref())
                    .bind(id.as_ref())
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|row| Ok(raw_row!(row)))
                    .collect::<Result<Vec<RawRow>, sqlx::Error>>()?
            }
            // sqlx hands each SQLite row from its worker thread to the caller on its own
            // (a context switch and several allocations per row: most of a SQLite
            // sweep's time in `perf`); aggregated by SQLite into one JSON array, a page
            // of a thousand rows crosses once. The array keeps the page's order (SQLite
            // aggregates an ordered subquery in order), so its last row is the cursor.
            Database::Sqlite(pool) => {
                let page: Option<Vec<u8>> = sqlx::query_scalar(&self.open_rows_json_sql)
                    .bind(agent)
                    .bind(id)
                    .bind(i64::from(limit))
                    .fetch_one(pool)
                    .await?;
                let page = match page.map(String::from_utf8).transpose() {
                    Ok(page) => page,
                    // A value in the page is not UTF-8: read this page row by row, so
                    // only its own row is reported corrupt.
                    Err(_) => {
                        let sql = marks(Backend::Sqlite, &self.open_rows_sql);
                        let rows = sqlx::query(&sql)
                            .bind(agent)
                            .bind(id)
                            .bind(i64::from(limit))
                            .fetch_all(pool)
                            .await?;
                        let raw = rows.iter().map(raw_sqlite).collect::<Result<Vec<_>, _>>()?;
                        return Ok(page_of(raw, limit, &self.schema));
                    }
                };
                type Columns = (
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<String>,
                    Option<i64>,
                    Option<String>,
                    Option<i64>,
                    Option<i64>,
                );
                let rows: Vec<Columns> = serde_json::from_str(page.as_deref().unwrap_or("[]"))
                    .map_err(|e| StoreError::Protocol(format!("a page of open rows: {e}")))?;
                rows.into_iter()
                    .map(
                        |(
                            id,
                            agent,
                            status,
                            started_at,
                            session,
                            timeout,
                            lease,
                            redeliveries,
                            completed,
                        )| {
                            RawRow {
                                id: id.unwrap_or_default(),
                                agent: agent.unwrap_or_default(),
                                status: status.unwrap_or_default(),
                                started_at: started_at.unwrap_or_default(),
                                session,
                                timeout,
                                lease,
                                redeliveries,
                                completed,
                                undecodable: None,
                                key: None,
                            }
                        },
                    )
                    .collect()
            }
        };
        Ok(page_of(raw, limit, &self.schema))
    }

    /// The rows with these ids, whatever their status. Missing ids are simply absent.
    pub async fn rows_by_ids(&self, ids: &[ExecutionId]) -> Result<Vec<RowEntry>, StoreError> {
        let mut entries = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(entries);
        }
        match &self.db {
            // One statement whatever the count: the ids travel as one array and are joined
            // through the primary key.
            Database::Postgres(pool) => {
                let ids: Vec<&str> = ids.iter().map(ExecutionId::as_str).collect();
                let rows = sqlx::query(&self.rows_by_ids_sql)
                    .bind(ids)
                    .fetch_all(pool)
                    .await?;
                for row in &rows {
                    entries.push(raw_row!(row).into_entry(&self.schema));
                }
            }
            Database::Sqlite(pool) => {
                for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
                    // Anonymous parameters: see `marks`.
                    let sql = format!(
                        "{} WHERE e.id IN ({})",
                        select_sql(&self.schema, Backend::Sqlite, "schedule_executions e", true),
                        vec!["?"; chunk.len()].join(", ")
                    );
                    let mut query = sqlx::query(&sql);
                    for id in chunk {
                        query = query.bind(id.as_str());
                    }
                    for row in &query.fetch_all(pool).await? {
                        entries.push(raw_sqlite(row)?.into_entry(&self.schema));
                    }
                }
            }
        }
        Ok(entries)
    }

    /// Reads the effective timeout of each of these rows read without it
    /// ([`RowObservation::timeout_unread`]) with [`Self::rows_by_ids`]; the others are left
    /// alone, and so is a row that is gone or unreadable by now (its timeout stays unread:
    /// the longest).
    pub async fn read_timeouts(&self, rows: &mut [&mut RowObservation]) -> Result<(), StoreError> {
        let unread: Vec<ExecutionId> = rows
            .iter()
            .filter(|r| r.timeout_unread)
            .map(|r| r.execution_id.clone())
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        let found: HashMap<String, Option<i64>> = self
            .rows_by_ids(&unread)
            .await?
            .into_iter()
            .filter_map(|entry| match entry {
                RowEntry::Row(r) => Some((r.execution_id.as_str().to_owned(), r.effective_timeout)),
                RowEntry::Corrupt(_) => None,
            })
            .collect();
        for row in rows.iter_mut().filter(|r| r.timeout_unread) {
            if let Some(timeout) = found.get(row.execution_id.as_str()) {
                row.effective_timeout = *timeout;
                row.timeout_unread = false;
            }
        }
        Ok(())
    }

    /// How many runs janitor failed since `since` that are `success` now: the platform's
    /// status rule lets a late `success` win over a cleanup-written `failed` (its own
    /// cleanup's or janitor's), and janitor never writes such a row again. Counted by
    /// every sweep as late completions after the fact.
    pub async fn completed_after_failed(&self, since: Timestamp) -> Result<u64, StoreError> {
        let sql = marks(
            self.db.backend(),
            "SELECT COUNT(DISTINCT a.execution_id) FROM janitor_audit a \
             JOIN schedule_executions e ON e.id = a.execution_id \
             WHERE a.action = 'run_failed' AND a.at >= $1 AND e.status = 'success'",
        )
        .into_owned();
        let since = format_timestamp(since);
        let n: i64 = with_pool!(&self.db, pool => {
            sqlx::query_scalar(&sql).bind(&since).fetch_one(pool).await?
        });
        Ok(n.max(0) as u64)
    }

    /// Re-queues pull-mode runs whose lease expired exactly as the platform's lease reaper
    /// does: `queued`, `redelivery_count + 1`, `lease_expires_at` and `claimed_by_worker`
    /// cleared, `claim_token` kept; each only while it is still `running` with the lease
    /// and the count it was judged on. The superseded attempt's open activity is closed as
    /// `cancelled` (a superseded attempt is not a failure), with one audit row per run, in
    /// one transaction.
    pub async fn requeue_leased(
        &self,
        changes: &[Requeue<'_>],
        now: Timestamp,
    ) -> Result<Vec<CasOutcome>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        if !self.schema.lease || !self.schema.redelivery_count {
            return Err(StoreError::Config(
                "re-queueing a leased run needs lease_expires_at and redelivery_count".into(),
            ));
        }
        let backend = self.db.backend();
        let update = marks(
            backend,
            "UPDATE schedule_executions SET status = 'queued', \
             redelivery_count = COALESCE(redelivery_count, 0) + 1, \
             lease_expires_at = NULL, claimed_by_worker = NULL \
             WHERE id = $1 AND status = 'running' AND CAST(lease_expires_at AS TEXT) = $2 \
             AND COALESCE(redelivery_count, 0) = CAST($3 AS BIGINT) \
             RETURNING CAST(agent_name AS TEXT) AS agent_name",
        )
        .into_owned();
        let close = marks(
            backend,
            "UPDATE agent_activities SET activity_state = 'cancelled', completed_at = $1, \
             error = COALESCE(error, $2) WHERE related_execution_id = $3 AND activity_state = $4",
        )
        .into_owned();
        let current = marks(
            backend,
            "SELECT CAST(status AS TEXT) FROM schedule_executions WHERE id = $1",
        )
        .into_owned();
        let done_at = format_timestamp(now);
        let schema = self.schema;
        let outcomes = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let mut outcomes = Vec::with_capacity(changes.len());
            let mut audits = Vec::new();
            for change in changes {
                let agent: Option<Option<String>> = sqlx::query_scalar(&update)
                    .bind(change.execution_id.as_str())
                    .bind(change.lease_raw)
                    .bind(change.redelivery_count)
                    .fetch_optional(&mut *tx)
                    .await?;
                let outcome = match agent {
                    Some(agent) => {
                        let agent = agent.unwrap_or_default();
                        let mut closed = 0;
                        if schema.agent_activities {
                            closed = sqlx::query(&close)
                                .bind(&done_at)
                                .bind("Superseded: pull lease expired, re-queued by janitor")
                                .bind(change.execution_id.as_str())
                                .bind("started")
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                        }
                        audits.push(AuditRow {
                            action: AuditAction::RunRequeued,
                            execution_id: change.execution_id.to_string(),
                            agent: agent.clone(),
                            status_before: Some("running".into()),
                            status_after: Some("queued".into()),
                            evidence: change.evidence.clone(),
                            // One re-delivery per lease: the lease and the count name it.
                            change_key: Some(format!(
                                "run_requeued:{}:{}:{}",
                                change.execution_id, change.lease_raw, change.redelivery_count
                            )),
                            at: None,
                        });
                        CasOutcome::Applied {
                            agent,
                            activities_closed: closed,
                        }
                    }
                    None => {
                        let status: Option<Option<String>> = sqlx::query_scalar(&current)
                            .bind(change.execution_id.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                        match status {
                            None => CasOutcome::NotFound,
                            Some(s) => {
                                let s = Status::parse(&s.unwrap_or_default());
                                if s.is_terminal() {
                                    CasOutcome::AlreadyTerminal(s)
                                } else {
                                    CasOutcome::Conflict(s)
                                }
                            }
                        }
                    }
                };
                outcomes.push(outcome);
            }
            for chunk in audits.chunks(400) {
                insert_audit_rows!(&mut *tx, backend, chunk, now)?;
            }
            tx.commit().await?;
            outcomes
        });
        Ok(outcomes)
    }

    /// Moves a non-terminal run to `failed` if it still has `expected` status, closing its
    /// open activity as `failed` and writing the audit row, in one transaction.
    pub async fn fail_run(&self, change: &Transition<'_>) -> Result<CasOutcome, StoreError> {
        self.one(change, Status::Failed).await
    }

    /// Moves a `skipped` run to `cancelled` (closing any open activity as `cancelled`).
    pub async fn cancel_skipped(&self, change: &Transition<'_>) -> Result<CasOutcome, StoreError> {
        self.one(change, Status::Cancelled).await
    }

    async fn one(&self, change: &Transition<'_>, to: Status) -> Result<CasOutcome, StoreError> {
        let mut outcomes = self
            .transitions(&[(change.clone(), to)], &[], change.now)
            .await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Protocol("no outcome for a transition".into()))
    }

    /// Applies many compare-and-set status changes in one transaction: each row moves to
    /// its target (`failed` or `cancelled`) only if it still has its expected status; the
    /// open activities of the rows that moved are closed; one audit row is written per
    /// applied change, plus `slot_audits` (Redis-side changes already made). Returns one
    /// outcome per change, in order.
    pub async fn transitions(
        &self,
        changes: &[(Transition<'_>, Status)],
        slot_audits: &[AuditRow],
        now: Timestamp,
    ) -> Result<Vec<CasOutcome>, StoreError> {
        let mut outcomes: Vec<Option<CasOutcome>> = changes
            .iter()
            .map(|(change, to)| precheck(change.expected, to))
            .collect();
        let todo: Vec<usize> = (0..changes.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        let done_at = format_timestamp(now);
        let close_activities = self.schema.agent_activities;
        let backend = self.db.backend();
        let postgres = backend == Backend::Postgres;
        let (moved, closed, current) = with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                // Every statement below finds each row by its key. The planner's other
                // choices — a sequential or bitmap scan of every open run or activity,
                // hash-joined to the batch — win only on paper when the statistics are
                // stale, which is exactly when an incident has just piled up runs (5–30 ms
                // per batch instead of ~1, found with `auto_explain`). For this transaction
                // only, key lookups are the plan.
                sqlx::query(
                    "SELECT set_config('enable_seqscan', 'off', true), \
                     set_config('enable_bitmapscan', 'off', true), \
                     set_config('enable_hashjoin', 'off', true), \
                     set_config('enable_mergejoin', 'off', true)",
                )
                .execute(&mut *tx)
                .await?;
            }
            let mut moved: HashMap<String, String> = HashMap::new();
            let mut closed: HashMap<String, u64> = HashMap::new();
            let mut current: HashMap<String, String> = HashMap::new();
            if !todo.is_empty() {
                // One statement moves every row whose status is still the expected one.
                let sql = runs_cas_sql(&self.schema, backend, todo.len());
                let mut query = sqlx::query(&sql);
                for i in &todo {
                    let (change, to) = &changes[*i];
                    let duration = if change.platform_skipped {
                        Some(0)
                    } else {
                        change.started_at.and_then(|s| duration_between(s, now))
                    };
                    query = query
                        .bind(change.execution_id.as_str())
                        .bind(change.expected.as_str())
                        .bind(to.as_str())
                        .bind(change.error)
                        .bind(&done_at)
                        .bind(duration)
                        .bind(change.started_at_raw)
                        .bind(i64::from(change.require_no_session))
                        .bind(i64::from(change.platform_skipped))
                        .bind(change.expected_lease);
                }
                for row in query.fetch_all(&mut *tx).await? {
                    let id: Option<String> = row.try_get("id")?;
                    let agent: Option<String> = row.try_get("agent_name")?;
                    moved.insert(id.unwrap_or_default(), agent.unwrap_or_default());
                }
                // Why the others did not move.
                let missing: Vec<&str> = todo
                    .iter()
                    .map(|i| changes[*i].0.execution_id.as_str())
                    .filter(|id| !moved.contains_key(*id))
                    .collect();
                if !missing.is_empty() {
                    let sql = format!(
                        "SELECT CAST(id AS TEXT) AS id, CAST(status AS TEXT) AS status FROM schedule_executions WHERE id IN ({})",
                        placeholders(missing.len())
                    );
                    let sql = marks(backend, &sql);
                    let mut query = sqlx::query(&sql);
                    for id in &missing {
                        query = query.bind(*id);
                    }
                    for row in query.fetch_all(&mut *tx).await? {
                        let id: Option<String> = row.try_get("id")?;
                        let status: Option<String> = row.try_get("status")?;
                        current.insert(id.unwrap_or_default(), status.unwrap_or_default());
                    }
                }
                // Close the open activities of the runs that moved.
                let applied: Vec<usize> = todo
                    .iter()
                    .copied()
                    .filter(|i| moved.contains_key(changes[*i].0.execution_id.as_str()))
                    .collect();
                if close_activities && !applied.is_empty() {
                    // Read the runs' open activities (by the partial index, a lookup per
                    // run), then close each by its key with its duration in one write,
                    // compare-and-set on `started`. (Joined to the VALUES list by
                    // `related_execution_id` instead, PostgreSQL's generic plan scanned every
                    // open activity when the statistics were stale: 30 ms per batch with 100k
                    // open, found with `auto_explain`.)
                    let sql = format!(
                        "SELECT CAST(id AS TEXT) AS id, CAST(started_at AS TEXT) AS started_at, \
                         CAST(related_execution_id AS TEXT) AS execution_id FROM agent_activities \
                         WHERE related_execution_id IN ({}) AND activity_state = 'started'",
                        placeholders(applied.len())
                    );
                    let sql = marks(backend, &sql);
                    let mut query = sqlx::query(&sql);
                    for i in &applied {
                        query = query.bind(changes[*i].0.execution_id.as_str());
                    }
                    let mut open: Vec<(String, String, Option<i64>)> = Vec::new();
                    for row in query.fetch_all(&mut *tx).await? {
                        let id: Option<String> = row.try_get("id")?;
                        let execution: Option<String> = row.try_get("execution_id")?;
                        let started: Option<String> = row.try_get("started_at")?;
                        let ms = started.as_deref().and_then(|s| duration_ms(s, now));
                        open.push((id.unwrap_or_default(), execution.unwrap_or_default(), ms));
                    }
                    if !open.is_empty() {
                        let target: HashMap<&str, (&str, &str)> = applied
                            .iter()
                            .map(|i| {
                                let (change, to) = &changes[*i];
                                let state = if *to == Status::Cancelled { "cancelled" } else { "failed" };
                                (change.execution_id.as_str(), (state, change.error))
                            })
                            .collect();
                        let sql = close_activities_sql(backend, open.len());
                        let mut query = sqlx::query(&sql);
                        for (id, execution, ms) in &open {
                            let (state, error) = target
                                .get(execution.as_str())
                                .copied()
                                .unwrap_or(("failed", ""));
                            query = query
                                .bind(id.as_str())
                                .bind(state)
                                .bind(error)
                                .bind(&done_at)
                                .bind(*ms);
                        }
                        query = query.bind("started");
                        for row in query.fetch_all(&mut *tx).await? {
                            let execution: Option<String> = row.try_get("execution_id")?;
                            *closed.entry(execution.unwrap_or_default()).or_default() += 1;
                        }
                    }
                }
            }
            // One audit row per applied change, plus the Redis-side changes.
            let mut audits: Vec<AuditRow> = slot_audits.to_vec();
            for i in &todo {
                let (change, to) = &changes[*i];
                if let Some(agent) = moved.get(change.execution_id.as_str()) {
                    audits.push(AuditRow {
                        action: if *to == Status::Cancelled { AuditAction::RunCancelled } else { AuditAction::RunFailed },
                        execution_id: change.execution_id.to_string(),
                        agent: agent.clone(),
                        status_before: Some(change.expected.to_string()),
                        status_after: Some(to.to_string()),
                        evidence: change.evidence.clone(),
                        // A run reaches a terminal status once: the run, the action and
                        // the start it was judged on name the change.
                        change_key: Some(format!(
                            "{}:{}:{}",
                            if *to == Status::Cancelled { "run_cancelled" } else { "run_failed" },
                            change.execution_id,
                            change.started_at_raw
                        )),
                        at: None,
                    });
                }
            }
            for chunk in audits.chunks(400) {
                insert_audit_rows!(&mut *tx, backend, chunk, now)?;
            }
            tx.commit().await?;
            (moved, closed, current)
        });

        for i in todo {
            let id = changes[i].0.execution_id.as_str();
            outcomes[i] = Some(match moved.get(id) {
                Some(agent) => CasOutcome::Applied {
                    agent: agent.clone(),
                    activities_closed: closed.get(id).copied().unwrap_or(0),
                },
                None => match current.get(id) {
                    None => CasOutcome::NotFound,
                    Some(status) => {
                        let status = Status::parse(status);
                        if status.is_terminal() {
                            CasOutcome::AlreadyTerminal(status)
                        } else {
                            CasOutcome::Conflict(status)
                        }
                    }
                },
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(CasOutcome::NotFound))
            .collect())
    }
}

/// A page of open rows, read without their effective timeouts (see `open_rows`), and the
/// cursor after it (the last row's key as stored).
fn page_of(raw: Vec<RawRow>, limit: u32, schema: &Schema) -> RowPage {
    let next = (raw.len() as u32 == limit)
        .then(|| raw.last().map(RawRow::cursor))
        .flatten();
    let unread = timeout_joined(schema);
    RowPage {
        rows: raw
            .into_iter()
            .map(|r| match r.into_entry(schema) {
                RowEntry::Row(mut row) => {
                    row.timeout_unread = unread;
                    RowEntry::Row(row)
                }
                corrupt => corrupt,
            })
            .collect(),
        next,
    }
}

/// How a batch statement names the batch's list (`v`) where it is compared to the table's
/// columns. On SQLite, `+v`: a no-op on the value, it keeps the list from being indexed, so
/// the planner can only walk the list and find each row by its key. Left to choose, SQLite
/// (3.46, with `ANALYZE` statistics) scans the platform's table under the write lock and
/// looks each row up in an automatic index on the list — the runs' compare-and-set for 256
/// runs on a table its statistics say holds 20M rows, or for 128 where they say 2,000 (stale
/// statistics on a table that has grown since are the usual case).
fn lookup_side(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "+v",
        Backend::Postgres => "v",
    }
}

/// The runs' compare-and-set for `rows` changes: every row whose status is still the
/// expected one moves. MATERIALIZED: the list is evaluated once and drives a key lookup per
/// row; inlined, a nested loop may re-evaluate it for every row of the table side
/// (quadratic in the batch: 5 ms of 7 for 64 rows). Every fact the verdict used is
/// compared: the status, `started_at` as read, for a never-launched run that it still has
/// no session, and that no pull worker has claimed the run since (a leased run is not
/// janitor's). Binds per row: id, expected, target, error, done_at, duration, started_at as
/// read, require-no-session (0/1), platform-skipped (0/1), expected lease.
fn runs_cas_sql(schema: &Schema, backend: Backend, rows: usize) -> String {
    let session_check = if schema.session {
        "AND (v.nosess = 0 OR schedule_executions.claude_session_id IS NULL \
         OR TRIM(CAST(schedule_executions.claude_session_id AS TEXT)) = '')"
    } else {
        "AND v.nosess = 0"
    };
    let v = lookup_side(backend);
    let lease_check = if schema.lease {
        format!(
            " AND ((v.lease IS NULL AND (schedule_executions.lease_expires_at IS NULL \
             OR TRIM(CAST(schedule_executions.lease_expires_at AS TEXT)) = '')) \
             OR CAST(schedule_executions.lease_expires_at AS TEXT) = {v}.lease)"
        )
    } else {
        " AND v.lease IS NULL".to_owned()
    };
    let mut sql = String::from(
        "WITH v(id, expected, target, err, done_at, dur, started, nosess, pskip, lease) AS MATERIALIZED (VALUES ",
    );
    push_rows(&mut sql, rows, 10, &[5, 7, 8]);
    sql.push_str(&format!(
        ") UPDATE schedule_executions SET status = v.target, error = v.err, \
         completed_at = CASE WHEN v.pskip = 1 THEN COALESCE(schedule_executions.started_at, v.done_at) ELSE v.done_at END, \
         duration_ms = v.dur FROM v \
         WHERE schedule_executions.id = {v}.id AND schedule_executions.status = {v}.expected \
         AND COALESCE(CAST(schedule_executions.started_at AS TEXT), '') = {v}.started \
         AND (v.pskip = 0 OR schedule_executions.completed_at IS NULL \
              OR TRIM(CAST(schedule_executions.completed_at AS TEXT)) = '') \
         {session_check}{lease_check} \
         RETURNING CAST(schedule_executions.id AS TEXT) AS id, \
         CAST(schedule_executions.agent_name AS TEXT) AS agent_name",
    ));
    marks(backend, &sql).into_owned()
}

/// The close of `rows` open activities by key, compare-and-set on their state. Binds per
/// row: id, the state to write, error, done_at, duration; then `started`, the state each
/// must still have.
///
/// `started` as a parameter, not a literal: with the literal PostgreSQL's planner may pick
/// the partial index of open activities (whose statistics can say "a few" while an incident
/// holds 100k) and filter every one of them; with a parameter only the key lookup fits.
fn close_activities_sql(backend: Backend, rows: usize) -> String {
    let v = lookup_side(backend);
    let mut sql = String::from("WITH v(id, state, err, done_at, dur) AS MATERIALIZED (VALUES ");
    push_rows(&mut sql, rows, 5, &[4]);
    sql.push_str(&format!(
        ") UPDATE agent_activities SET activity_state = v.state, completed_at = v.done_at, \
         error = COALESCE(agent_activities.error, v.err), \
         duration_ms = COALESCE(v.dur, agent_activities.duration_ms) FROM v \
         WHERE agent_activities.id = {v}.id AND agent_activities.activity_state = ${} \
         RETURNING CAST(agent_activities.related_execution_id AS TEXT) AS execution_id",
        rows * 5 + 1
    ));
    marks(backend, &sql).into_owned()
}

/// What can be said without asking the database: terminal statuses never move, unknown
/// ones are left alone, and only `skipped` rows are cancelled.
fn precheck(expected: &Status, to: &Status) -> Option<CasOutcome> {
    if expected.is_terminal() {
        Some(CasOutcome::AlreadyTerminal(expected.clone()))
    } else if !expected.is_known() || (*to == Status::Cancelled && *expected != Status::Skipped) {
        Some(CasOutcome::Conflict(expected.clone()))
    } else {
        None
    }
}

/// `$1, $2, …, $n`
fn placeholders(n: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(n * 6);
    for i in 1..=n {
        let sep = if i > 1 { ", " } else { "" };
        let _ = write!(out, "{sep}${i}");
    }
    out
}

/// Appends `rows` tuples of `width` placeholders, numbered on from `$1`; the columns at
/// `bigint` positions are cast so both drivers type a NULL there as an integer.
fn push_rows(sql: &mut String, rows: usize, width: usize, bigint: &[usize]) {
    use std::fmt::Write as _;
    sql.reserve(rows * (width * 7 + 4));
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            n += 1;
            if c > 0 {
                sql.push_str(", ");
            }
            if bigint.contains(&c) {
                let _ = write!(sql, "CAST(${n} AS BIGINT)");
            } else {
                let _ = write!(sql, "${n}");
            }
        }
        sql.push(')');
    }
}

/// Whether a run's effective timeout comes from other tables (its schedule's, its agent's).
fn timeout_joined(schema: &Schema) -> bool {
    (schema.agent_schedules && schema.schedule_timeout)
        || (schema.agent_ownership && schema.agent_timeout)
}

/// The joins that bring in a run's effective timeout (the runs table named `e`), and the
/// expression of it.
fn timeout_sql(schema: &Schema, backend: Backend) -> (String, String) {
    let mut joins = String::new();
    let mut timeouts = Vec::new();
    if schema.agent_schedules && schema.schedule_timeout {
        joins.push_str(" LEFT JOIN agent_schedules s ON s.id = e.schedule_id");
        timeouts.push("s.timeout_seconds");
    }
    if schema.agent_ownership && schema.agent_timeout {
        // An aggregate per agent, not a plain join: an ownership table keyed by its own id
        // (the platform's today) may hold an agent twice, and a join would read the run
        // twice, once with the shorter timeout. The longest is the safe one. On PostgreSQL
        // a LATERAL join, which the planner memoizes per agent (runs come ordered by agent:
        // one index probe per agent of a page instead of one per run, 2-4x less time for
        // a page); SQLite has no LATERAL and keeps the correlated subquery.
        match backend {
            Backend::Postgres => {
                joins.push_str(
                    " LEFT JOIN LATERAL (SELECT MAX(o.execution_timeout_seconds) AS t \
                     FROM agent_ownership o WHERE o.agent_name = e.agent_name) o ON TRUE",
                );
                timeouts.push("o.t");
            }
            Backend::Sqlite => timeouts.push(
                "(SELECT MAX(o.execution_timeout_seconds) FROM agent_ownership o WHERE o.agent_name = e.agent_name)",
            ),
        }
    }
    let timeout = match timeouts.as_slice() {
        [] => "CAST(NULL AS BIGINT)".to_owned(),
        [one] => format!("CAST({one} AS BIGINT)"),
        many => format!("CAST(COALESCE({}) AS BIGINT)", many.join(", ")),
    };
    (joins, timeout)
}

/// The columns janitor reads of a run, `FROM {from}` (which names the runs table `e`), with
/// the run's effective timeout joined in from its schedule and agent when those tables exist
/// and `with_timeout` (else the column is NULL: see [`RowObservation::timeout_unread`]).
fn select_sql(schema: &Schema, backend: Backend, from: &str, with_timeout: bool) -> String {
    let (joins, timeout) = if with_timeout {
        timeout_sql(schema, backend)
    } else {
        (String::new(), "CAST(NULL AS BIGINT)".to_owned())
    };
    let session = if schema.session {
        "CAST(e.claude_session_id AS TEXT)"
    } else {
        "CAST(NULL AS TEXT)"
    };
    let lease = if schema.lease {
        "CAST(e.lease_expires_at AS TEXT)"
    } else {
        "CAST(NULL AS TEXT)"
    };
    let redeliveries = if schema.redelivery_count {
        "CAST(e.redelivery_count AS BIGINT)"
    } else {
        "CAST(NULL AS BIGINT)"
    };
    // The columns' order is `raw_row!`'s.
    format!(
        "SELECT CAST(e.id AS TEXT) AS id, CAST(e.agent_name AS TEXT) AS agent_name, \
         CAST(e.status AS TEXT) AS status, CAST(e.started_at AS TEXT) AS started_at, \
         {session} AS session, {timeout} AS timeout, {lease} AS lease, \
         {redeliveries} AS redeliveries, \
         CAST(CASE WHEN e.completed_at IS NULL OR TRIM(CAST(e.completed_at AS TEXT)) = '' THEN 0 ELSE 1 END AS BIGINT) AS completed \
         FROM {from}{joins}"
    )
}

/// Milliseconds from `started` to `completed`; `None` when `started` is unreadable, in the
/// future, or the value would not fit the platform's 32-bit INTEGER column (a made-up
/// duration overflowing INTEGER was a real bug there: NULL is safer).
pub fn duration_ms(started: &str, completed: Timestamp) -> Option<i64> {
    duration_between(parse_timestamp(started).ok()?, completed)
}

/// [`duration_ms`] for an already parsed start.
pub fn duration_between(started: Timestamp, completed: Timestamp) -> Option<i64> {
    let ms = (completed - started).num_milliseconds();
    (0..=i64::from(i32::MAX)).contains(&ms).then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite's planner does with a batch statement on a table that has `ANALYZE`
    /// statistics claiming `rows` rows (in `table`, by its primary key).
    async fn sqlite_plan(sql: &str, table: &str, rows: u64) -> String {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let db = Database::connect(&url, true).await.unwrap();
        db.migrate(true).await.unwrap();
        let Database::Sqlite(pool) = &db else {
            unreachable!()
        };
        let mut conn = pool.acquire().await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, started_at, related_execution_id, created_at) \
             VALUES ('a1', 'x', 'schedule_start', 'started', '2026-01-01', 'r1', '2026-01-01'); \
             INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, message, triggered_by) \
             VALUES ('r1', 's', 'x', 'running', '2026-01-01', 'm', 'schedule'); \
             ANALYZE;",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        // A long-lived platform database's statistics, then reloaded.
        sqlx::query(
            "UPDATE sqlite_stat1 SET stat = ? || substr(stat, instr(stat, ' ')) WHERE tbl = ?",
        )
        .bind(rows.to_string())
        .bind(table)
        .execute(&mut *conn)
        .await
        .unwrap();
        sqlx::raw_sql("ANALYZE sqlite_schema")
            .execute(&mut *conn)
            .await
            .unwrap();
        let plan = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        plan.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every batch write finds its rows by key, however big the batch and whatever the
    /// statistics say: a scan of the platform's table (or a Bloom filter, built by one)
    /// reads every row of it under SQLite's write lock. Compared to `v` itself, the runs'
    /// compare-and-set scanned `schedule_executions` for 128 runs where the statistics say
    /// 2,000 rows and for 256 at any size up to 20M.
    #[tokio::test]
    async fn sqlite_batch_writes_never_scan_the_platforms_tables() {
        let schema = Schema {
            agent_schedules: true,
            agent_ownership: true,
            agent_activities: true,
            session: true,
            schedule_timeout: true,
            agent_timeout: true,
            lease: true,
            redelivery_count: true,
        };
        let mut failures = Vec::new();
        for rows in [2_000, 200_000, 2_000_000, 20_000_000] {
            for batch in [1, 64, 128, 256, 1024] {
                let statements = [
                    (
                        "agent_activities",
                        close_activities_sql(Backend::Sqlite, batch),
                    ),
                    (
                        "schedule_executions",
                        runs_cas_sql(&schema, Backend::Sqlite, batch),
                    ),
                ];
                for (table, sql) in statements {
                    let plan = sqlite_plan(&sql, table, rows).await;
                    if !(plan.contains(&format!("SEARCH {table} USING INDEX"))
                        && !plan.contains("BLOOM")
                        && !plan.contains(&format!("SCAN {table}")))
                    {
                        failures.push(format!(
                            "{batch} rows into {table} of {rows}: {}",
                            plan.replace('\n', " | ")
                        ));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn durations_are_null_when_unknowable() {
        let done = parse_timestamp("2026-05-01T16:00:00Z").unwrap();
        assert_eq!(duration_ms("2026-05-01T15:30:00", done), Some(1_800_000));
        assert_eq!(duration_ms("2026-05-01 15:30:00.5", done), Some(1_799_500));
        assert_eq!(duration_ms("garbage", done), None);
        assert_eq!(duration_ms("2026-05-02T00:00:00Z", done), None);
        assert_eq!(duration_ms("2000-01-01T00:00:00Z", done), None);
    }
}
