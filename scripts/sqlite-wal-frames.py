#!/usr/bin/env python3
"""How many pages (WAL frames) one catch-up batch writes to a SQLite platform database.

Builds the platform's tables and janitor's migrations in a scratch file, seeds them as
`janitor-bench`'s catch-up does (100,000 running runs with one started activity each, over
1,000 agents), then applies batches of 128 reaped pairs in the catch-up's order (by agent,
then run) the way a worker's transaction does: the runs' compare-and-set, the activities'
close, two audit rows per pair. Prints WAL frames per batch and KB per pair, for the parts
named on the command line.

    python3 scripts/sqlite-wal-frames.py runs,activities,audit
    python3 scripts/sqlite-wal-frames.py activities --drop janitor_activities_started_by_id

A frame is one page (4 KiB plus its header) written at commit, and written again into the
database by the checkpoint: a catch-up on SQLite is bound by these pages, not by its
statements.
"""

import argparse
import os
import random
import sqlite3
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "migrations")
STARTED = "2026-12-06T20:00:00.000000"
DONE = "2026-12-06T21:00:00.000000"
ERROR = ("janitor: the slot expired at 2026-12-06T20:10:00Z (its timeout 600 s + grace); "
         "the run is failed as orphaned")


def wal_frames(path):
    wal = path + "-wal"
    size = os.path.getsize(wal) if os.path.exists(wal) else 0
    return max(0, (size - 32) // 4120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", help="comma-separated: runs, activities, audit")
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--agents", type=int, default=1_000)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--drop", default="", help="comma-separated indexes to drop first")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    rng = random.Random(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "platform.db")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # count the frames, not what is left
        for f in ("platform/today.sql", "platform/today-indexes.sql"):
            db.executescript(open(os.path.join(ROOT, f)).read())
        for f in sorted(os.listdir(os.path.join(ROOT, "sqlite"))):
            db.executescript(open(os.path.join(ROOT, "sqlite", f)).read())
        n, a = args.runs, args.agents
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO schedule_executions (id, schedule_id, agent_name, status, started_at, "
            "message, triggered_by, claude_session_id) VALUES (?,?,?,?,?,?,?,?)",
            [(f"run{i:07}", "s", f"agent-{i % a}", "running", STARTED, "m", "schedule",
              "dispatched") for i in range(n)])
        db.executemany(
            "INSERT INTO agent_activities (id, agent_name, activity_type, activity_state, "
            "started_at, related_execution_id, created_at) VALUES (?,?,?,?,?,?,?)",
            [(f"arun{i:07}", f"agent-{i % a}", "schedule_start", "started", STARTED,
              f"run{i:07}", STARTED) for i in range(n)])
        db.execute("COMMIT")
        for index in filter(None, args.drop.split(",")):
            db.execute(f"DROP INDEX {index}")
        db.execute("ANALYZE")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        order = sorted(range(n), key=lambda i: (f"agent-{i % a}", f"run{i:07}"))
        total = 0
        for b in range(args.batches):
            ids = [f"run{i:07}" for i in order[b * args.batch:(b + 1) * args.batch]]
            before = wal_frames(path)
            db.execute("BEGIN")
            if "runs" in parts:
                db.executemany(
                    "UPDATE schedule_executions SET status = 'failed', error = ?, "
                    "completed_at = ?, duration_ms = ? WHERE id = ? AND status = 'running'",
                    [(ERROR, DONE, 3_600_000, i) for i in ids])
            if "activities" in parts:
                db.executemany(
                    "UPDATE agent_activities SET activity_state = 'failed', completed_at = ?, "
                    "error = ?, duration_ms = ? WHERE id = ? AND activity_state = 'started'",
                    [(DONE, ERROR, 3_600_000, "a" + i) for i in ids])
            if "audit" in parts:
                rows = []
                for i in ids:
                    agent = f"agent-{int(i[3:]) % a}"
                    for action, key in (
                        ("slot_reclaimed", f"outbox:1796597427-{rng.randrange(1 << 30)}"),
                        ("run_failed", f"run_failed:{i}:{STARTED}"),
                    ):
                        rows.append((DONE, action, f"reclaim_slot:{agent}:{i}:s1796590217.7",
                                     "reclaim_slot", i, agent, "running",
                                     "failed" if action == "run_failed" else None,
                                     1796590217.7, "2026-12-06T20:10:00.000000",
                                     "janitor-worker-0123456789ab", None, key))
                db.executemany(
                    "INSERT INTO janitor_audit (at, action, job_id, job_kind, execution_id, "
                    "agent_name, status_before, status_after, slot_score, deadline, worker, "
                    "detail, change_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (execution_id, change_key) DO NOTHING", rows)
            db.execute("COMMIT")
            total += wal_frames(path) - before
        per_batch = total / args.batches
        print(f"{args.parts}{' without ' + args.drop if args.drop else ''}: "
              f"{per_batch:.0f} frames a batch of {args.batch}, "
              f"{per_batch / args.batch:.2f} pages = "
              f"{per_batch * 4120 / args.batch / 1024:.1f} KB a pair")
        db.close()


if __name__ == "__main__":
    main()
