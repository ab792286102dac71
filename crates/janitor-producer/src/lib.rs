//! The producer side of janitor: observing Redis and SQL together and judging every pair.
//!
//! [`observe`] is the one pass both the stuck-records report and the sweep use: stream every
//! slot (pairing each with its row), then every open row that holds no slot, and run the
//! same [`janitor_core::decide`] on each pair. Memory is bounded by the batch size.

mod observe;

pub use observe::{judge, observe, Finding, ObserveStats, Pair};
