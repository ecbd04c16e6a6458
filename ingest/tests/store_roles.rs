//! The gatherer database's least-privilege roles (migration 0003_roles) against a real
//! PostgreSQL. Each test migrates its database as the owner, creates a LOGIN user of its own
//! (cluster-wide, dropped at the end), grants it one group role and connects as it:
//! - `kdp_gatherer_writer` runs the real writer (COPY of every record kind, `batch` rows,
//!   NOTIFY, the `run` row, `run_conn` upserts, the clean-stop UPDATE, a restart gap on the
//!   second start) and may not DROP, ALTER, DELETE, TRUNCATE, UPDATE history, rewrite a run's
//!   identity or create a table;
//! - `kdp_gatherer_reader` LISTENs, receives the writer's notifications, SELECTs every table and
//!   the migration ledger, and may not write anything;
//! - the migration applies to many databases of one cluster at once (roles are cluster-wide).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use kdp_engine::event::{BookSide, Level, Side};
use kdp_engine::pg::migrate::migrate;
use kdp_engine::pg::testing::{LoginUser, TestDatabase, assert_refused};
use kdp_ingest::store::{
    DeltaRecord, EventLifecycleRecord, GATHERER, GapKind, GapMarker, MarketLifecycleRecord,
    NOTIFY_CHANNEL, Origin, RawFrame, RawReason, Record, SnapshotRecord, SnapshotSource,
    TradeRecord, Writer, WriterLimits, WriterOptions, WriterStats,
};
use postgres::fallible_iterator::FallibleIterator;

const WAIT: Duration = Duration::from_secs(30);

/// A fresh database migrated by the owner (the test server's superuser), hardened as the
/// runbook says (`REVOKE ALL ON DATABASE ... FROM PUBLIC`): the roles connect by their own grant.
fn migrated() -> TestDatabase {
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let mut owner = db.connect().unwrap_or_else(|e| panic!("{e}"));
    let report = migrate(&mut owner, &GATHERER).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.version, 3);
    owner
        .batch_execute(&format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", db.name()))
        .unwrap_or_else(|e| panic!("{e}"));
    db
}

fn ring() -> Arc<ArrayQueue<Record>> {
    Arc::new(ArrayQueue::new(64))
}

fn push(ring: &ArrayQueue<Record>, records: Vec<Record>) {
    for record in records {
        assert!(ring.push(record).is_ok(), "ring full");
    }
}

fn start(user: &LoginUser, rings: &[Arc<ArrayQueue<Record>>]) -> Writer {
    // Not the owner: the migrations were applied by the owner. The writer still checks them at
    // start (as the gatherer does): on an up-to-date database that needs only SELECT on the
    // ledger, so the least-privilege role can run the gatherer as shipped.
    let limits = WriterLimits { backoff_ms_min: 5, backoff_ms_max: 50, ..WriterLimits::default() };
    let options = WriterOptions { limits, migrate: true, ..WriterOptions::default() };
    Writer::start(user.config(), rings.to_vec(), options).unwrap_or_else(|e| panic!("{e}"))
}

fn wait_stats(writer: &Writer, what: &str, done: impl Fn(&WriterStats) -> bool) -> WriterStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = writer.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {stats:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for a notification carrying at least `gseq`.
fn wait_notified(listener: &mut postgres::Client, gseq: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut notifications = listener.notifications();
        let next = notifications.timeout_iter(left).next().unwrap_or_else(|e| panic!("{e:?}"));
        let Some(n) = next else { panic!("no notification of gseq {gseq} within {WAIT:?}") };
        assert_eq!(n.channel(), NOTIFY_CHANNEL);
        if n.payload().parse::<i64>().unwrap_or_else(|e| panic!("{e}")) >= gseq {
            return;
        }
    }
}

fn origin(n: u64) -> Origin {
    Origin {
        ts_recv_ns: 1_790_000_000_000_000_000 + n as i64,
        conn_id: 7,
        sid: Some(3),
        seq: Some(n),
    }
}

/// One record of every kind (the writer COPYs into every record table).
fn every_kind(n: u64) -> Vec<Record> {
    let market: Arc<str> = Arc::from("KXROLE-26NOV29-B42");
    vec![
        Record::Delta(DeltaRecord {
            origin: origin(n),
            market: Arc::clone(&market),
            side: Side::Yes,
            price_micros: 420_000,
            delta_centi: 100,
            ts_exch_ns: 1_790_000_000_000_000_000,
            client_order_id: None,
        }),
        Record::Trade(TradeRecord {
            origin: origin(n + 1),
            trade_id: format!("d91bc706-ee49-470d-82d8-11418bda6f{n:02}").into(),
            market: Arc::clone(&market),
            yes_price_micros: 360_000,
            no_price_micros: 640_000,
            count_centi: 100,
            taker_side: Some(Side::No),
            taker_book_side: Some(BookSide::Ask),
            is_block_trade: Some(false),
            ts_exch_ns: 1_790_000_000_000_000_001,
        }),
        Record::Snapshot(Box::new(SnapshotRecord {
            source: SnapshotSource::Ws(origin(n + 2)),
            market: Arc::clone(&market),
            yes: vec![Level { price_micros: 10_000, size_centi: 100 }].into(),
            no: Box::new([]),
        })),
        Record::MarketLifecycle(Box::new(MarketLifecycleRecord {
            origin: origin(n + 3),
            market: Arc::clone(&market),
            kind: "determined".into(),
            multivariate: false,
            open_ts_s: Some(1),
            close_ts_s: None,
            determination_ts_s: Some(3),
            settled_ts_s: None,
            result: Some("yes".into()),
            settlement_value_micros: Some(1_000_000),
            price_level_structure: None,
            payload: r#"{"event_type":"determined"}"#.into(),
        })),
        Record::EventLifecycle(Box::new(EventLifecycleRecord {
            origin: origin(n + 4),
            event_ticker: "KXROLE-26NOV29".into(),
            payload: r#"{"event_ticker":"KXROLE-26NOV29"}"#.into(),
        })),
        Record::Gap(Box::new(GapMarker {
            ts_recv_ns: 900,
            conn_id: 7,
            sid: 3,
            expected_seq: n + 5,
            got_seq: Some(n + 7),
            ts_recv_last_good_ns: Some(800),
            markets: vec![Arc::clone(&market)].into(),
        })),
        Record::Raw(Box::new(RawFrame {
            ts_recv_ns: 1000,
            conn_id: 7,
            reason: RawReason::Unknown("new_channel".into()),
            frame: b"{\"type\":\"new_channel\"}".to_vec().into(),
        })),
    ]
}

const RECORD_TABLES: [&str; 8] = [
    "delta",
    "trade",
    "ticker",
    "snapshot",
    "market_lifecycle",
    "event_lifecycle",
    "gap",
    "raw_frame",
];

fn count(client: &mut postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

#[test]
fn the_writer_role_runs_the_real_writer_and_cannot_change_history() {
    let db = migrated();
    let writer_user = LoginUser::new(&db, "kdp_gatherer_writer", "w");
    let mut owner = db.connect().unwrap_or_else(|e| panic!("{e}"));
    owner.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).unwrap_or_else(|e| panic!("{e}"));
    let rings = [ring()];

    // First run: a fresh database (no restart gap), every record kind, then a clean stop
    // (UPDATE run, run_conn upsert).
    push(&rings[0], every_kind(1));
    let writer = start(&writer_user, &rings);
    let stats = wait_stats(&writer, "7 rows committed", |s| s.last_committed_gseq == 7);
    assert_eq!((stats.batch_failures, stats.connect_failures, stats.restart_gap), (0, 0, None));
    wait_notified(&mut owner, 7);
    let stats = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.clean_stop, "clean stop not recorded: {stats:?}");

    // Second run: reads the previous run and its run_conn, writes a restart gap (+ batch,
    // NOTIFY), then more rows.
    let writer = start(&writer_user, &rings);
    let stats = wait_stats(&writer, "the restart gap", |s| s.run_id != 0);
    assert_eq!((stats.restart_gap, stats.last_committed_gseq), (Some(GapKind::Restart), 8));
    wait_notified(&mut owner, 8);
    push(&rings[0], every_kind(20));
    let stats = wait_stats(&writer, "15 rows committed", |s| s.last_committed_gseq == 15);
    assert_eq!((stats.batch_failures, stats.connect_failures), (0, 0), "{stats:?}");
    wait_notified(&mut owner, 15);
    let stats = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.clean_stop, "clean stop not recorded: {stats:?}");

    let counts: Vec<i64> = RECORD_TABLES.iter().map(|t| count(&mut owner, t)).collect();
    assert_eq!(counts, [2, 2, 0, 2, 2, 2, 3, 2]);
    let runs: Vec<(i64, Option<i64>)> = owner
        .query("SELECT first_gseq, last_gseq FROM run ORDER BY run_id", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(runs, [(1, Some(7)), (8, Some(15))]);
    assert_eq!(count(&mut owner, "run_conn"), 2);

    // What it may not do.
    let mut w = writer_user.connect();
    for sql in [
        "DROP TABLE delta",
        "ALTER TABLE delta ADD COLUMN x integer",
        "DELETE FROM delta",
        "TRUNCATE gap",
        "UPDATE delta SET market = 'X'",
        "UPDATE batch SET rows = rows",
        "DELETE FROM run_conn",
        "UPDATE run SET token = 0",
        "UPDATE run SET first_gseq = 1",
        "CREATE TABLE mine (x integer)",
        "DELETE FROM schema_migrations",
    ] {
        assert_refused(&mut w, sql);
    }
    assert_eq!(count(&mut w, "delta"), 2);
}

#[test]
fn the_reader_role_listens_and_selects_and_cannot_write() {
    let db = migrated();
    let writer_user = LoginUser::new(&db, "kdp_gatherer_writer", "w");
    let reader_user = LoginUser::new(&db, "kdp_gatherer_reader", "r");
    let mut reader = reader_user.connect();
    reader.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).unwrap_or_else(|e| panic!("{e}"));

    let rings = [ring()];
    push(&rings[0], every_kind(1));
    let writer = start(&writer_user, &rings);
    wait_stats(&writer, "7 rows committed", |s| s.last_committed_gseq == 7);
    wait_notified(&mut reader, 7);
    writer.shutdown().unwrap_or_else(|e| panic!("{e}"));

    // The dedup reader's queries: the head, the oldest unmerged commit time, gseq ranges.
    let head: i64 = reader
        .query_one("SELECT coalesce(max(last_gseq), 0) FROM batch", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(head, 7);
    reader
        .query("SELECT committed_at FROM batch WHERE last_gseq > 0 ORDER BY last_gseq LIMIT 1", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    for table in RECORD_TABLES {
        reader
            .query(
                &format!("SELECT * FROM {table} WHERE gseq > 0 AND gseq <= 7 ORDER BY gseq"),
                &[],
            )
            .unwrap_or_else(|e| panic!("select {table}: {e}"));
    }
    assert_eq!(count(&mut reader, "run"), 1);
    assert_eq!(count(&mut reader, "run_conn"), 1);
    let version: i32 = reader
        .query_one("SELECT max(version) FROM schema_migrations WHERE schema = 'gatherer'", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(version, 3);

    for sql in [
        "INSERT INTO batch (last_gseq, first_gseq, rows) VALUES (8, 8, 1)",
        "INSERT INTO delta (gseq, ts_recv_ns, conn_id, market, side_yes, price_micros, \
         delta_centi, ts_exch_ns) VALUES (8, 1, 1, 'X', true, 1, 1, 1)",
        "UPDATE run SET stopped_ns = 1, last_gseq = 7",
        "DELETE FROM delta",
        "TRUNCATE batch",
        "DROP TABLE gap",
        "CREATE TABLE mine (x integer)",
    ] {
        assert_refused(&mut reader, sql);
    }
    assert_eq!(count(&mut reader, "delta"), 1);
}

#[test]
fn the_roles_migration_applies_to_many_databases_of_one_cluster_at_once() {
    const DATABASES: usize = 4;
    let dbs: Vec<TestDatabase> =
        (0..DATABASES).map(|_| TestDatabase::new().unwrap_or_else(|e| panic!("{e}"))).collect();
    let barrier = Barrier::new(DATABASES);
    std::thread::scope(|s| {
        for db in &dbs {
            let barrier = &barrier;
            s.spawn(move || {
                let mut owner = db.connect().unwrap_or_else(|e| panic!("{e}"));
                barrier.wait();
                migrate(&mut owner, &GATHERER).unwrap_or_else(|e| panic!("{e}"))
            });
        }
    });
    for db in &dbs {
        let mut owner = db.connect().unwrap_or_else(|e| panic!("{e}"));
        let roles: i64 = owner
            .query_one(
                "SELECT count(*) FROM pg_roles WHERE rolname IN \
                 ('kdp_gatherer_writer', 'kdp_gatherer_reader') AND NOT rolcanlogin",
                &[],
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        assert_eq!(roles, 2);
        let readable: bool = owner
            .query_one("SELECT has_table_privilege('kdp_gatherer_reader', 'delta', 'SELECT')", &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        assert!(readable);
    }
}
