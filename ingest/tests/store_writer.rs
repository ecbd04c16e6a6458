//! The gatherer writer against a real PostgreSQL: every record kind round-trips exactly with
//! contiguous gseqs, identical deltas stay separate rows, a failing batch leaves nothing behind
//! and is retried whole, a restart resumes the numbering, LISTENers get the last gseq after each
//! commit, a database outage loses and duplicates nothing, and a full buffer backs up into full
//! rings. Waits are on queries, notifications and stats, each bounded by a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use kdp_engine::event::{BookSide, Level, Side};
use kdp_engine::pg::testing::{TestDatabase, test_server};
use kdp_ingest::store::{
    DeltaRecord, EventLifecycleRecord, GapKind, GapMarker, MarketLifecycleRecord, NOTIFY_CHANNEL,
    Origin, RawFrame, RawReason, Record, SnapshotRecord, SnapshotSource, TickerRecord, TradeRecord,
    Writer, WriterLimits, WriterOptions, WriterStats,
};
use postgres::fallible_iterator::FallibleIterator;

const WAIT: Duration = Duration::from_secs(30);

fn limits() -> WriterLimits {
    WriterLimits { backoff_ms_min: 5, backoff_ms_max: 50, ..WriterLimits::default() }
}

fn start(db: &TestDatabase, rings: &[Arc<ArrayQueue<Record>>], limits: WriterLimits) -> Writer {
    Writer::start(
        db.config(),
        rings.to_vec(),
        WriterOptions { limits, migrate: true, ..WriterOptions::default() },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn ring(capacity: usize) -> Arc<ArrayQueue<Record>> {
    Arc::new(ArrayQueue::new(capacity))
}

fn push(ring: &ArrayQueue<Record>, record: Record) {
    let deadline = Instant::now() + WAIT;
    let mut record = record;
    while let Err(back) = ring.push(record) {
        assert!(Instant::now() < deadline, "ring stayed full for {WAIT:?}");
        record = back;
        std::thread::yield_now();
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_stats(writer: &Writer, what: &str, done: impl Fn(&WriterStats) -> bool) -> WriterStats {
    let mut last = WriterStats::default();
    wait_for(what, || {
        last = writer.stats();
        done(&last)
    });
    last
}

fn listen(db: &TestDatabase) -> postgres::Client {
    let mut client = db.connect().unwrap_or_else(|e| panic!("{e}"));
    client.batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}")).unwrap_or_else(|e| panic!("{e}"));
    client
}

/// Waits for a notification carrying `gseq`; returns every payload seen up to it.
fn wait_notified(listener: &mut postgres::Client, gseq: i64) -> Vec<i64> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut notifications = listener.notifications();
        let next = notifications.timeout_iter(left).next().unwrap_or_else(|e| panic!("{e:?}"));
        let Some(n) = next else { panic!("no notification of gseq {gseq} within {WAIT:?}") };
        assert_eq!(n.channel(), NOTIFY_CHANNEL);
        let got: i64 = n.payload().parse().unwrap_or_else(|e| panic!("{e}: {}", n.payload()));
        seen.push(got);
        if got >= gseq {
            return seen;
        }
    }
}

fn gseqs(client: &mut postgres::Client, table: &str) -> Vec<i64> {
    client
        .query(&format!("SELECT gseq FROM {table} ORDER BY gseq"), &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn origin(n: u64) -> Origin {
    Origin {
        ts_recv_ns: 1_790_000_000_000_000_000 + i64::try_from(n).unwrap_or(0),
        conn_id: 7,
        sid: Some(3),
        seq: Some(n),
    }
}

fn delta(n: u64, market: &Arc<str>) -> Record {
    Record::Delta(DeltaRecord {
        origin: origin(n),
        market: Arc::clone(market),
        side: Side::No,
        price_micros: 420_000,
        delta_centi: i64::try_from(n).unwrap_or(0) - 5,
        ts_exch_ns: 1_790_000_000_123_456_789,
        client_order_id: None,
    })
}

#[test]
fn every_record_kind_round_trips_exactly_with_contiguous_gseqs() {
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let market: Arc<str> = Arc::from("KXTEST-26NOV29-B42");
    let rings = [ring(64), ring(64)];
    // Delta with a client order id and no sid/seq; trade with every option set; ticker with
    // none and with all; both snapshot sources; lifecycle; gap; raw frames of both reasons.
    let records = vec![
        Record::Delta(DeltaRecord {
            origin: Origin { ts_recv_ns: 11, conn_id: 1, sid: None, seq: None },
            market: Arc::clone(&market),
            side: Side::Yes,
            price_micros: 999_999,
            delta_centi: i64::MIN,
            ts_exch_ns: -1,
            client_order_id: Some("my-order".into()),
        }),
        Record::Trade(TradeRecord {
            origin: origin(2),
            trade_id: "d91bc706-ee49-470d-82d8-11418bda6fed".into(),
            market: Arc::clone(&market),
            yes_price_micros: 360_000,
            no_price_micros: 640_000,
            count_centi: 13_600,
            taker_side: Some(Side::No),
            taker_book_side: Some(BookSide::Ask),
            is_block_trade: Some(false),
            ts_exch_ns: 1_790_000_000_000_000_001,
        }),
        Record::Ticker(Box::new(TickerRecord {
            origin: origin(3),
            market: Arc::clone(&market),
            price_micros: None,
            yes_bid_micros: None,
            yes_ask_micros: None,
            yes_bid_size_centi: None,
            yes_ask_size_centi: None,
            last_trade_size_centi: None,
            volume_centi: None,
            open_interest_centi: None,
            dollar_volume: None,
            dollar_open_interest: None,
            clock: None,
            ts_exch_ns: 5,
        })),
        Record::Ticker(Box::new(TickerRecord {
            origin: origin(4),
            market: Arc::clone(&market),
            price_micros: Some(1_000_000),
            yes_bid_micros: Some(0),
            yes_ask_micros: Some(2),
            yes_bid_size_centi: Some(3),
            yes_ask_size_centi: Some(4),
            last_trade_size_centi: Some(5),
            volume_centi: Some(6),
            open_interest_centi: Some(7),
            dollar_volume: Some(-8),
            dollar_open_interest: Some(9),
            clock: Some(u64::MAX),
            ts_exch_ns: 6,
        })),
        Record::Snapshot(Box::new(SnapshotRecord {
            source: SnapshotSource::Ws(origin(5)),
            market: Arc::clone(&market),
            yes: vec![
                Level { price_micros: 10_000, size_centi: 100 },
                Level { price_micros: 20_000, size_centi: 250 },
            ]
            .into(),
            no: Box::new([]),
        })),
        Record::Snapshot(Box::new(SnapshotRecord {
            source: SnapshotSource::Rest { ts_recv_ns: 77 },
            market: Arc::clone(&market),
            yes: Box::new([]),
            no: vec![Level { price_micros: 990_000, size_centi: 1 }].into(),
        })),
        Record::MarketLifecycle(Box::new(MarketLifecycleRecord {
            origin: origin(6),
            market: Arc::clone(&market),
            kind: "determined".into(),
            multivariate: true,
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
            origin: origin(7),
            event_ticker: "KXTEST-26NOV29".into(),
            payload: r#"{"event_ticker":"KXTEST-26NOV29"}"#.into(),
        })),
        Record::Gap(Box::new(GapMarker {
            ts_recv_ns: 900,
            conn_id: 7,
            sid: 3,
            expected_seq: 8,
            got_seq: Some(11),
            ts_recv_last_good_ns: Some(800),
            markets: vec![Arc::clone(&market), Arc::from("KXOTHER")].into(),
        })),
        Record::Gap(Box::new(GapMarker {
            ts_recv_ns: 901,
            conn_id: 8,
            sid: 4,
            expected_seq: 1,
            got_seq: None,
            ts_recv_last_good_ns: None,
            markets: Box::new([]),
        })),
        Record::Raw(Box::new(RawFrame {
            ts_recv_ns: 1000,
            conn_id: 7,
            reason: RawReason::Unknown("new_channel".into()),
            frame: b"{\"type\":\"new_channel\"}".to_vec().into(),
        })),
        Record::Raw(Box::new(RawFrame {
            ts_recv_ns: 1001,
            conn_id: 7,
            reason: RawReason::Malformed("bad price".into()),
            frame: vec![0xff, 0x00, b'{'].into(),
        })),
    ];
    // Alternate the rings: order within each ring is kept, and we read gseq order back.
    for (i, record) in records.iter().enumerate() {
        push(&rings[i % 2], record.clone());
    }
    let mut listener = {
        let mut client = db.connect().unwrap_or_else(|e| panic!("{e}"));
        kdp_engine::pg::migrate::migrate(&mut client, &kdp_ingest::store::GATHERER)
            .unwrap_or_else(|e| panic!("{e}"));
        listen(&db)
    };
    let writer = start(&db, &rings, limits());
    assert_eq!(wait_notified(&mut listener, 12).last(), Some(&12));
    let stats = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.rows.total(), 12);
    assert_eq!((stats.rows.delta, stats.rows.gap, stats.rows.raw_frame), (1, 2, 2));
    assert_eq!(stats.last_committed_gseq, 12);
    assert_eq!(stats.buffered_rows, 0);

    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    // All gseqs across tables: exactly 1..=12.
    let mut all: Vec<i64> = Vec::new();
    for table in [
        "delta",
        "trade",
        "ticker",
        "snapshot",
        "market_lifecycle",
        "event_lifecycle",
        "gap",
        "raw_frame",
    ] {
        all.extend(gseqs(&mut c, table));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=12).collect::<Vec<i64>>());
    let q = |c: &mut postgres::Client, sql: &str| -> Vec<String> {
        c.query(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    // Rings are drained round-robin, one ring at a time: ring 0 holds records 0,2,4,...
    // and ring 1 holds 1,3,5,...; each row's text shows its content with its gseq.
    let rows: Vec<String> = [
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, ts_recv_ns, conn_id, sid, seq, market, side_yes, \
                   price_micros, delta_centi, ts_exch_ns, client_order_id) FROM delta",
        ),
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, ts_recv_ns, conn_id, sid, seq, trade_id, market, \
                   yes_price_micros, no_price_micros, count_centi, taker_side_yes, \
                   taker_book_side_ask, is_block_trade, ts_exch_ns) FROM trade",
        ),
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, ts_recv_ns, market, price_micros, yes_bid_micros, \
                   yes_ask_micros, yes_bid_size_centi, yes_ask_size_centi, \
                   last_trade_size_centi, volume_centi, open_interest_centi, dollar_volume, \
                   dollar_open_interest, clock, ts_exch_ns, 'end') FROM ticker ORDER BY gseq",
        ),
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, ts_recv_ns, source, conn_id, sid, seq, market, \
                   yes_price_micros, yes_size_centi, no_price_micros, no_size_centi) \
                   FROM snapshot ORDER BY gseq",
        ),
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, market, kind, multivariate, open_ts_s, \
                   close_ts_s, determination_ts_s, settled_ts_s, result, \
                   settlement_value_micros, price_level_structure, payload) FROM market_lifecycle",
        ),
        q(&mut c, "SELECT concat_ws('|', gseq, seq, event_ticker, payload) FROM event_lifecycle"),
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, ts_recv_ns, conn_id, sid, expected_seq, got_seq, \
                   ts_recv_last_good_ns, markets, kind) FROM gap ORDER BY gseq",
        ),
        q(
            &mut c,
            "SELECT concat_ws('|', gseq, ts_recv_ns, conn_id, malformed, reason, \
                   encode(frame, 'hex')) FROM raw_frame ORDER BY gseq",
        ),
    ]
    .concat();
    assert_eq!(
        rows,
        [
            "1|11|1|KXTEST-26NOV29-B42|t|999999|-9223372036854775808|-1|my-order",
            "7|1790000000000000002|7|3|2|d91bc706-ee49-470d-82d8-11418bda6fed|KXTEST-26NOV29-B42|360000|640000|13600|f|t|f|1790000000000000001",
            "2|1790000000000000003|KXTEST-26NOV29-B42|5|end",
            "8|1790000000000000004|KXTEST-26NOV29-B42|1000000|0|2|3|4|5|6|7|-8|9|-1|6|end",
            "3|1790000000000000005|ws|7|3|5|KXTEST-26NOV29-B42|{10000,20000}|{100,250}|{}|{}",
            "9|77|rest|KXTEST-26NOV29-B42|{}|{}|{990000}|{1}",
            "4|KXTEST-26NOV29-B42|determined|t|1|3|yes|1000000|{\"event_type\":\"determined\"}",
            "10|7|KXTEST-26NOV29|{\"event_ticker\":\"KXTEST-26NOV29\"}",
            "5|900|7|3|8|11|800|{KXTEST-26NOV29-B42,KXOTHER}|seq",
            "11|901|8|4|1|{}|seq",
            "6|1000|7|f|new_channel|7b2274797065223a226e65775f6368616e6e656c227d",
            "12|1001|7|t|bad price|ff007b",
        ]
    );
    let batches: Vec<String> =
        q(&mut c, "SELECT concat_ws('|', first_gseq, last_gseq, rows) FROM batch ORDER BY 1");
    assert_eq!(batches, ["1|12|12"]);
}

#[test]
fn identical_deltas_stay_separate_rows_and_a_restart_resumes_gseq() {
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let market: Arc<str> = Arc::from("KXSAME");
    let rings = [ring(16)];
    let same = delta(1, &market);
    for _ in 0..3 {
        push(&rings[0], same.clone());
    }
    let writer = start(&db, &rings, limits());
    wait_stats(&writer, "3 rows committed", |s| s.last_committed_gseq == 3);
    let first = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.rows.delta, 3);
    assert_eq!((first.restart_gap, first.clean_stop), (None, true), "a fresh database: no gap");

    // After a clean stop the restart is a 'restart' gap with the next gseq, then the numbering
    // goes on after it.
    let writer = start(&db, &rings, limits());
    let mut listener = listen(&db);
    wait_stats(&writer, "the restarted writer to connect", |s| s.connects == 1);
    for n in 2..=3 {
        push(&rings[0], delta(n, &market));
    }
    wait_notified(&mut listener, 6);
    let second = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.restart_gap, Some(GapKind::Restart));
    assert_eq!((second.rows.gap, second.rows.delta, second.last_committed_gseq), (1, 2, 6));
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gseqs(&mut c, "delta"), [1, 2, 3, 5, 6]);
    let gap: Vec<String> = c
        .query(
            "SELECT concat_ws('|', g.gseq, g.kind, g.conn_id, g.sid, g.expected_seq, \
                    g.got_seq IS NULL, g.ts_recv_last_good_ns = rc.last_recv_ns, \
                    g.ts_recv_ns = r2.started_ns, g.markets) \
             FROM gap g, run r1, run r2, run_conn rc \
             WHERE r1.run_id = rc.run_id AND r1.first_gseq = 1 AND r2.first_gseq = 4",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(gap, ["4|restart|0|0|0|t|t|t|{}"]);
    // The first run's progress is its one connection's last row, exactly (a clean stop).
    let progress: Vec<(i64, i64, i64)> = c
        .query(
            "SELECT conn_id, last_gseq, last_recv_ns FROM run_conn ORDER BY run_id, conn_id",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let recv = |n: u64| origin(n).ts_recv_ns;
    assert_eq!(progress, [(7, 3, recv(1)), (7, 6, recv(3))]);
    let runs: Vec<(i64, Option<i64>)> = c
        .query("SELECT first_gseq, last_gseq FROM run ORDER BY run_id", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(runs, [(1, Some(3)), (4, Some(6))]);
    let seqs: Vec<i64> = c
        .query("SELECT seq FROM delta ORDER BY gseq", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, [1, 1, 1, 2, 3]);
}

#[test]
fn a_failing_batch_leaves_nothing_and_commits_whole_once_it_can() {
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    kdp_engine::pg::migrate::migrate(&mut c, &kdp_ingest::store::GATHERER)
        .unwrap_or_else(|e| panic!("{e}"));
    // Refuses the trade, which is written after the deltas in the same transaction.
    c.batch_execute("ALTER TABLE trade ADD CONSTRAINT poison CHECK (market <> 'POISON')")
        .unwrap_or_else(|e| panic!("{e}"));
    let market: Arc<str> = Arc::from("KXOK");
    let rings = [ring(16)];
    for n in 1..=3 {
        push(&rings[0], delta(n, &market));
    }
    let Record::Trade(mut trade) = delta_trade() else { unreachable!() };
    trade.market = Arc::from("POISON");
    push(&rings[0], Record::Trade(trade));
    push(&rings[0], delta(4, &market));
    let mut listener = listen(&db);
    let writer = start(&db, &rings, limits());
    let stats = wait_stats(&writer, "two failed batches", |s| s.batch_failures >= 2);
    assert_eq!(stats.last_committed_gseq, 0);
    assert_eq!(stats.buffered_rows, 5);
    assert!(stats.last_error.as_deref().is_some_and(|e| e.contains("poison")), "{stats:?}");
    assert_eq!(gseqs(&mut c, "delta"), Vec::<i64>::new());
    let batches: i64 = c
        .query_one("SELECT count(*) FROM batch", &[])
        .map(|r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(batches, 0);
    c.batch_execute("ALTER TABLE trade DROP CONSTRAINT poison").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wait_notified(&mut listener, 5), [5]);
    writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gseqs(&mut c, "delta"), [1, 2, 3, 5]);
    assert_eq!(gseqs(&mut c, "trade"), [4]);
}

fn delta_trade() -> Record {
    Record::Trade(TradeRecord {
        origin: origin(9),
        trade_id: "t-1".into(),
        market: Arc::from("KXOK"),
        yes_price_micros: 1,
        no_price_micros: 999_999,
        count_centi: 100,
        taker_side: None,
        taker_book_side: None,
        is_block_trade: None,
        ts_exch_ns: 1,
    })
}

/// Cuts the test database off: no new connections, existing ones terminated.
fn take_down(admin: &mut postgres::Client, db: &TestDatabase) {
    let name = db.name();
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .unwrap_or_else(|e| panic!("{e}"));
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&name],
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

fn bring_up(admin: &mut postgres::Client, db: &TestDatabase) {
    admin
        .batch_execute(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name()))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn admin() -> postgres::Client {
    test_server().and_then(|s| s.connect()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_database_outage_loses_and_duplicates_nothing() {
    const ROWS: u64 = 20_000;
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let mut admin = admin();
    let market: Arc<str> = Arc::from("KXOUT");
    let rings = [ring(1024)];
    let writer = start(&db, &rings, WriterLimits { batch_rows_max: 64, ..limits() });
    let producer = {
        let ring = Arc::clone(&rings[0]);
        let market = Arc::clone(&market);
        std::thread::spawn(move || (1..=ROWS).for_each(|n| push(&ring, delta(n, &market))))
    };
    wait_stats(&writer, "2,000 rows committed", |s| s.last_committed_gseq >= 2_000);
    take_down(&mut admin, &db);
    let down = wait_stats(&writer, "failed reconnects", |s| s.connect_failures >= 3);
    assert!(down.buffered_rows > 0 || down.last_committed_gseq == i64::try_from(ROWS).unwrap_or(0));
    bring_up(&mut admin, &db);
    producer.join().unwrap_or_else(|_| panic!("producer panicked"));
    let stats = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.rows.delta, ROWS);
    assert!(stats.connects >= 2, "{stats:?}");
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<(i64, i64)> = c
        .query("SELECT gseq, seq FROM delta ORDER BY gseq", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i64, i64)> =
        (1..=i64::try_from(ROWS).unwrap_or(0)).map(|n| (n, n)).collect();
    assert!(rows == expected, "rows lost, duplicated or reordered ({} rows)", rows.len());
    let (batches, covered): (i64, i64) = c
        .query_one("SELECT count(*), sum(rows)::bigint FROM batch", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(covered, i64::try_from(ROWS).unwrap_or(0));
    assert_eq!(u64::try_from(batches).ok(), Some(stats.batches_committed));
}

#[test]
fn a_full_buffer_backs_up_into_full_rings_and_nothing_is_dropped() {
    const BUFFER: usize = 8;
    const RING: usize = 4;
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let mut admin = admin();
    let market: Arc<str> = Arc::from("KXBACK");
    let rings = [ring(RING)];
    let writer =
        start(&db, &rings, WriterLimits { batch_rows_max: 4, buffer_rows_max: BUFFER, ..limits() });
    wait_stats(&writer, "the writer to connect", |s| s.connects == 1);
    take_down(&mut admin, &db);
    // Push until the producer sees a full ring while the writer holds a full buffer.
    let mut accepted = 0u64;
    wait_for("the buffer and the ring to fill", || {
        if rings[0].push(delta(accepted + 1, &market)).is_ok() {
            accepted += 1;
        }
        rings[0].is_full() && writer.stats().buffered_rows == BUFFER
    });
    assert_eq!(accepted, u64::try_from(BUFFER + RING).unwrap_or(0));
    let refused = rings[0].push(delta(accepted + 1, &market));
    assert!(refused.is_err(), "a full ring must refuse the record back to its producer");
    bring_up(&mut admin, &db);
    for n in accepted + 1..=accepted + 10 {
        push(&rings[0], delta(n, &market));
    }
    let stats = writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.rows.delta, accepted + 10);
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    let seqs: Vec<i64> = c
        .query("SELECT seq FROM delta ORDER BY gseq", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let n = i64::try_from(accepted + 10).unwrap_or(0);
    assert_eq!(seqs, (1..=n).collect::<Vec<i64>>());
    assert_eq!(gseqs(&mut c, "delta"), (1..=n).collect::<Vec<i64>>());
}

#[test]
fn a_run_without_a_clean_stop_is_a_crash_gap_from_its_earliest_connection() {
    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let market: Arc<str> = Arc::from("KXRUN");
    let rings = [ring(16), ring(16)];
    // Connection 7 last received at origin(5), connection 8 at origin(2) + 1.
    push(&rings[0], delta(4, &market));
    push(&rings[0], delta(5, &market));
    let Record::Delta(mut other) = delta(2, &market) else { unreachable!() };
    other.origin.conn_id = 8;
    other.origin.ts_recv_ns += 1;
    let other_recv = other.origin.ts_recv_ns;
    push(&rings[1], Record::Delta(other));
    let writer = start(&db, &rings, limits());
    wait_stats(&writer, "3 rows committed", |s| s.last_committed_gseq == 3);
    writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e}"));
    // As if the process had been killed: no clean-stop mark.
    c.batch_execute("UPDATE run SET stopped_ns = NULL, last_gseq = NULL")
        .unwrap_or_else(|e| panic!("{e}"));

    let markets: Arc<[Arc<str>]> = vec![Arc::clone(&market), Arc::from("KXALSO")].into();
    let options = WriterOptions { limits: limits(), migrate: true, markets };
    let writer =
        Writer::start(db.config(), rings.to_vec(), options).unwrap_or_else(|e| panic!("{e}"));
    let stats = wait_stats(&writer, "the restart gap", |s| s.run_id != 0);
    assert_eq!(
        (stats.restart_gap, stats.last_committed_gseq, stats.rows.gap),
        (Some(GapKind::Crash), 4, 1)
    );
    push(&rings[0], delta(6, &market));
    wait_stats(&writer, "the next row", |s| s.last_committed_gseq == 5);
    writer.shutdown().unwrap_or_else(|e| panic!("{e}"));
    let gap: Vec<String> = c
        .query(
            "SELECT concat_ws('|', gseq, kind, conn_id, ts_recv_last_good_ns, markets) FROM gap",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(gap, [format!("4|crash|0|{other_recv}|{{KXRUN,KXALSO}}")]);
    assert_eq!(gseqs(&mut c, "delta"), [1, 2, 3, 5]);
    let batches: Vec<(i64, i64)> = c
        .query("SELECT first_gseq, last_gseq FROM batch ORDER BY 1", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(batches.first().map(|b| b.0), Some(1));
    assert!(batches.windows(2).all(|w| w[1].0 == w[0].1 + 1), "batches tile 1..: {batches:?}");
    assert_eq!(batches.last().map(|b| b.1), Some(5));
    assert!(batches.contains(&(4, 4)), "the gap is its own batch: {batches:?}");
}
