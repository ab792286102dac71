//! The Redis slot store against a real Redis, each test under its own key prefix.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use chrono::TimeDelta;
use futures::TryStreamExt as _;
use janitor_core::{
    decide, parse_timestamp, to_unix_seconds, AgentName, ExecutionId, Liveness, Policy,
    RowObservation, SlotTimeout, Status, Verdict,
};
use janitor_store::{
    Acquire, CensusWalk, PairedSet, Reclaim, Release, Renew, SlotEntry, SlotKeys, SlotStore,
};
use redis::AsyncCommands as _;

async fn store() -> (SlotStore, redis::aio::ConnectionManager) {
    let (slots, meta) = janitor_testkit::slot_prefixes();
    let store = SlotStore::connect(
        &janitor_testkit::redis_url(),
        SlotKeys::new(slots, meta),
        300,
    )
    .await
    .expect("redis is reachable");
    let conn = store.connection();
    (store, conn)
}

fn agent(name: &str) -> AgentName {
    AgentName::parse(name).unwrap()
}

fn exec(id: &str) -> ExecutionId {
    ExecutionId::parse(id).unwrap()
}

/// Writes a slot the way the platform does, acquired `age` ago.
async fn seed_slot(
    store: &SlotStore,
    conn: &mut redis::aio::ConnectionManager,
    agent: &AgentName,
    execution: &ExecutionId,
    age: TimeDelta,
    timeout: Option<&str>,
) -> f64 {
    let now = store.server_time().await.unwrap();
    let score = to_unix_seconds(now - age);
    let _: () = conn
        .zadd(store.keys().slots(agent), execution.as_str(), score)
        .await
        .unwrap();
    let meta = store.keys().meta(agent, execution);
    let _: () = conn
        .hset(&meta, "started_at", "2026-05-01T15:30:00.000000")
        .await
        .unwrap();
    if let Some(timeout) = timeout {
        let _: () = conn.hset(&meta, "timeout_seconds", timeout).await.unwrap();
    }
    score
}

async fn scan_all(store: &SlotStore, batch: usize) -> Vec<SlotEntry> {
    let batches: Vec<Vec<SlotEntry>> = store.scan(batch).try_collect().await.unwrap();
    batches.into_iter().flatten().collect()
}

fn running(
    agent: &AgentName,
    execution: &ExecutionId,
    started: chrono::DateTime<chrono::Utc>,
) -> RowObservation {
    RowObservation {
        execution_id: execution.clone(),
        agent: agent.clone(),
        status: Status::Running,
        started_at: Ok(started),
        session: Some("dispatched".into()),
        session_tracked: true,
        started_at_raw: String::new(),
        effective_timeout: Some(3600),
        timeout_unread: false,
        lease: None,
        lease_raw: None,
        redelivery_count: 0,
        completed: false,
    }
}

#[tokio::test]
async fn acquire_writes_the_platform_layout_and_is_idempotent() {
    let (store, mut conn) = store().await;
    let a = agent("team:alpha/β one");
    let e = exec("exec-1");
    let got = store
        .acquire(&a, &e, 3, 3900, &"x".repeat(300))
        .await
        .unwrap();
    let Acquire::Acquired { slot_number, score } = got else {
        panic!("{got:?}")
    };
    assert_eq!(slot_number, 1);

    let meta: BTreeMap<String, String> = conn.hgetall(store.keys().meta(&a, &e)).await.unwrap();
    assert_eq!(meta["timeout_seconds"], "3900");
    assert_eq!(meta["slot_number"], "1");
    assert_eq!(meta["message_preview"].chars().count(), 100);
    // started_at is naive ISO (no zone) and names the same instant as the score.
    let started = &meta["started_at"];
    assert!(!started.ends_with('Z'), "{started}");
    let started = parse_timestamp(started).unwrap();
    assert!(
        (to_unix_seconds(started) - score).abs() < 1e-5,
        "{started} vs {score}"
    );
    let ttl: i64 = conn.ttl(store.keys().meta(&a, &e)).await.unwrap();
    assert!(
        (4190..=4200).contains(&ttl),
        "EXPIRE = timeout + buffer, got {ttl}"
    );

    // Re-acquiring the same id changes nothing.
    let again = store.acquire(&a, &e, 3, 3900, "other").await.unwrap();
    assert_eq!(
        again,
        Acquire::AlreadyHeld {
            slot_number: 1,
            score
        }
    );
    let count: i64 = conn.zcard(store.keys().slots(&a)).await.unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn fifty_concurrent_acquirers_on_capacity_three_admit_exactly_three() {
    let (store, mut conn) = store().await;
    let a = agent("busy agent");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            store
                .acquire(&a, &exec(&format!("e{i}")), 3, 600, "hi")
                .await
                .unwrap()
        }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Acquire::Acquired { .. } => admitted += 1,
            Acquire::Full { held } => {
                assert_eq!(held, 3);
                refused += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((admitted, refused), (3, 47));
    let count: i64 = conn.zcard(store.keys().slots(&a)).await.unwrap();
    assert_eq!(count, 3);
}

#[tokio::test]
async fn renew_and_release_never_resurrect() {
    let (store, mut conn) = store().await;
    let (a, e) = (agent("a"), exec("e"));
    assert_eq!(store.renew(&a, &e, None).await.unwrap(), Renew::NotHeld);
    let exists: bool = conn.exists(store.keys().slots(&a)).await.unwrap();
    assert!(!exists, "renewing a missing slot must not create it");

    let old = seed_slot(
        &store,
        &mut conn,
        &a,
        &e,
        TimeDelta::minutes(10),
        Some("900"),
    )
    .await;
    let Renew::Renewed { score } = store.renew(&a, &e, None).await.unwrap() else {
        panic!()
    };
    assert!(score > old + 500.0);
    let ttl: i64 = conn.ttl(store.keys().meta(&a, &e)).await.unwrap();
    assert!((1190..=1200).contains(&ttl), "{ttl}");

    assert_eq!(store.release(&a, &e).await.unwrap(), Release::Released);
    assert_eq!(store.release(&a, &e).await.unwrap(), Release::NotHeld);
    let meta_exists: bool = conn.exists(store.keys().meta(&a, &e)).await.unwrap();
    assert!(!meta_exists);
}

#[tokio::test]
async fn the_incident_21_minute_slot_survives_a_stale_one_is_reclaimed() {
    let (store, mut conn) = store().await;
    let a = agent("incident");
    let live = exec("live3600");
    let stale = exec("stale900");
    seed_slot(
        &store,
        &mut conn,
        &a,
        &live,
        TimeDelta::minutes(21),
        Some("3600"),
    )
    .await;
    // 900 s timeout + 300 s buffer: stale after 20 minutes.
    seed_slot(
        &store,
        &mut conn,
        &a,
        &stale,
        TimeDelta::minutes(21),
        Some("900"),
    )
    .await;

    let now = store.server_time().await.unwrap();
    let policy = Policy::default();
    let mut reclaimed = Vec::new();
    for entry in scan_all(&store, 10).await {
        let SlotEntry::Slot(slot) = entry else {
            panic!("{entry:?}")
        };
        let s = &slot.observation;
        let row = running(&s.agent, &s.execution_id, now - TimeDelta::minutes(21));
        match decide(Some(s), Some(&row), &Liveness::NONE, now, &policy) {
            Verdict::ReclaimStaleSlot { deadline, fail_row } => {
                assert!(fail_row);
                let outcome = store
                    .reclaim_if_expired(&s.agent, &s.execution_id, s.score, deadline)
                    .await
                    .unwrap();
                assert_eq!(outcome, Reclaim::Reclaimed);
                reclaimed.push(s.execution_id.clone());
            }
            Verdict::Healthy { .. } => assert_eq!(s.execution_id, live),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reclaimed, vec![stale.clone()]);
    let members: Vec<String> = conn.zrange(store.keys().slots(&a), 0, -1).await.unwrap();
    assert_eq!(members, vec!["live3600".to_owned()]);
    let meta_exists: bool = conn.exists(store.keys().meta(&a, &stale)).await.unwrap();
    assert!(!meta_exists, "the reclaimed slot's hash is gone too");
}

#[tokio::test]
async fn a_renewal_between_scan_and_reclaim_wins() {
    let (store, mut conn) = store().await;
    let (a, e) = (agent("racer"), exec("r1"));
    seed_slot(&store, &mut conn, &a, &e, TimeDelta::hours(2), Some("600")).await;
    let now = store.server_time().await.unwrap();
    let SlotEntry::Slot(slot) = scan_all(&store, 10).await.remove(0) else {
        panic!()
    };
    let s = slot.observation;
    let Verdict::ReclaimStaleSlot { deadline, .. } =
        decide(Some(&s), None, &Liveness::NONE, now, &Policy::default())
    else {
        panic!()
    };
    // The run heartbeats after the scan...
    let Renew::Renewed { score } = store.renew(&a, &e, None).await.unwrap() else {
        panic!()
    };
    // ...so the reclaim sees a different score and leaves the slot alone.
    let outcome = store
        .reclaim_if_expired(&a, &e, s.score, deadline)
        .await
        .unwrap();
    assert_eq!(outcome, Reclaim::Renewed { score });
    let held: Option<f64> = conn
        .zscore(store.keys().slots(&a), e.as_str())
        .await
        .unwrap();
    assert_eq!(held, Some(score));
}

#[tokio::test]
async fn compare_and_delete_outcomes() {
    let (store, mut conn) = store().await;
    let (a, e) = (agent("cad"), exec("c1"));
    let score = seed_slot(
        &store,
        &mut conn,
        &a,
        &e,
        TimeDelta::minutes(1),
        Some("600"),
    )
    .await;
    let now = store.server_time().await.unwrap();
    // Deadline in the future by Redis' clock: refused.
    let outcome = store
        .reclaim_if_expired(&a, &e, score, now + TimeDelta::minutes(5))
        .await
        .unwrap();
    assert_eq!(outcome, Reclaim::NotYetDue);
    // Wrong observed score: refused.
    let outcome = store
        .release_if_unchanged(&a, &e, score + 1.0)
        .await
        .unwrap();
    assert!(matches!(outcome, Reclaim::Renewed { .. }));
    // Exact score, no deadline: released; again: already gone.
    assert_eq!(
        store.release_if_unchanged(&a, &e, score).await.unwrap(),
        Reclaim::Reclaimed
    );
    assert_eq!(
        store.release_if_unchanged(&a, &e, score).await.unwrap(),
        Reclaim::AlreadyGone
    );
}

#[tokio::test]
async fn scan_finds_every_slot_once_with_odd_names_and_reports_corruption() {
    let (store, mut conn) = store().await;
    let names = [
        "plain",
        "with:colon",
        "with space",
        "path/like",
        "ünïcødé-агент",
        "a:b:c",
    ];
    let mut expected = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        for j in 0..7 {
            let e = exec(&format!("x{i}_{j}"));
            let timeout = if j == 0 { None } else { Some("1200") };
            seed_slot(
                &store,
                &mut conn,
                &agent(name),
                &e,
                TimeDelta::minutes(1),
                timeout,
            )
            .await;
            expected.insert((name.to_string(), e.to_string()));
        }
    }
    // Corrupt: a member that cannot be an execution id, and unreadable metadata.
    let _: () = conn
        .zadd(store.keys().slots(&agent("plain")), "bad:member", 1.0)
        .await
        .unwrap();
    let _: () = conn
        .hset(
            store.keys().meta(&agent("plain"), &exec("x0_1")),
            "timeout_seconds",
            "soon",
        )
        .await
        .unwrap();
    // A key of another type under the prefix is not a slot set.
    let _: () = conn
        .set(format!("{}stray-string", store.keys().slot_prefix()), "1")
        .await
        .unwrap();

    let mut seen = HashSet::new();
    let mut corrupt = Vec::new();
    for entry in scan_all(&store, 2).await {
        match entry {
            SlotEntry::Slot(s) => {
                let key = (
                    s.observation.agent.to_string(),
                    s.observation.execution_id.to_string(),
                );
                if key.1 == "x0_1" {
                    assert_eq!(s.observation.timeout, SlotTimeout::Corrupt("soon".into()));
                } else if key.1.ends_with("_0") {
                    assert_eq!(s.observation.timeout, SlotTimeout::Missing);
                } else {
                    assert_eq!(s.observation.timeout, SlotTimeout::Declared(1200));
                }
                assert!(s.has_meta);
                assert!(seen.insert(key), "seen twice");
            }
            SlotEntry::Corrupt(c) => corrupt.push(c),
        }
    }
    assert_eq!(seen, expected);
    assert_eq!(corrupt.len(), 1);
    assert_eq!(corrupt[0].member, "bad:member");
    assert!(corrupt[0].reason.contains("':'"), "{}", corrupt[0].reason);
}

#[tokio::test]
async fn lookup_finds_the_slots_of_given_runs() {
    let (store, mut conn) = store().await;
    let a = agent("look up");
    seed_slot(
        &store,
        &mut conn,
        &a,
        &exec("held"),
        TimeDelta::minutes(1),
        Some("700"),
    )
    .await;
    let found = store
        .lookup(&[
            (a.clone(), exec("held")),
            (a.clone(), exec("free")),
            (agent("nobody"), exec("held")),
        ])
        .await
        .unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(
        found[0].as_ref().unwrap().timeout,
        SlotTimeout::Declared(700)
    );
    assert!(found[1].is_none());
    assert!(found[2].is_none());
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_transient_error() {
    let err = SlotStore::connect("redis://127.0.0.1:1", SlotKeys::default(), 300)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().starts_with("redis:"), "{err}");
}

/// The sweep's row pass pairs open runs with their slots; the slot pass then reads only the
/// ZSETs holding a slot it did not pair, and every member of those.
#[tokio::test]
async fn scan_unpaired_skips_zsets_whose_slots_were_all_paired() {
    let (store, mut conn) = store().await;
    let (a, b, c) = (agent("a:team"), agent("b ü"), agent("c"));
    let age = TimeDelta::seconds(30);
    let a1 = seed_slot(&store, &mut conn, &a, &exec("a1"), age, Some("90")).await;
    seed_slot(&store, &mut conn, &a, &exec("a2"), age, None).await;
    seed_slot(&store, &mut conn, &b, &exec("b1"), age, None).await;
    seed_slot(&store, &mut conn, &b, &exec("b-leaked"), age, None).await;
    seed_slot(&store, &mut conn, &c, &exec("c-rowless"), age, None).await;

    let paired = store.paired_set();
    // Two pages, as the row pass sends them; "b2" is an open run without a slot.
    let readable =
        |reads: Vec<janitor_store::SlotRead>| -> Vec<Option<janitor_core::SlotObservation>> {
            reads.into_iter().map(|r| r.unwrap()).collect()
        };
    let first = readable(
        store
            .pair_open(&paired, &[(a.clone(), exec("a1")), (b.clone(), exec("b1"))])
            .await
            .unwrap(),
    );
    let second = readable(
        store
            .pair_open(&paired, &[(a.clone(), exec("a2")), (b.clone(), exec("b2"))])
            .await
            .unwrap(),
    );
    let a1_slot = first[0].as_ref().expect("a1 holds a slot");
    assert_eq!(a1_slot.score, a1);
    assert_eq!(a1_slot.timeout, SlotTimeout::Declared(90));
    assert!(first[1].is_some() && second[0].is_some());
    assert!(second[1].is_none(), "b2 holds no slot");

    let now = store.server_time().await.unwrap();
    let census = store.census_walk(CensusWalk::Whole, now).await.unwrap();
    assert_eq!(census.keys, 3, "three slot ZSETs");
    assert!(census.whole && census.completed, "{census:?}");
    // a's two slots were both paired: skipped whole. b's ZSET holds a leaked slot: all of
    // it comes back. c was never paired.
    assert_eq!(
        unpaired_ids(&store, &paired, 2).await,
        ["b-leaked", "b1", "c-rowless"]
    );

    store.drop_paired(&paired).await.unwrap();
    let exists: usize = conn.exists(paired.key()).await.unwrap();
    assert_eq!(exists, 0, "the scratch hash is deleted");
    // Without any pairing, every slot comes back (the census stays for the next sweep).
    let fresh = store.paired_set();
    assert_eq!(unpaired_ids(&store, &fresh, 10).await.len(), 5);
}

/// A long-running producer's sweeps read a run's `timeout_seconds` once and reuse it while
/// the slot's score stays the same; a moved score, an unreadable or missing field is read
/// again every time. (The platform never rewrites the field of a slot it holds: here it is
/// rewritten behind the score's back only to show which reads were reused.)
#[tokio::test]
async fn a_long_running_producers_sweeps_reuse_a_timeout_while_the_slot_stays_put() {
    let (plain, mut conn) = store().await;
    let store = plain.clone().with_timeout_cache();
    let a = agent("team/a ü");
    let (kept, corrupt, missing) = (exec("kept"), exec("corrupt"), exec("missing"));
    let age = TimeDelta::seconds(30);
    let score = seed_slot(&store, &mut conn, &a, &kept, age, Some("90")).await;
    let corrupt_score = seed_slot(&store, &mut conn, &a, &corrupt, age, Some("90s")).await;
    let missing_score = seed_slot(&store, &mut conn, &a, &missing, age, None).await;
    let runs = [
        (a.clone(), kept.clone()),
        (a.clone(), corrupt.clone()),
        (a.clone(), missing.clone()),
        (a.clone(), exec("slotless")),
    ];
    let timeouts = |store: SlotStore| {
        let runs = runs.clone();
        async move {
            let paired = store.paired_set();
            let reads = store.pair_open(&paired, &runs).await.unwrap();
            store.drop_paired(&paired).await.unwrap();
            reads
                .into_iter()
                .map(|r| r.unwrap().map(|slot| (slot.score, slot.timeout)))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        timeouts(store.clone()).await,
        [
            Some((score, SlotTimeout::Declared(90))),
            Some((corrupt_score, SlotTimeout::Corrupt("90s".into()))),
            Some((missing_score, SlotTimeout::Missing)),
            None,
        ]
    );
    for id in [&kept, &corrupt, &missing] {
        let _: () = conn
            .hset(store.keys().meta(&a, id), "timeout_seconds", "120")
            .await
            .unwrap();
    }
    // Same score: the timeout read before is reused; the others are read again.
    assert_eq!(
        timeouts(store.clone()).await,
        [
            Some((score, SlotTimeout::Declared(90))),
            Some((corrupt_score, SlotTimeout::Declared(120))),
            Some((missing_score, SlotTimeout::Declared(120))),
            None,
        ]
    );
    // A store without the cache (every one-shot command) reads every time.
    assert_eq!(
        timeouts(plain.clone()).await[0],
        Some((score, SlotTimeout::Declared(120)))
    );
    // A renewal moves the score: read again, and that reading is the one reused next.
    let renewed = score + 60.0;
    let _: () = redis::cmd("ZADD")
        .arg(store.keys().slots(&a))
        .arg("XX")
        .arg(renewed)
        .arg(kept.as_str())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = conn
        .hset(store.keys().meta(&a, &kept), "timeout_seconds", "150")
        .await
        .unwrap();
    let first = timeouts(store.clone()).await;
    assert_eq!(first[0], Some((renewed, SlotTimeout::Declared(150))));
    // A released slot is gone whatever was remembered of it.
    let _: () = conn
        .zrem(store.keys().slots(&a), kept.as_str())
        .await
        .unwrap();
    assert_eq!(timeouts(store.clone()).await[0], None);
}

/// The members of this layout's census SET.
async fn census_of(store: &SlotStore, conn: &mut redis::aio::ConnectionManager) -> HashSet<String> {
    conn.smembers(store.keys().census()).await.unwrap()
}

/// Every slot of every ZSET in the census that a sweep's slot pass reads (in batches of
/// `batch`), by execution id, sorted.
async fn unpaired_ids(store: &SlotStore, paired: &PairedSet, batch: usize) -> Vec<String> {
    let batches: Vec<Vec<SlotEntry>> = store
        .scan_unpaired(batch, paired)
        .try_collect()
        .await
        .unwrap();
    let mut ids: Vec<String> = batches
        .into_iter()
        .flatten()
        .map(|entry| match entry {
            SlotEntry::Slot(s) => s.observation.execution_id.as_str().to_owned(),
            SlotEntry::Corrupt(c) => panic!("unexpected corrupt slot {c:?}"),
        })
        .collect();
    ids.sort();
    ids
}

/// The census is kept across sweeps and walked a share at a time: with no complete walk
/// (or one older than its bound) a sweep walks the whole keyspace; with a fresh one it goes
/// on from the stored cursor, and a walk that comes back to 0 has found every ZSET that
/// existed through it.
#[tokio::test]
async fn the_census_walk_is_spread_over_sweeps_and_bounded_in_age() {
    let (store, mut conn) = store().await;
    let age = TimeDelta::seconds(30);
    for i in 0..5 {
        seed_slot(
            &store,
            &mut conn,
            &agent(&format!("w{i}")),
            &exec("r"),
            age,
            None,
        )
        .await;
    }
    let share = CensusWalk::Share {
        fraction: 1e-9, // one SCAN call a sweep
        max_age: std::time::Duration::from_secs(300),
    };
    let now = store.server_time().await.unwrap();
    // No walk ever completed: the whole keyspace, now.
    let first = store.census_walk(share, now).await.unwrap();
    assert!(first.whole && first.completed, "{first:?}");
    assert_eq!(census_of(&store, &mut conn).await.len(), 5);

    // A fresh census: one call a sweep, going on until the walk completes. Another tests'
    // keys share this Redis, so the number of sweeps is not known; it is bounded.
    let late = agent("w-late");
    seed_slot(&store, &mut conn, &late, &exec("r"), age, None).await;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    let mut sweeps = 0;
    loop {
        let step = store.census_walk(share, now).await.unwrap();
        assert!(!step.whole && step.calls == 1, "{step:?}");
        sweeps += 1;
        if step.completed {
            break;
        }
        assert!(sweeps < 10 * keys + 100, "the walk never completed");
    }
    assert!(census_of(&store, &mut conn)
        .await
        .contains(&store.keys().slots(&late)));

    // The last complete walk is older than the bound: the whole keyspace again.
    let later = now + TimeDelta::seconds(301);
    let stale = store.census_walk(share, later).await.unwrap();
    assert!(stale.whole && stale.completed, "{stale:?}");
}

/// The row pass adds every ZSET it pairs a slot in to the census, so a ZSET the walk has not
/// reached yet is still read by the slot pass; a census key that is no longer a slot ZSET
/// (its last slot released, or the key now of another type) leaves the census and fails
/// nothing.
#[tokio::test]
async fn the_census_learns_from_the_row_pass_and_forgets_what_is_no_zset() {
    let (store, mut conn) = store().await;
    let age = TimeDelta::seconds(30);
    let (a, gone, odd) = (agent("a"), agent("gone"), agent("odd"));
    seed_slot(&store, &mut conn, &a, &exec("a-open"), age, None).await;
    seed_slot(&store, &mut conn, &a, &exec("a-leaked"), age, None).await;
    seed_slot(&store, &mut conn, &gone, &exec("g"), age, None).await;
    seed_slot(&store, &mut conn, &odd, &exec("o"), age, None).await;

    // No walk yet: the census holds only what the row pass paired.
    let paired = store.paired_set();
    let found = store
        .pair_open(
            &paired,
            &[(a.clone(), exec("a-open")), (agent("b"), exec("b-open"))],
        )
        .await
        .unwrap();
    assert!(found[0].as_ref().unwrap().is_some() && found[1].as_ref().unwrap().is_none());
    let census = census_of(&store, &mut conn).await;
    assert_eq!(census, HashSet::from([store.keys().slots(&a)]));
    assert_eq!(
        unpaired_ids(&store, &paired, 100).await,
        ["a-leaked", "a-open"]
    );

    let now = store.server_time().await.unwrap();
    store.census_walk(CensusWalk::Whole, now).await.unwrap();
    assert_eq!(census_of(&store, &mut conn).await.len(), 3);
    let _: () = conn.del(store.keys().slots(&gone)).await.unwrap();
    let _: () = conn.del(store.keys().slots(&odd)).await.unwrap();
    let _: () = conn
        .set(store.keys().slots(&odd), "not a zset")
        .await
        .unwrap();
    assert_eq!(
        unpaired_ids(&store, &paired, 100).await,
        ["a-leaked", "a-open"]
    );
    assert_eq!(
        census_of(&store, &mut conn).await,
        HashSet::from([store.keys().slots(&a)])
    );
}

#[tokio::test]
async fn in_flight_markers_are_read_in_one_batch_and_sentinels_are_flagged() {
    let (store, mut conn) = store().await;
    let a = agent("team:a");
    let runs = [exec("m1"), exec("m2"), exec("m3")];
    let marker = store.keys().inflight(&runs[1]).unwrap();
    let _: () = conn.set_ex(&marker, "backend-1", 60).await.unwrap();
    // A key of another type is no marker the platform wrote.
    let odd = store.keys().inflight(&runs[2]).unwrap();
    let _: () = conn.sadd(&odd, "x").await.unwrap();
    let live = store.liveness(&runs).await.unwrap();
    assert_eq!(
        live.iter().map(|l| l.in_flight).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert!(store.liveness(&[]).await.unwrap().is_empty());
    // Markers switched off: nothing is read, nothing is alive by a marker.
    let off = SlotStore::connect(
        &janitor_testkit::redis_url(),
        store.keys().clone().with_inflight_prefix(""),
        300,
    )
    .await
    .unwrap();
    assert!(off
        .liveness(&runs)
        .await
        .unwrap()
        .iter()
        .all(|l| !l.in_flight));

    let sentinel = exec("drain-9a");
    seed_slot(
        &store,
        &mut conn,
        &a,
        &sentinel,
        TimeDelta::seconds(60),
        None,
    )
    .await;
    seed_slot(
        &store,
        &mut conn,
        &a,
        &runs[0],
        TimeDelta::seconds(60),
        None,
    )
    .await;
    let found = store
        .lookup(&[(a.clone(), sentinel.clone()), (a.clone(), runs[0].clone())])
        .await
        .unwrap();
    assert!(found[0].as_ref().unwrap().sentinel);
    assert!(!found[1].as_ref().unwrap().sentinel);
    let scanned: Vec<Vec<SlotEntry>> = store.scan(100).try_collect().await.unwrap();
    let flagged: Vec<(String, bool)> = scanned
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            SlotEntry::Slot(s) => Some((
                s.observation.execution_id.to_string(),
                s.observation.sentinel,
            )),
            SlotEntry::Corrupt(_) => None,
        })
        .collect();
    assert!(
        flagged.contains(&("drain-9a".to_owned(), true)),
        "{flagged:?}"
    );
    assert!(flagged.contains(&("m1".to_owned(), false)), "{flagged:?}");
    let _: () = conn.del(&[marker, odd]).await.unwrap();
}
