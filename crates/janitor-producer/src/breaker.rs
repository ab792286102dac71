//! The blast-radius breaker: what stops a sweep from doing harm at scale.
//!
//! Two things look like "everything is dead" to a sweep and are not: a fleet-wide outage
//! (every slot's renewal stops at once, the platform could not finish runs either) and a
//! wrong view of the world (an empty or stale database, a lagging replica, another
//! deployment's `DATABASE_URL`). The breaker guards every effect that removes a slot or
//! fails a run — reclaims, releases of slots whose row is missing, orphan and
//! never-launched fails — and judges each pass on what became due *since the previous
//! pass*, not on the backlog it held back itself (judging the backlog would trip it again
//! on every pass, forever):
//!
//! - **closed**: everything goes out.
//! - **holding**: a pass found more newly due guarded effects than the thresholds allow;
//!   nothing guarded goes out for the cool-off (the platform's own governor holds 5
//!   minutes), and the trip is alerted.
//! - **draining**: after the cool-off, guarded jobs go out at a bounded rate (a token
//!   bucket of effects per minute), oldest deadline first, each re-checked by its worker as
//!   usual; once a pass's whole backlog fits in the allowance the breaker closes. A real
//!   incident is so cleaned up without a human, a wrong one slowed to a trickle.
//! - **refused**: most slots have no row at all — the signature of a wrong database. No
//!   job goes out until someone fixes `DATABASE_URL` or overrides with `--force`.
//!
//! The state lives in Redis beside the sweep lease (one sweep at a time reads and writes
//! it), so it survives producer restarts and is shared by standby producers.
//! [`Breaker::judge`] is pure: the whole state machine is tested without a server.

use redis::aio::ConnectionManager;
use serde::Serialize;

/// Rowless slots above this count (and fraction) are the wrong-database signature.
pub const WRONG_DATABASE_MIN_SLOTS: u64 = 20;
/// Rowless slots above this fraction of the slots seen (and count) are the signature.
pub const WRONG_DATABASE_FRACTION: f64 = 0.5;

/// The breaker's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Breaker {
    /// Trip when the guarded effects that became due since the previous pass exceed this
    /// fraction of the pairs judged…
    pub max_fraction: f64,
    /// …and this number.
    pub min_reclaims: u64,
    /// How long a trip holds every guarded effect back.
    pub cool_off_secs: u64,
    /// After the cool-off, at most this many guarded jobs per minute.
    pub drain_per_minute: u64,
    /// The window due passes are judged over (a decay time constant, seconds): the full
    /// sweep interval, so that a due pass sees what a full sweep would have judged as new.
    pub window_secs: f64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            max_fraction: 0.5,
            min_reclaims: 100,
            cool_off_secs: 300,
            drain_per_minute: 100,
            window_secs: DUE_WINDOW_SECS,
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Closed,
    Holding,
    Draining,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Holding => "holding",
            Self::Draining => "draining",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "holding" => Self::Holding,
            "draining" => Self::Draining,
            _ => Self::Closed,
        }
    }
}

/// The breaker's memory between passes (unix seconds, Redis time).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct BreakerState {
    pub mode: Mode,
    /// When it last tripped.
    pub tripped_at: Option<f64>,
    /// Drain allowance left, and when it was last topped up.
    pub tokens: f64,
    pub tokens_at: f64,
    /// The judging instant of the previous pass that acted: what became due after it is
    /// new to this pass.
    pub previous_pass: Option<f64>,
    /// Pairs the last full sweep judged: the fleet a due pass is judged against.
    pub fleet: u64,
    /// The judging instant of the previous due pass (due passes count what became due
    /// after it, full sweeps after `previous_pass`).
    pub due_previous: Option<f64>,
    /// Guarded effects due passes found newly due, summed with an exponential decay of
    /// [`Breaker::window_secs`], and when that sum was last updated.
    pub recent: f64,
    pub recent_at: f64,
}

/// The default window over which due passes' newly due guarded effects are summed (a decay
/// time constant; `janitor run` uses its full-sweep interval): a due pass sees one second of
/// deaths, so the breaker judges a sweep interval of them against the fleet, as a full
/// sweep judged what became due since its previous pass against its pairs.
pub const DUE_WINDOW_SECS: f64 = 60.0;

/// Serializes the breaker's read-judge-write between the full sweep and the due pass of
/// one process (across processes, the sweep lease does).
pub static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a pass saw, for [`Breaker::judge`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PassFigures {
    /// This pass's judging instant (unix seconds).
    pub now: f64,
    /// Pairs judged (slots and slotless open rows).
    pub judged: u64,
    /// Slots seen, and those of them whose run has no row at all.
    pub slots: u64,
    pub rowless_slots: u64,
    /// Guarded effects found, and those that became due after the previous pass.
    pub guarded: u64,
    pub guarded_new: u64,
}

/// What the breaker lets this pass do with its guarded jobs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Everything goes out (closed, or overridden with `--force`).
    Allow,
    /// Nothing guarded goes out until `until` (unix seconds). `tripped` is true on the
    /// pass that tripped it.
    Hold { until: f64, tripped: bool },
    /// At most `allow` guarded jobs go out this pass.
    Drain { allow: u64 },
    /// The wrong-database signature: nothing at all goes out.
    Refuse { rowless: u64, slots: u64 },
}

impl Decision {
    /// Whether guarded work is being held back (for the `breaker_tripped` flag).
    pub fn holds_back(&self) -> bool {
        !matches!(self, Self::Allow)
    }

    /// How many guarded jobs may go out (`u64::MAX`: all).
    pub fn allowance(&self) -> u64 {
        match self {
            Self::Allow => u64::MAX,
            Self::Drain { allow } => *allow,
            Self::Hold { .. } | Self::Refuse { .. } => 0,
        }
    }
}

impl Breaker {
    /// Whether `new` guarded effects among `judged` pairs are a blast.
    pub fn trips(&self, new: u64, judged: u64) -> bool {
        new > self.min_reclaims && (new as f64) > self.max_fraction * judged as f64
    }

    /// Decides this pass and moves `state` on. The caller then spends the drain allowance
    /// with [`Breaker::spent`] and stores the state.
    pub fn judge(&self, state: &mut BreakerState, pass: &PassFigures, force: bool) -> Decision {
        if force {
            *state = BreakerState {
                previous_pass: Some(pass.now),
                ..BreakerState::default()
            };
            return Decision::Allow;
        }
        if pass.rowless_slots > WRONG_DATABASE_MIN_SLOTS
            && (pass.rowless_slots as f64) > WRONG_DATABASE_FRACTION * pass.slots as f64
        {
            // `previous_pass` stays: once the database is right, what is due is judged as new.
            return Decision::Refuse {
                rowless: pass.rowless_slots,
                slots: pass.slots,
            };
        }
        state.previous_pass = Some(pass.now);
        let cool_off = self.cool_off_secs as f64;
        if self.trips(pass.guarded_new, pass.judged) {
            state.mode = Mode::Holding;
            state.tripped_at = Some(pass.now);
            state.tokens = 0.0;
            return Decision::Hold {
                until: pass.now + cool_off,
                tripped: true,
            };
        }
        if state.mode == Mode::Holding {
            let until = state.tripped_at.unwrap_or(pass.now) + cool_off;
            if pass.now < until {
                return Decision::Hold {
                    until,
                    tripped: false,
                };
            }
            // A first minute's allowance as the drain starts.
            state.mode = Mode::Draining;
            state.tokens = self.drain_per_minute as f64;
            state.tokens_at = pass.now;
        }
        if state.mode == Mode::Draining {
            let rate = self.drain_per_minute as f64 / 60.0;
            let elapsed = (pass.now - state.tokens_at).max(0.0);
            state.tokens = (state.tokens + elapsed * rate).min(self.drain_per_minute as f64);
            state.tokens_at = pass.now;
            let allow = state.tokens.floor().max(0.0) as u64;
            if pass.guarded <= allow {
                state.mode = Mode::Closed;
                state.tripped_at = None;
                state.tokens = 0.0;
                return Decision::Allow;
            }
            return Decision::Drain { allow };
        }
        Decision::Allow
    }

    /// Decides a due pass. A due pass judges only the pairs due now, so it is judged on the
    /// guarded effects due passes found over the last `window_secs` (a decaying sum)
    /// against the fleet the last full sweep judged, and never drains: while the breaker is
    /// holding or draining, guarded work is the full sweep's, at the drain rate.
    pub fn judge_due(&self, state: &mut BreakerState, pass: &PassFigures, force: bool) -> Decision {
        let decay = if state.recent_at > 0.0 {
            (-(pass.now - state.recent_at).max(0.0) / self.window_secs.max(1.0)).exp()
        } else {
            0.0
        };
        state.recent = state.recent * decay + pass.guarded_new as f64;
        state.recent_at = pass.now;
        state.due_previous = Some(pass.now);
        if force {
            return Decision::Allow;
        }
        match state.mode {
            Mode::Closed => {
                let fleet = state.fleet.max(pass.judged);
                if self.trips(state.recent.floor() as u64, fleet) {
                    state.mode = Mode::Holding;
                    state.tripped_at = Some(pass.now);
                    state.tokens = 0.0;
                    return Decision::Hold {
                        until: pass.now + self.cool_off_secs as f64,
                        tripped: true,
                    };
                }
                Decision::Allow
            }
            Mode::Holding => Decision::Hold {
                until: state.tripped_at.unwrap_or(pass.now) + self.cool_off_secs as f64,
                tripped: false,
            },
            Mode::Draining => Decision::Drain { allow: 0 },
        }
    }

    /// Records that `pushed` guarded jobs went out under a drain allowance.
    pub fn spent(state: &mut BreakerState, pushed: u64) {
        if state.mode == Mode::Draining {
            state.tokens = (state.tokens - pushed as f64).max(0.0);
        }
    }
}

/// The Redis hash holding a queue's breaker state.
pub fn state_key(queue: &str) -> String {
    format!("{queue}:janitor:breaker")
}

/// Reads the breaker state (a missing or unreadable field reads as its default).
pub async fn load(
    conn: &ConnectionManager,
    queue: &str,
) -> Result<BreakerState, redis::RedisError> {
    let fields: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(state_key(queue))
        .arg(&[
            "mode",
            "tripped_at",
            "tokens",
            "tokens_at",
            "previous_pass",
            "fleet",
            "due_previous",
            "recent",
            "recent_at",
        ])
        .query_async(&mut conn.clone())
        .await?;
    let num = |i: usize| -> Option<f64> {
        fields
            .get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    Ok(BreakerState {
        mode: fields
            .first()
            .cloned()
            .flatten()
            .map_or(Mode::Closed, |m| Mode::parse(&m)),
        tripped_at: num(1),
        tokens: num(2).unwrap_or(0.0),
        tokens_at: num(3).unwrap_or(0.0),
        previous_pass: num(4),
        fleet: num(5).map_or(0, |n| n.max(0.0) as u64),
        due_previous: num(6),
        recent: num(7).unwrap_or(0.0).max(0.0),
        recent_at: num(8).unwrap_or(0.0),
    })
}

/// Writes the breaker state.
pub async fn store(
    conn: &ConnectionManager,
    queue: &str,
    state: &BreakerState,
) -> Result<(), redis::RedisError> {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    redis::cmd("HSET")
        .arg(state_key(queue))
        .arg("mode")
        .arg(state.mode.as_str())
        .arg("tripped_at")
        .arg(opt(state.tripped_at))
        .arg("tokens")
        .arg(state.tokens.to_string())
        .arg("tokens_at")
        .arg(state.tokens_at.to_string())
        .arg("previous_pass")
        .arg(opt(state.previous_pass))
        .arg("fleet")
        .arg(state.fleet)
        .arg("due_previous")
        .arg(opt(state.due_previous))
        .arg("recent")
        .arg(state.recent.to_string())
        .arg("recent_at")
        .arg(state.recent_at.to_string())
        .exec_async(&mut conn.clone())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(now: f64, judged: u64, guarded: u64, guarded_new: u64) -> PassFigures {
        PassFigures {
            now,
            judged,
            slots: judged,
            rowless_slots: 0,
            guarded,
            guarded_new,
        }
    }

    #[test]
    fn trips_need_both_thresholds() {
        let b = Breaker::default();
        assert!(!b.trips(100, 100), "not more than 100");
        assert!(b.trips(101, 150));
        assert!(!b.trips(101, 300), "not more than half");
        assert!(!b.trips(50, 60));
        assert!(b.trips(1_000, 1_000));
    }

    /// Safety issue item 1: a trip used to latch on every later pass (the backlog it held
    /// back stayed stale). Now it holds for the cool-off, drains at the rate, then closes.
    #[test]
    fn a_trip_holds_for_the_cool_off_then_drains_at_the_rate_then_closes() {
        let b = Breaker {
            cool_off_secs: 300,
            drain_per_minute: 60,
            ..Breaker::default()
        };
        let mut s = BreakerState::default();
        assert_eq!(
            b.judge(&mut s, &pass(0.0, 1000, 5, 5), false),
            Decision::Allow
        );
        // 600 of 1,000 die at once.
        assert_eq!(
            b.judge(&mut s, &pass(10.0, 1000, 605, 600), false),
            Decision::Hold {
                until: 310.0,
                tripped: true
            }
        );
        // The held backlog is not new: later passes do not trip again, they hold.
        for t in [20.0, 100.0, 309.0] {
            assert_eq!(
                b.judge(&mut s, &pass(t, 1000, 605, 2), false),
                Decision::Hold {
                    until: 310.0,
                    tripped: false
                }
            );
        }
        // Cool-off over: a minute's allowance, then the rate.
        assert_eq!(
            b.judge(&mut s, &pass(310.0, 1000, 605, 0), false),
            Decision::Drain { allow: 60 }
        );
        Breaker::spent(&mut s, 60);
        assert_eq!(
            b.judge(&mut s, &pass(320.0, 1000, 545, 0), false),
            Decision::Drain { allow: 10 }
        );
        Breaker::spent(&mut s, 10);
        // The bucket never holds more than a minute's worth.
        assert_eq!(
            b.judge(&mut s, &pass(1000.0, 1000, 535, 0), false),
            Decision::Drain { allow: 60 }
        );
        Breaker::spent(&mut s, 60);
        // Once the backlog fits, it closes by itself.
        assert_eq!(
            b.judge(&mut s, &pass(1100.0, 1000, 50, 0), false),
            Decision::Allow
        );
        assert_eq!(s.mode, Mode::Closed);
        assert_eq!(
            b.judge(&mut s, &pass(1110.0, 1000, 90, 90), false),
            Decision::Allow
        );
    }

    #[test]
    fn a_new_blast_while_draining_trips_again() {
        let b = Breaker::default();
        let mut s = BreakerState::default();
        b.judge(&mut s, &pass(0.0, 1000, 600, 600), false);
        assert!(matches!(
            b.judge(&mut s, &pass(301.0, 1000, 600, 0), false),
            Decision::Drain { .. }
        ));
        assert_eq!(
            b.judge(&mut s, &pass(302.0, 1000, 1200, 600), false),
            Decision::Hold {
                until: 602.0,
                tripped: true
            }
        );
    }

    #[test]
    fn the_wrong_database_signature_refuses_until_forced() {
        let b = Breaker::default();
        let mut s = BreakerState::default();
        let wrong = PassFigures {
            now: 5.0,
            judged: 1000,
            slots: 1000,
            rowless_slots: 1000,
            guarded: 1000,
            guarded_new: 1000,
        };
        for t in [5.0, 500.0, 5000.0] {
            assert_eq!(
                b.judge(&mut s, &PassFigures { now: t, ..wrong }, false),
                Decision::Refuse {
                    rowless: 1000,
                    slots: 1000
                }
            );
        }
        assert_eq!(b.judge(&mut s, &wrong, true), Decision::Allow);
        // Few slots, or a minority rowless: not the signature.
        let few = PassFigures {
            slots: 20,
            rowless_slots: 20,
            judged: 20,
            guarded: 20,
            guarded_new: 20,
            now: 6.0,
        };
        assert_eq!(b.judge(&mut s, &few, false), Decision::Allow);
        let minority = PassFigures {
            slots: 100,
            rowless_slots: 50,
            judged: 100,
            guarded: 50,
            guarded_new: 50,
            now: 7.0,
        };
        assert_eq!(b.judge(&mut s, &minority, false), Decision::Allow);
    }

    /// Issue 14: a due pass sees one second of deaths. Judged on its own pairs (all due,
    /// mostly dead) it would trip on every pass; judged per second against the fleet it would
    /// never see a mass death spread over several seconds. It is judged on a minute's
    /// decaying sum against the fleet the last full sweep judged.
    #[test]
    fn due_passes_are_judged_on_a_minute_of_deaths_against_the_fleet() {
        let b = Breaker::default();
        let fleet = 100_000;
        let mut s = BreakerState {
            fleet,
            ..BreakerState::default()
        };
        // 1% of the fleet dying each minute, a due pass a second: never trips, although
        // every pass's pairs are all due.
        for t in 1..=600 {
            let steady = pass(t as f64, 17, 17, 17);
            assert_eq!(
                b.judge_due(&mut s, &steady, false),
                Decision::Allow,
                "t={t}"
            );
        }
        assert!(s.recent < 1_100.0, "{}", s.recent);
        // 60% of the fleet dies within ten seconds (what tripped a 10 s full sweep): no
        // single pass is a blast (6,000 of 100,000), the ten seconds are.
        let mut tripped_at = None;
        for t in 601..=610 {
            let mass = pass(t as f64, 6_000, 6_000, 6_000);
            if let Decision::Hold { tripped: true, .. } = b.judge_due(&mut s, &mass, false) {
                tripped_at = Some(t);
                break;
            }
        }
        let t = tripped_at.expect("a mass death must trip the breaker");
        assert_eq!(s.mode, Mode::Holding);
        // Holding: the due pass sends nothing guarded; draining is the full sweep's.
        let next = pass(t as f64 + 1.0, 10, 10, 10);
        assert!(matches!(
            b.judge_due(&mut s, &next, false),
            Decision::Hold { tripped: false, .. }
        ));
        s.mode = Mode::Draining;
        assert_eq!(
            b.judge_due(&mut s, &pass(t as f64 + 2.0, 10, 10, 10), false),
            Decision::Drain { allow: 0 }
        );
        // --force overrides, as for sweeps.
        assert_eq!(
            b.judge_due(&mut s, &pass(t as f64 + 3.0, 10, 10, 10), true),
            Decision::Allow
        );
    }

    /// The soak's fleet (~220 live pairs, 10 deaths a second, a full sweep every 5 s) tripped
    /// a breaker that summed due passes over a fixed minute: 600 deaths a minute is more
    /// than the fleet, yet each sweep interval's 50 are not a blast. The window is the
    /// full-sweep interval.
    #[test]
    fn a_small_fleet_turning_over_fast_does_not_trip_due_passes() {
        let judge_for = |window_secs: f64| {
            let b = Breaker {
                window_secs,
                ..Breaker::default()
            };
            let mut s = BreakerState {
                fleet: 220,
                ..BreakerState::default()
            };
            (1..=120)
                .map(|t| b.judge_due(&mut s, &pass(t as f64, 10, 10, 10), false))
                .find(|d| *d != Decision::Allow)
        };
        assert_eq!(judge_for(5.0), None);
        assert!(judge_for(60.0).is_some(), "a fixed minute trips");
    }

    /// Without a full sweep's count (a fresh queue), the pass's own pairs are the fleet, and
    /// the floor of `min_reclaims` still holds.
    #[test]
    fn a_due_pass_without_a_fleet_count_needs_more_than_the_floor() {
        let b = Breaker::default();
        let mut s = BreakerState::default();
        assert_eq!(
            b.judge_due(&mut s, &pass(1.0, 100, 100, 100), false),
            Decision::Allow
        );
        let mut s = BreakerState::default();
        assert!(matches!(
            b.judge_due(&mut s, &pass(1.0, 150, 150, 150), false),
            Decision::Hold { tripped: true, .. }
        ));
    }
}
