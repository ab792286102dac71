//! One file per command.

pub mod config;
pub mod migrate;
pub mod stuck;
