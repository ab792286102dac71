//! janitor's I/O: the Redis slot store, the SQL execution store (SQLite and PostgreSQL),
//! the audit log and the migrations.
//!
//! Nothing here decides anything: the rules live in `janitor-core`. This crate fetches the
//! observations the rules need and applies their verdicts with compare-and-set operations
//! (a Lua compare-and-delete in Redis, a `WHERE status = expected` update in SQL).

mod error;
mod keys;
pub mod probe;
mod redact;
mod slots;
pub mod sql;

pub use error::StoreError;
pub use keys::{
    SlotKeys, DEFAULT_INFLIGHT_PREFIX, DEFAULT_SENTINEL_PREFIX, DEFAULT_SLOT_META_PREFIX,
    DEFAULT_SLOT_PREFIX,
};
pub use probe::{AgentProbe, AgentRuns, ProbeSettings, PLATFORM_PROBE_URL};
pub use redact::redact_url;
pub use slots::{
    drain_outbox, Acquire, CensusReport, CensusWalk, CorruptSlot, PairedSet, Reclaim, Release,
    Renew, ScannedSlot, SlotChange, SlotEntry, SlotRead, SlotStore, MESSAGE_PREVIEW_CHARS,
    OUTBOX_BATCH,
};
pub use sql::activities::{ActivityClose, ActivityCursor, ActivityEntry};
pub use sql::audit::{AuditAction, AuditFilter, AuditRecord, AuditRow, Evidence};
pub use sql::executions::{
    escape_bytes, CasOutcome, CorruptRow, ExecutionStore, Requeue, RowCursor, RowEntry, RowPage,
    Transition,
};
pub use sql::{Backend, Database, MigrationReport, RuleOff, Schema};
