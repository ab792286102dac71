//! The short soak, part of `make test`: 1,200 runs per database against janitor's real
//! processes, with worker and producer kills, a Redis kill -9 and restart, and a database
//! outage longer than a retry budget. Any false reap, miss, duplicate, change without its
//! audit row (or audit row without its change), wrong effect or process that exits by
//! itself fails the suite; the output names the seed and the offending runs' histories.
//! Each run draws a new seed, so the suite explores; `janitor-soak --seed N` replays one.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn short_soak(db: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_janitor-soak"))
        .args(["--short", "--db", db])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the short soak on {db} failed ({:?})\n{stdout}\n{stderr}",
        out.status
    );
    for figure in [
        "| false reaps | 0 | 0 |",
        "| duplicates | 0 | 0 |",
        "| changes without their audit row | 0 | 0 |",
    ] {
        assert!(stdout.contains(figure), "{figure} missing from\n{stdout}");
    }
}

#[test]
fn the_short_soak_on_sqlite_harms_nothing_and_misses_nothing() {
    short_soak("sqlite");
}

#[test]
fn the_short_soak_on_postgres_harms_nothing_and_misses_nothing() {
    short_soak("postgres");
}
