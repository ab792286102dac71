//! The worker side of janitor: applying cleanup jobs idempotently.
//!
//! [`Applier::apply`] is the whole of a job's effect; the queue runner around it only
//! decides when to retry and when a job is dead.

mod apply;

pub use apply::{Applier, Effect, Moot, Outcome};
