//! The worker side of janitor: applying cleanup jobs idempotently, on apalis workers.
//!
//! [`Applier::apply`] is the whole of a job's effect; [`runner`] decides when a job is
//! retried and when it is dead, and keeps workers running through Redis failures.

mod apply;
mod gate;
pub mod runner;

pub use apply::{Applier, Effect, Hook, Moot, Outcome};
pub use runner::{KindTally, Tally, WorkerOptions, DEFAULT_CONCURRENCY, MAX_BATCH};
