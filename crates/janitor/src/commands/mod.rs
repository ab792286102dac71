//! One file per command.

pub mod audit;
pub mod config;
pub mod healthcheck;
pub mod migrate;
pub mod queue;
pub mod run;
pub mod serve;
pub mod skip;
pub mod stuck;
pub mod sweep;
pub mod work;
