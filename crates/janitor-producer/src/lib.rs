//! The producer side of janitor: observing Redis and SQL together, judging every pair and
//! enqueueing one cleanup job per change.
//!
//! [`observe`] is the one pass both the stuck-records report and the sweep use: stream every
//! slot (pairing each with its row), then every open row that holds no slot, and run the
//! same [`janitor_core::decide`] on each pair. [`sweep`] turns its verdicts into jobs.

pub mod breaker;
pub mod due;
mod lease;
mod observe;
mod skip;
mod sweep;

pub use breaker::{Breaker, BreakerState, Decision, Mode};
pub use due::{due_pass, DueIndex, DueReport};
pub use lease::{KeepAlive, LeaseLost, LeaseOrRedis, SweepLease};
pub use observe::{judge, observe, ActivityPair, Finding, ObserveStats, Pair, Scope};
pub use skip::{enqueue_skip, SkipError, SkipReceipt};
pub use sweep::{
    census_share, sweep, BreakerReport, KindReport, SweepError, SweepOptions, SweepReport,
    DEFAULT_CENSUS_INTERVAL,
};
