//! The production sink against a real PostgreSQL (a fresh database per test): one transaction
//! per batch with its cursors, the unique-violation staging path, the lost-COMMIT check, and a
//! restart from the cursors that writes nothing twice.

mod support;

use std::sync::Arc;

use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::{Batch, MergeCore};
use kdp_dedup::row::{Gap, Row, Snapshot, SnapshotAnchor};
use kdp_dedup::sink::{Sink, SinkError, SinkOptions, Written};
use kdp_engine::event::{Level, Side};
use kdp_engine::pg::testing::TestDatabase;
use support::{delta, event_lifecycle, market_lifecycle, ticker, trade};

const P: u32 = 420_000;

fn sink(db: &TestDatabase) -> Sink {
    Sink::new(db.config(), SinkOptions { migrate: true })
}

/// The three gatherers' streams of one truth: ten deltas (three of them identical), two
/// tickers (one frame duplicated at gatherer 0), a trade, lifecycle events; gatherer 1 lost
/// the 4th delta, gatherer 2 the trade. Gatherer 0 also has a snapshot, gatherer 1 a gap.
fn streams() -> Vec<Vec<Row>> {
    let truth = |g: usize| {
        let mut rows = Vec::new();
        for i in 0..10i64 {
            let ts = 1_000 + i.min(3) * 10 + i; // a few distinct times
            let (ts, change) = if (3..6).contains(&i) { (2_000, 500) } else { (ts, 100 + i) };
            if g == 1 && i == 3 {
                continue;
            }
            rows.push(delta("KXA-1", ts, Side::Yes, P, change));
        }
        rows.push(ticker("KXA-1", 3_000, 1));
        if g == 0 {
            rows.push(ticker("KXA-1", 3_000, 1));
        }
        rows.push(ticker("KXA-1", 3_001, 2));
        if g != 2 {
            rows.push(trade("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", 3_002));
        }
        rows.push(market_lifecycle(
            "KXA-1",
            "determined",
            "{\"result\":\"yes\"}",
            4_000 + g as i64,
        ));
        rows.push(event_lifecycle("KXA", "{\"title\":\"A\"}", 4_000 + g as i64));
        if g == 0 {
            rows.push(Row::Snapshot(Box::new(Snapshot {
                market: Arc::from("KXA-1"),
                anchor: SnapshotAnchor::Ws { conn_id: 1, sid: 7, seq: 12 },
                yes: vec![Level { price_micros: P, size_centi: 300 }].into(),
                no: vec![Level { price_micros: 570_000, size_centi: 100 }].into(),
                ts_recv_ns: 5_000,
            })));
        }
        if g == 1 {
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
    (0..3).map(truth).collect()
}

/// Pushes `streams[g][from[g]..to[g]]` round-robin (gseq = index + 1).
fn push_range(core: &mut MergeCore, streams: &[Vec<Row>], from: &[usize], to: &[usize]) {
    let mut next = from.to_vec();
    loop {
        let mut pushed = false;
        for g in 0..streams.len() {
            if next[g] < to[g] {
                let gseq = next[g] as i64 + 1;
                core.push(g as u8, gseq, streams[g][next[g]].clone()).expect("push");
                next[g] += 1;
                pushed = true;
            }
        }
        if !pushed {
            return;
        }
    }
}

fn lens(streams: &[Vec<Row>]) -> Vec<usize> {
    streams.iter().map(Vec::len).collect()
}

fn count(client: &mut postgres::Client, table: &str) -> i64 {
    client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).expect("count").get(0)
}

/// Every table's row count, in a fixed order.
fn counts(client: &mut postgres::Client) -> [i64; 7] {
    ["delta", "trade", "ticker", "market_lifecycle", "event_lifecycle", "snapshot", "gatherer_gap"]
        .map(|t| count(client, t))
}

/// The merged history: 10 deltas, 1 trade, 2 tickers, 1 + 1 lifecycle, 1 snapshot, 1 gap.
const EXPECTED: [i64; 7] = [10, 1, 2, 1, 1, 1, 1];

fn cursors(client: &mut postgres::Client) -> Vec<(i16, i64)> {
    client
        .query("SELECT gatherer, gseq FROM dedup_cursor ORDER BY gatherer", &[])
        .expect("cursors")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn whole_batch() -> (Batch, Vec<usize>) {
    let streams = streams();
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &[0, 0, 0]).expect("core");
    push_range(&mut core, &streams, &[0, 0, 0], &lens(&streams));
    (core.take_batch().expect("batch"), lens(&streams))
}

#[test]
fn a_batch_commits_its_rows_and_cursors_in_one_transaction() {
    let db = TestDatabase::new().expect("test database");
    let (batch, lens) = whole_batch();
    let mut sink = sink(&db);
    assert_eq!(sink.write(&batch).expect("write"), Written::Direct { rows: 17 });
    let mut client = db.connect().expect("connect");
    assert_eq!(counts(&mut client), EXPECTED);
    assert_eq!(
        cursors(&mut client),
        vec![(0, lens[0] as i64), (1, lens[1] as i64), (2, lens[2] as i64)]
    );
    // The identical deltas stayed three rows, numbered 0, 1, 2.
    let occs: Vec<(i32, i16)> = client
        .query(
            "SELECT occ, gatherer FROM delta WHERE ts_exch_ns = 2000 AND delta_centi = 500 \
             ORDER BY occ",
            &[],
        )
        .expect("occ")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(occs, vec![(0, 0), (1, 0), (2, 0)]);
    let snapshot: (i16, i64, String, Option<i64>, Vec<i64>, Vec<i64>) = client
        .query_one(
            "SELECT gatherer, gseq, source, seq, yes_price_micros, no_size_centi FROM snapshot",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .expect("snapshot");
    assert_eq!(snapshot, (0, 17, "ws".to_owned(), Some(12), vec![420_000], vec![100]));
    let stats = sink.stats();
    assert_eq!((stats.batches_direct, stats.batches_staged, stats.rows_written), (1, 0, 17));
    // Writing it again on the same connection is a caller bug: refused, nothing changes.
    assert!(matches!(sink.write(&batch), Err(SinkError::Cursors(_))));
    assert_eq!(counts(&mut client), EXPECTED);
}

#[test]
fn rows_already_in_production_send_the_batch_through_staging_and_are_counted() {
    let db = TestDatabase::new().expect("test database");
    let streams = streams();
    let lens = lens(&streams);
    // First run: gatherer 0 alone, committed.
    let mut first = MergeCore::new(MergeLimits::DEFAULT, &[0, 0, 0]).expect("core");
    push_range(&mut first, &streams, &[0, 0, 0], &[lens[0], 0, 0]);
    let mut sink = sink(&db);
    assert_eq!(
        sink.write(&first.take_batch().expect("batch")).expect("write"),
        Written::Direct { rows: 16 }
    );
    // A core that knows nothing of production (no rebuild) merges gatherers 1 and 2: every
    // event gatherer 0 had comes again; only gatherer 1's gap is new.
    let mut second = MergeCore::new(MergeLimits::DEFAULT, &[lens[0] as i64, 0, 0]).expect("core");
    push_range(&mut second, &streams, &[lens[0], 0, 0], &lens);
    let batch = second.take_batch().expect("batch");
    assert_eq!(batch.rows(), 16);
    assert_eq!(sink.write(&batch).expect("write"), Written::Staged { rows: 1, conflicts: 15 });
    let stats = sink.stats();
    assert_eq!((stats.batches_direct, stats.batches_staged), (1, 1));
    assert_eq!((stats.rows_written, stats.rows_conflicted), (17, 15));
    let mut client = db.connect().expect("connect");
    assert_eq!(counts(&mut client), EXPECTED);
    assert_eq!(
        cursors(&mut client),
        vec![(0, lens[0] as i64), (1, lens[1] as i64), (2, lens[2] as i64)]
    );
}

/// Runs a merge from production's cursors over the rest of the streams, as a restarted
/// deduplicator does: occurrence state primed with each gatherer's rows up to its cursor
/// (mandatory: without it a run of identical deltas cut by the cursor is renumbered from 0 and
/// collides with its own committed rows), and the index rebuilt from production if asked.
fn restart(sink: &mut Sink, streams: &[Vec<Row>], rebuild_index: bool) -> Written {
    let db_cursors = sink.read_cursors().expect("cursors");
    let cursors: Vec<i64> = (0..streams.len()).map(|g| db_cursors[g].unwrap_or(0)).collect();
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &cursors).expect("core");
    if rebuild_index {
        let latest = sink.latest_ts_exch_ns().expect("latest").expect("some rows");
        let slack = MergeLimits::DEFAULT.watermark_slack_ns;
        for key in sink.read_window(latest - slack).expect("window") {
            core.load_production(key);
        }
    }
    for (g, stream) in streams.iter().enumerate() {
        for row in &stream[..cursors[g] as usize] {
            core.prime(g as u8, row).expect("prime");
        }
    }
    let from: Vec<usize> = cursors.iter().map(|&c| c as usize).collect();
    push_range(&mut core, streams, &from, &lens(streams));
    let batch = core.take_batch().expect("batch");
    sink.write(&batch).expect("write")
}

#[test]
fn a_restart_from_the_cursors_after_a_crash_writes_nothing_twice() {
    for rebuild_index in [true, false] {
        let db = TestDatabase::new().expect("test database");
        let streams = streams();
        let lens = lens(&streams);
        // Before the crash: gatherer 0's first 12 rows and the others' first 5 committed (10
        // deltas, 1 ticker; gatherer 0's duplicated ticker frame absorbed); the next batch was
        // merged but never committed.
        let mut core = MergeCore::new(MergeLimits::DEFAULT, &[0, 0, 0]).expect("core");
        push_range(&mut core, &streams, &[0, 0, 0], &[12, 5, 5]);
        let mut sink = sink(&db);
        let first = core.take_batch().expect("batch");
        assert_eq!(sink.write(&first).expect("write"), Written::Direct { rows: 11 });
        push_range(&mut core, &streams, &[12, 5, 5], &[14, 12, 12]);
        drop(core.take_batch()); // the crash: this batch is lost with the process
        drop(core);
        let written = restart(&mut sink, &streams, rebuild_index);
        let mut client = db.connect().expect("connect");
        assert_eq!(counts(&mut client), EXPECTED, "rebuild_index {rebuild_index}");
        assert_eq!(
            cursors(&mut client),
            vec![(0, lens[0] as i64), (1, lens[1] as i64), (2, lens[2] as i64)]
        );
        if rebuild_index {
            // Every row the restarted core emits is new: ticker, trade, 2 lifecycle, snapshot,
            // gap.
            assert_eq!(written, Written::Direct { rows: 6 });
        } else {
            // Gatherers 1 and 2 re-deliver 5 deltas and a ticker committed from gatherer 0;
            // the backstop skips them and counts them.
            assert_eq!(written, Written::Staged { rows: 6, conflicts: 6 });
        }
    }
}

#[test]
fn a_batch_whose_commit_answer_was_lost_is_not_written_again() {
    let db = TestDatabase::new().expect("test database");
    let (batch, _) = whole_batch();
    let mut first = sink(&db);
    assert_eq!(first.write(&batch).expect("write"), Written::Direct { rows: 17 });
    // The process that wrote it lost the answer and retries on a new connection.
    let mut retry = sink(&db);
    assert_eq!(retry.write(&batch).expect("write"), Written::AlreadyCommitted);
    assert_eq!(retry.stats().batches_already_committed, 1);
    let mut client = db.connect().expect("connect");
    assert_eq!(counts(&mut client), EXPECTED);
}

#[test]
fn a_broken_connection_fails_the_attempt_and_the_retry_writes_the_batch_once() {
    let db = TestDatabase::new().expect("test database");
    let streams = streams();
    let lens = lens(&streams);
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &[0, 0, 0]).expect("core");
    push_range(&mut core, &streams, &[0, 0, 0], &[5, 5, 5]);
    let first = core.take_batch().expect("batch");
    push_range(&mut core, &streams, &[5, 5, 5], &lens);
    let second = core.take_batch().expect("batch");
    let mut sink = sink(&db);
    assert_eq!(sink.write(&first).expect("write"), Written::Direct { rows: 5 });
    let mut admin = db.connect().expect("connect");
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1);
    match sink.write(&second) {
        Err(SinkError::Postgres { connection_lost: true, .. }) => {}
        other => panic!("expected a lost connection, got {other:?}"),
    }
    assert_eq!(sink.write(&second).expect("retry"), Written::Direct { rows: 12 });
    let stats = sink.stats();
    assert_eq!((stats.connects, stats.failures, stats.batches_direct), (2, 1, 2));
    assert_eq!(counts(&mut admin), EXPECTED);
}
