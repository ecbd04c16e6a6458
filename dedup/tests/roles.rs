//! Production's least-privilege roles (migration 0004_roles) against a real PostgreSQL. Each
//! test migrates its database as the owner, hardens it as the runbook says (`REVOKE ALL ON
//! DATABASE ... FROM PUBLIC`: no CONNECT or TEMPORARY through PUBLIC), creates a LOGIN user of
//! its own (cluster-wide, dropped at the end), grants it one group role and connects as it:
//! - `kdp_dedup` runs the real sink (a direct batch with its cursors and coverage-ledger rows,
//!   then a batch through the temporary staging tables that upserts the same ledger rows,
//!   cursor reads, the index-rebuild reads) and the real metadata sync (inserts, then updates,
//!   against a small REST stub), and may not DROP, ALTER, DELETE or UPDATE merged history,
//!   delete cursors or metadata, or create a table in public;
//! - `kdp_reader` SELECTs every production table and may not write anything, not even a
//!   temporary table.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use kdp_dedup::ledger::{CoverageGaps, GapInterval, LedgerDelta, MinuteCount, Uncovered};
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::{Batch, MergeCore};
use kdp_dedup::metadata::{MetadataSettings, MetadataSync};
use kdp_dedup::row::{Gap, Row, Snapshot, SnapshotAnchor};
use kdp_dedup::schema::PRODUCTION;
use kdp_dedup::sink::{Sink, SinkOptions, Written};
use kdp_engine::event::{Level, Side};
use kdp_engine::pg::migrate::migrate;
use kdp_engine::pg::testing::{LoginUser, TestDatabase, assert_refused};
use kdp_ingest::rest::RateBudget;
use support::{delta, event_lifecycle, market_lifecycle, ticker, trade};

const MINUTE: i64 = 60_000_000_000;

/// A fresh production database migrated by the owner, PUBLIC's database privileges revoked.
fn migrated() -> TestDatabase {
    let db = TestDatabase::new().expect("test database");
    let mut owner = db.connect().expect("connect as owner");
    let report = migrate(&mut owner, &PRODUCTION).expect("migrate");
    assert_eq!(report.version, 4);
    owner
        .batch_execute(&format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", db.name()))
        .expect("revoke");
    db
}

fn count(client: &mut postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

const HISTORY: [&str; 7] =
    ["delta", "trade", "ticker", "market_lifecycle", "event_lifecycle", "snapshot", "gatherer_gap"];

const EVERY_TABLE: [&str; 15] = [
    "delta",
    "trade",
    "ticker",
    "market_lifecycle",
    "event_lifecycle",
    "snapshot",
    "gatherer_gap",
    "coverage_gap",
    "dedup_cursor",
    "coverage_minute",
    "gatherer_uncovered",
    "series",
    "events",
    "markets",
    "schema_migrations",
];

/// Two gatherers' streams: the same events, gatherer 0 with a snapshot, gatherer 1 with a gap
/// and a delta gatherer 0 lacks. Every history table gets a row.
fn streams() -> Vec<Vec<Row>> {
    let stream = |g: usize| {
        let mut rows = vec![
            delta("KXA-1", 1_000, Side::Yes, 420_000, 100),
            delta("KXA-1", 1_000, Side::Yes, 420_000, 100),
            ticker("KXA-1", 2_000, 1),
            trade("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", 2_001),
            market_lifecycle("KXA-1", "determined", "{\"result\":\"yes\"}", 3_000),
            event_lifecycle("KXA", "{\"title\":\"A\"}", 3_000),
        ];
        if g == 0 {
            rows.push(Row::Snapshot(Box::new(Snapshot {
                market: Arc::from("KXA-1"),
                anchor: SnapshotAnchor::Ws { conn_id: 1, sid: 7, seq: 12 },
                yes: vec![Level { price_micros: 420_000, size_centi: 300 }].into(),
                no: Box::new([]),
                ts_recv_ns: 5_000,
            })));
        } else {
            rows.push(delta("KXA-1", 4_000, Side::No, 580_000, -100));
            rows.push(Row::Gap(Box::new(Gap {
                conn_id: 2,
                sid: 7,
                expected_seq: 4,
                got_seq: Some(5),
                ts_recv_last_good_ns: Some(1_500),
                markets: vec![Arc::from("KXA-1")].into(),
                ts_recv_ns: 2_500,
            })));
        }
        rows
    };
    vec![stream(0), stream(1)]
}

/// Merges `streams[g][..to[g]]` from gseq `from[g] + 1` on, with a core that knows production
/// only by the cursors `from` (no index rebuild: rows already in production come again).
fn merge(streams: &[Vec<Row>], from: &[usize], to: &[usize]) -> Batch {
    let cursors: Vec<i64> = from.iter().map(|&c| c as i64).collect();
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &cursors).expect("core");
    for (g, stream) in streams.iter().enumerate() {
        for (i, row) in stream.iter().enumerate().take(to[g]).skip(from[g]) {
            core.push(g as u8, i as i64 + 1, row.clone()).expect("push");
        }
    }
    core.take_batch().expect("batch")
}

/// Ledger rows for every ledger table; `n` changes the counts and interval ends, so a second
/// write with the same keys takes each upsert's UPDATE branch and replaces the coverage gap.
fn ledger(n: u64) -> LedgerDelta {
    let market: Arc<str> = Arc::from("KXA-1");
    LedgerDelta {
        counts: vec![MinuteCount {
            market: Arc::clone(&market),
            minute_ns: 0,
            gatherer: 0,
            delivered: n,
            merged: n,
        }],
        uncovered: vec![Uncovered {
            gatherer: 1,
            gap_gseq: 8,
            market: Some(Arc::clone(&market)),
            from_ns: 1_500,
            to_ns: (n > 1).then_some(MINUTE),
        }],
        coverage_gaps: vec![CoverageGaps {
            market: Some(market),
            from_ns: 0,
            gaps: vec![GapInterval { from_ns: 1_500, to_ns: (n > 1).then_some(MINUTE) }],
        }],
    }
}

#[test]
fn kdp_dedup_runs_the_real_sink_through_both_paths_and_cannot_change_history() {
    let db = migrated();
    let user = LoginUser::new(&db, "kdp_dedup", "d");
    let streams = streams();
    let lens: Vec<usize> = streams.iter().map(Vec::len).collect();
    // The sink checks the (up-to-date) migrations as the service does: SELECT on the ledger only.
    let mut sink = Sink::new(user.config(), SinkOptions { migrate: true });
    assert_eq!(sink.read_cursors().expect("cursors"), [None; 8]);

    // Gatherer 0 alone: COPY into every history table but gatherer_gap, cursors, ledger.
    let first = merge(&streams, &[0, 0], &[lens[0], 0]);
    assert_eq!(
        sink.write_with_ledger(&first, &ledger(1)).expect("write"),
        Written::Direct { rows: 7 }
    );
    // Gatherer 1 by a core that does not know production: its copies of gatherer 0's events
    // conflict, so the batch goes through the temporary staging tables (CREATE TEMP TABLE ...
    // LIKE, COPY, INSERT ... ON CONFLICT DO NOTHING), with the ledger's upserts and the
    // coverage_gap DELETE.
    let second = merge(&streams, &[lens[0], 0], &lens);
    assert_eq!(
        sink.write_with_ledger(&second, &ledger(2)).expect("write"),
        Written::Staged { rows: 2, conflicts: 6 }
    );
    let cursors = sink.read_cursors().expect("cursors");
    assert_eq!(&cursors[..2], [Some(lens[0] as i64), Some(lens[1] as i64)]);
    // The restart reads: latest time, the recent keys, the open uncovered intervals.
    assert_eq!(sink.latest_ts_exch_ns().expect("latest"), Some(4_000));
    assert!(!sink.read_window(0).expect("window").is_empty());
    sink.read_uncovered(0).expect("uncovered");
    let stats = sink.stats();
    assert_eq!((stats.batches_direct, stats.batches_staged, stats.failures), (1, 1, 0));
    drop(sink);

    let mut owner = db.connect().expect("connect as owner");
    let counts: Vec<i64> = HISTORY.iter().map(|t| count(&mut owner, t)).collect();
    assert_eq!(counts, [3, 1, 1, 1, 1, 1, 1]);
    let minute: (i64, i64) = owner
        .query_one("SELECT delivered, merged FROM coverage_minute", &[])
        .map(|r| (r.get(0), r.get(1)))
        .expect("coverage_minute");
    assert_eq!(minute, (3, 3));
    let closed: Vec<Option<i64>> = ["gatherer_uncovered", "coverage_gap"]
        .iter()
        .map(|t| owner.query_one(&format!("SELECT ts_to_ns FROM {t}"), &[]).expect(t).get(0))
        .collect();
    assert_eq!(closed, [Some(MINUTE), Some(MINUTE)]);

    let mut d = user.connect();
    for sql in [
        "DROP TABLE delta",
        "ALTER TABLE trade ADD COLUMN x integer",
        "DELETE FROM delta",
        "UPDATE delta SET delta_centi = 0",
        "TRUNCATE snapshot",
        "UPDATE gatherer_gap SET got_seq = 0",
        "DELETE FROM dedup_cursor",
        "TRUNCATE dedup_cursor",
        "DELETE FROM markets",
        "DELETE FROM coverage_minute",
        "DROP TABLE dedup_cursor",
        "CREATE TABLE public.mine (x integer)",
        "INSERT INTO schema_migrations (schema, version, name, checksum) \
         VALUES ('production', 5, 'x', 'x')",
    ] {
        assert_refused(&mut d, sql);
    }
    assert_eq!(count(&mut d, "delta"), 3);
}

/// A REST stub answering the three listings; `version` goes into every body.
fn rest_stub(version: Arc<AtomicU32>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let v = version.load(Ordering::SeqCst);
            let path = request.split(' ').nth(1).unwrap_or("");
            let body = if path.starts_with("/trade-api/v2/series") {
                format!(r#"{{"series":[{{"ticker":"KXS","title":"S{v}","category":"c"}}]}}"#)
            } else if path.starts_with("/trade-api/v2/events") {
                format!(
                    r#"{{"events":[{{"event_ticker":"KXS-1","series_ticker":"KXS","title":"E{v}"}}],"cursor":""}}"#
                )
            } else {
                format!(
                    r#"{{"markets":[{{"ticker":"KXS-1-A","event_ticker":"KXS-1","status":"active","title":"M{v}"}}],"cursor":""}}"#
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}/trade-api/v2")
}

#[test]
fn kdp_dedup_runs_the_real_metadata_sync() {
    let db = migrated();
    let user = LoginUser::new(&db, "kdp_dedup", "m");
    let version = Arc::new(AtomicU32::new(1));
    let mut settings = MetadataSettings::new(rest_stub(Arc::clone(&version)));
    settings.migrate = false;
    settings.budget = RateBudget { capacity: 100, refill_per_s: 100 };
    let mut sync = MetadataSync::new(&settings, user.config()).expect("sync");
    let stop = AtomicBool::new(false);
    // Inserts, then (changed bodies) updates: both sides of each upsert.
    for v in 1..=2 {
        version.store(v, Ordering::SeqCst);
        let stats = sync.sync_once(&stop).expect("sync");
        assert_eq!(stats.rows_changed, 3, "{stats:?}");
    }
    drop(sync);
    let mut owner = db.connect().expect("connect as owner");
    let titles: (String, String, String, Option<String>) = owner
        .query_one(
            "SELECT s.title, e.title, m.title, m.series_ticker FROM markets m \
             JOIN events e USING (event_ticker) JOIN series s ON s.ticker = e.series_ticker",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .expect("metadata");
    assert_eq!(titles, ("S2".into(), "E2".into(), "M2".into(), Some("KXS".into())));
}

#[test]
fn kdp_reader_selects_every_table_and_writes_nothing() {
    let db = migrated();
    // Some rows to read, written by kdp_dedup.
    let writer = LoginUser::new(&db, "kdp_dedup", "d");
    let streams = streams();
    let mut sink = Sink::new(writer.config(), SinkOptions { migrate: false });
    sink.write_with_ledger(&merge(&streams, &[0, 0], &[streams[0].len(), 0]), &ledger(1))
        .expect("write");
    drop(sink);

    let user = LoginUser::new(&db, "kdp_reader", "r");
    let mut r = user.connect();
    for table in EVERY_TABLE {
        r.query(&format!("SELECT * FROM {table}"), &[])
            .unwrap_or_else(|e| panic!("select {table}: {e}"));
    }
    assert_eq!(count(&mut r, "delta"), 2);
    for sql in [
        "INSERT INTO delta SELECT * FROM delta",
        "INSERT INTO dedup_cursor (gatherer, gseq) VALUES (5, 1)",
        "UPDATE dedup_cursor SET gseq = 0",
        "UPDATE markets SET status = 'x'",
        "DELETE FROM coverage_gap",
        "TRUNCATE trade",
        "DROP TABLE delta",
        "CREATE TABLE public.mine (x integer)",
        "CREATE TEMP TABLE mine (x integer)",
    ] {
        assert_refused(&mut r, sql);
    }
    assert_eq!(count(&mut r, "delta"), 2);
}

#[test]
fn the_roles_migration_applies_to_many_databases_of_one_cluster_at_once() {
    const DATABASES: usize = 4;
    let dbs: Vec<TestDatabase> =
        (0..DATABASES).map(|_| TestDatabase::new().expect("test database")).collect();
    let barrier = Barrier::new(DATABASES);
    std::thread::scope(|s| {
        for db in &dbs {
            let barrier = &barrier;
            s.spawn(move || {
                let mut owner = db.connect().expect("connect");
                barrier.wait();
                migrate(&mut owner, &PRODUCTION).expect("migrate")
            });
        }
    });
    for db in &dbs {
        let mut owner = db.connect().expect("connect");
        let ok: bool = owner
            .query_one(
                "SELECT has_table_privilege('kdp_reader', 'delta', 'SELECT') \
                 AND has_table_privilege('kdp_dedup', 'dedup_cursor', 'UPDATE') \
                 AND has_database_privilege('kdp_dedup', current_database(), 'TEMPORARY') \
                 AND NOT has_table_privilege('kdp_dedup', 'delta', 'DELETE')",
                &[],
            )
            .expect("privileges")
            .get(0);
        assert!(ok);
    }
}
