//! `kdp verify` and `kdp coverage` as real processes (issue 5 items 4 and 7).
//!
//! - verify: the simulator (manual clock, truth file), two in-process gatherers and the running
//!   deduplicator fill production; `kdp verify --truth` passes with exit 0 and exact numbers,
//!   then fails with exit 1 and exact counts after one production delta is deleted, after a
//!   duplicate of one is inserted, and after a trade the exchange never made is inserted.
//! - coverage: a small fixture through the merge core, the coverage ledger and the real sink
//!   (three gatherers, one market, a seq gap in every gatherer with different bounds); `kdp
//!   coverage` prints the exact rows in table, CSV and JSON.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatherer_support::process::kdp;
use gatherer_support::{MARKETS, Replica, Sim, wait_for};
use kdp_dedup::ledger::Ledger;
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::MergeCore;
use kdp_dedup::row::{Delta, Gap, Row};
use kdp_dedup::service::Dedup;
use kdp_dedup::sink::{Sink, SinkOptions};
use kdp_dedup::verify::EventKey;
use kdp_engine::event::Side;
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::gatherer::Gatherer;
use kdp_sim::market::model::ExchEventKind;
use kdp_sim::market::truth::{TruthReader, TruthRecord};

const SEED: u64 = 0x6465_6475_7600_0001;
const CHANNELS: &[&str] = &["orderbook_delta", "trade", "ticker"];

fn count(c: &mut postgres::Client, sql: &str) -> u64 {
    u64::try_from(c.query_one(sql, &[]).unwrap().get::<_, i64>(0)).unwrap()
}

/// Lifecycle and data events in a truth file, independently of `kdp verify`'s reader.
fn truth_counts(path: &Path) -> (u64, u64) {
    let reader = TruthReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let (mut lifecycle, mut data) = (0, 0);
    for record in reader {
        if let TruthRecord::Exch(e) = record.unwrap() {
            match e.event.kind {
                ExchEventKind::MarketLifecycle { .. } | ExchEventKind::EventCreated { .. } => {
                    lifecycle += 1;
                }
                _ => data += 1,
            }
        }
    }
    (lifecycle, data)
}

#[test]
fn verify_passes_on_the_pipeline_and_fails_on_each_kind_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.bin");
    let sim = Sim::start_configured(gatherer_support::market_config(SEED), false, |cfg| {
        cfg.truth_path = Some(truth_path.clone());
    });
    let markets = sim.busy_markets(MARKETS);
    let mut dbs = Vec::new();
    let mut gatherers = Vec::new();
    for _ in 0..2 {
        let db = TestDatabase::new().unwrap();
        let g = Gatherer::start(&sim.gatherer_config(&db, markets.clone(), CHANNELS)).unwrap();
        wait_for("a gatherer's initial snapshots", || {
            g.stats().writer.rows.snapshot >= MARKETS as u64
        });
        dbs.push(db);
        gatherers.push(g);
    }
    let prod = TestDatabase::new().unwrap();
    let mut text = format!(
        "production_database_url = {:?}\nmetrics_addr = \"off\"\npoll_interval_ms = 200\n",
        prod.url()
    );
    for (i, db) in dbs.iter().enumerate() {
        text.push_str(&format!(
            "[[gatherers]]\nname = \"g{i}\"\nid = {i}\ndatabase_url = {:?}\n",
            db.url()
        ));
    }
    let config = kdp_dedup::config::DedupConfig::from_toml(&text).unwrap().check().unwrap();
    let dedup = Dedup::start(config).unwrap();
    let mut replica = Replica::new(SEED, &markets, CHANNELS);
    for _ in 0..3 {
        let exch_seq = sim.advance(1_000);
        replica.run_to(exch_seq);
        let expected = 2 * replica.expected();
        wait_for("both gatherers to commit every frame sent", || {
            let stored: u64 = gatherers
                .iter()
                .map(|g| {
                    let r = g.stats().writer.rows;
                    r.delta + r.trade + r.ticker
                })
                .sum();
            stored == expected
        });
    }
    let mut heads = Vec::new();
    for (g, db) in gatherers.drain(..).zip(&dbs) {
        assert_eq!(g.shutdown().unwrap().fatal(), None);
        let mut c = db.connect().unwrap();
        heads.push(count(&mut c, "SELECT coalesce(max(last_gseq), 0) FROM batch"));
    }
    // Stop the simulator without its harness's truth reader: the file stays in `dir`.
    let Sim { rt, handle, .. } = sim;
    rt.block_on(handle.shutdown());
    let mut p = prod.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let cursor = |p: &mut postgres::Client, i: usize| {
        count(p, &format!("SELECT coalesce(max(gseq), 0) FROM dedup_cursor WHERE gatherer = {i}"))
    };
    while (0..2).any(|i| cursor(&mut p, i) < heads[i]) {
        assert!(Instant::now() < deadline, "the dedup did not reach the gatherers' heads");
        std::thread::sleep(Duration::from_millis(10));
    }
    dedup.shutdown().unwrap();

    // The numbers, independently of kdp verify.
    let events = count(
        &mut p,
        "SELECT (SELECT count(*) FROM delta) + (SELECT count(*) FROM trade) \
         + (SELECT count(*) FROM ticker)",
    );
    assert_eq!(
        count(
            &mut p,
            "SELECT (SELECT count(*) FROM market_lifecycle) + (SELECT count(*) FROM event_lifecycle)"
        ),
        0,
        "no lifecycle channel"
    );
    let per_gatherer: Vec<u64> = dbs
        .iter()
        .map(|db| {
            count(
                &mut db.connect().unwrap(),
                "SELECT (SELECT count(*) FROM delta) + (SELECT count(*) FROM trade) \
                 + (SELECT count(*) FROM ticker)",
            )
        })
        .collect();
    assert_eq!(per_gatherer, [events, events], "no faults: each gatherer has everything");
    assert!(events > 1_000, "{events} events");
    let (lifecycle, data) = truth_counts(&truth_path);
    let truth = truth_path.to_str().unwrap();
    let verify = |p: &TestDatabase| {
        kdp(&[
            "verify",
            "--production",
            p.url(),
            "--gatherer",
            dbs[0].url(),
            "--gatherer",
            dbs[1].url(),
            "--truth",
            truth,
        ])
    };
    let truth_line = format!(
        "  truth: {events} delta/trade/ticker events checked in the subscribed windows, {} \
         outside them not checked; {lifecycle} lifecycle events checked against the gatherers \
         only (the truth file does not carry their payloads)\n",
        data - events
    );
    let counts = |lost: u32, dup: u32, unexpected: u32, missing: u32| {
        format!(
            "  lost {lost}  duplicated {dup}  unexpected {unexpected}  missing outside coverage \
             gaps {missing}  missing inside coverage gaps 0\n"
        )
    };
    let (code, out, err) = verify(&prod);
    println!("{out}{err}");
    assert_eq!(
        out,
        format!(
            "verify: OK (truth {events} events, production {events}, gatherers [{events}, \
             {events}])\n{}{truth_line}",
            counts(0, 0, 0, 0)
        )
    );
    assert_eq!((code, err.as_str()), (0, ""));

    // 1. One production delta deleted (a key production holds once).
    let row = p
        .query_one(
            "SELECT market, ts_exch_ns, side_yes, price_micros, delta_centi FROM delta \
             GROUP BY market, ts_exch_ns, side_yes, price_micros, delta_centi \
             HAVING count(*) = 1 ORDER BY ts_exch_ns, market, side_yes, price_micros LIMIT 1",
            &[],
        )
        .unwrap();
    let market: String = row.get(0);
    let (ts, side_yes, price, delta): (i64, bool, i64, i64) =
        (row.get(1), row.get(2), row.get(3), row.get(4));
    let key = EventKey::Delta {
        market: Arc::from(market.as_str()),
        ts_exch_ns: ts,
        side_yes,
        price_micros: u32::try_from(price).unwrap(),
        delta_centi: delta,
    };
    let this = format!(
        "market = '{market}' AND ts_exch_ns = {ts} AND side_yes = {side_yes} \
         AND price_micros = {price} AND delta_centi = {delta}"
    );
    p.batch_execute(&format!(
        "CREATE TABLE kept AS SELECT * FROM delta WHERE {this}; DELETE FROM delta WHERE {this}"
    ))
    .unwrap();
    let (code, out, err) = verify(&prod);
    println!("{out}{err}");
    assert_eq!(
        out,
        format!(
            "verify: FAILED (truth {events} events, production {}, gatherers [{events}, \
             {events}])\n{}  lost: {key:?} production 0 expected 1\n  missing outside coverage \
             gaps: {key:?} production 0 expected 1 at {ts} ns\n{truth_line}",
            events - 1,
            counts(1, 0, 0, 1)
        )
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "kdp verify: FAILED: 1 lost, 0 duplicated, 0 unexpected, 1 missing outside coverage \
         gaps\n"
    );

    // 2. Restored, then a second copy of it (the next occurrence ordinal).
    p.batch_execute(
        "INSERT INTO delta SELECT * FROM kept; UPDATE kept SET occ = occ + 1; \
         INSERT INTO delta SELECT * FROM kept",
    )
    .unwrap();
    let (code, out, _) = verify(&prod);
    assert_eq!(
        out,
        format!(
            "verify: FAILED (truth {events} events, production {}, gatherers [{events}, \
             {events}])\n{}  duplicated: {key:?} production 2 expected 1 at {ts} ns\n{truth_line}",
            events + 1,
            counts(0, 1, 0, 0)
        )
    );
    assert_eq!(code, 1);

    // 3. The duplicate removed; a trade the exchange never made.
    p.batch_execute(&format!(
        "DELETE FROM delta WHERE {this} AND occ = (SELECT occ FROM kept); \
         CREATE TABLE fake AS SELECT * FROM trade LIMIT 1; \
         UPDATE fake SET trade_id = '00000000-0000-4000-8000-000000000000'; \
         INSERT INTO trade SELECT * FROM fake"
    ))
    .unwrap();
    let fake = EventKey::Trade { trade_id: "00000000-0000-4000-8000-000000000000".into() };
    let (code, out, _) = verify(&prod);
    assert_eq!(
        out,
        format!(
            "verify: FAILED (truth {events} events, production {}, gatherers [{events}, \
             {events}])\n{}  unexpected: {fake:?} production 1 expected 0\n{truth_line}",
            events + 1,
            counts(0, 0, 1, 0)
        )
    );
    assert_eq!(code, 1);

    // Usage and connection errors: status 2.
    let (code, _, err) = kdp(&["verify", "--production", prod.url()]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = kdp(&[
        "verify",
        "--production",
        "postgres://kdp@127.0.0.1:1/production",
        "--gatherer",
        dbs[0].url(),
    ]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.starts_with("kdp verify: cannot reach the production database ("), "{err}");
    let missing = dir.path().join("no-such-truth.bin");
    let (code, _, err) = kdp(&[
        "verify",
        "--production",
        prod.url(),
        "--gatherer",
        dbs[0].url(),
        "--truth",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.starts_with(&format!("kdp verify: truth file {}: ", missing.display())), "{err}");
}

/// 2026-01-05T14:00:00Z, ns.
const T0: i64 = 1_767_621_600_000_000_000;
const S: i64 = 1_000_000_000;

fn delta(market: &Arc<str>, at_s: i64) -> Row {
    Row::Delta(Delta {
        market: Arc::clone(market),
        side: Side::Yes,
        price_micros: 500_000,
        delta_centi: 100 + at_s,
        ts_exch_ns: T0 + at_s * S,
        ts_recv_ns: T0 + at_s * S + 1_000_000,
        client_order_id: None,
    })
}

/// A seq gap of `market` on conn 1 sid 1: last good receive time `good_s`, noticed at `seen_s`.
fn seq_gap(market: &Arc<str>, good_s: i64, seen_s: i64) -> Row {
    Row::Gap(Box::new(Gap {
        conn_id: 1,
        sid: 1,
        expected_seq: 10,
        got_seq: Some(12),
        ts_recv_last_good_ns: Some(T0 + good_s * S),
        markets: vec![Arc::clone(market)].into_boxed_slice(),
        ts_recv_ns: T0 + seen_s * S,
    }))
}

#[test]
fn coverage_prints_the_minutes_and_the_gap_every_gatherer_had() {
    let prod = TestDatabase::new().unwrap();
    let mut sink = Sink::new(prod.url().parse().unwrap(), SinkOptions { migrate: true });
    let mut core = MergeCore::new(MergeLimits::default(), &[0, 0, 0]).unwrap();
    for g in 0..3 {
        core.set_live(g, true).unwrap();
    }
    let mut ledger = Ledger::new(3);
    let m: Arc<str> = Arc::from("KXTEST-26JAN05-T1");
    let other: Arc<str> = Arc::from("KXOTHER-26JAN05-T1");
    // Seconds after 14:00:00. Uncovered (gap bounds ± 2 s): g0 14:01:38–14:02:32,
    // g1 14:01:48–14:02:22, g2 14:01:43–14:03:07; every gatherer: 14:01:48–14:02:22.
    // The delta at 14:02:10 reached nobody; g2 missed the one at 14:02:40 too.
    let streams: [Vec<Row>; 3] = [
        vec![delta(&m, 10), delta(&m, 70), seq_gap(&m, 100, 150), delta(&m, 160), delta(&m, 210)],
        vec![delta(&m, 10), delta(&m, 70), seq_gap(&m, 110, 140), delta(&m, 160), delta(&m, 210)],
        vec![delta(&m, 10), delta(&m, 70), seq_gap(&m, 105, 185), delta(&m, 210)],
    ];
    for (g, rows) in streams.iter().enumerate() {
        let id = u8::try_from(g).unwrap();
        let mut gseq = 0;
        for row in rows {
            gseq += 1;
            ledger.push(&mut core, id, gseq, row.clone()).unwrap();
            if gseq == 2 {
                // Another market, fully covered: not in M's rows.
                gseq += 1;
                ledger.push(&mut core, id, gseq, delta(&other, 20)).unwrap();
            }
        }
        // A batch per gatherer: counts of one minute add up across them.
        let (batch, delta) = ledger.take_batch(&mut core).unwrap();
        sink.write_with_ledger(&batch, &delta).unwrap();
    }
    let args = |format: &'static str| {
        [
            "coverage",
            "--market",
            "KXTEST-26JAN05-T1",
            "--from",
            "2026-01-05T14:00:00Z",
            "--to",
            "2026-01-05T14:04:00Z",
            "--format",
            format,
            "--production",
            prod.url(),
        ]
    };
    let (code, out, err) = kdp(&args("table"));
    println!("{out}{err}");
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "coverage of KXTEST-26JAN05-T1 from 2026-01-05T14:00:00Z to 2026-01-05T14:04:00Z (3 \
         gatherers; covered = no gap marker or disconnect of that gatherer overlaps the minute)\n\
         minute                      g0   g0 events      g1   g1 events      g2   g2 events   merged  gap\n\
         2026-01-05T14:00:00Z       yes           1     yes           1     yes           1        1   no\n\
         2026-01-05T14:01:00Z        no           1      no           1      no           1        1  yes\n\
         2026-01-05T14:02:00Z        no           1      no           1      no           0        1  yes\n\
         2026-01-05T14:03:00Z       yes           1     yes           1      no           1        1   no\n\
         coverage gap (no gatherer covered): 2026-01-05T14:01:48.000000000Z to \
         2026-01-05T14:02:22.000000000Z\n"
    );
    let (code, out, _) = kdp(&args("csv"));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "kind,from,to,g0_covered,g0_delivered,g1_covered,g1_delivered,g2_covered,g2_delivered,merged,gap\n\
         minute,2026-01-05T14:00:00Z,2026-01-05T14:01:00Z,yes,1,yes,1,yes,1,1,no\n\
         minute,2026-01-05T14:01:00Z,2026-01-05T14:02:00Z,no,1,no,1,no,1,1,yes\n\
         minute,2026-01-05T14:02:00Z,2026-01-05T14:03:00Z,no,1,no,1,no,0,1,yes\n\
         minute,2026-01-05T14:03:00Z,2026-01-05T14:04:00Z,yes,1,yes,1,no,1,1,no\n\
         gap,2026-01-05T14:01:48.000000000Z,2026-01-05T14:02:22.000000000Z,,,,,,,,yes\n"
    );
    let (code, out, _) = kdp(&args("json"));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\"market\":\"KXTEST-26JAN05-T1\",\"from\":\"2026-01-05T14:00:00.000000000Z\",\
         \"to\":\"2026-01-05T14:04:00.000000000Z\",\"gatherers\":3,\"minutes\":[\
         {\"minute\":\"2026-01-05T14:00:00Z\",\"covered\":[true,true,true],\"delivered\":[1,1,1],\"merged\":1,\"gap\":false},\
         {\"minute\":\"2026-01-05T14:01:00Z\",\"covered\":[false,false,false],\"delivered\":[1,1,1],\"merged\":1,\"gap\":true},\
         {\"minute\":\"2026-01-05T14:02:00Z\",\"covered\":[false,false,false],\"delivered\":[1,1,0],\"merged\":1,\"gap\":true},\
         {\"minute\":\"2026-01-05T14:03:00Z\",\"covered\":[true,true,false],\"delivered\":[1,1,1],\"merged\":1,\"gap\":false}],\
         \"gaps\":[{\"from\":\"2026-01-05T14:01:48.000000000Z\",\"to\":\"2026-01-05T14:02:22.000000000Z\"}]}\n"
    );
    // The other market: covered by everyone, no gap.
    let (code, out, _) = kdp(&[
        "coverage",
        "--market",
        "KXOTHER-26JAN05-T1",
        "--from",
        "2026-01-05T14:00:00Z",
        "--to",
        "2026-01-05T14:01:00Z",
        "--format",
        "csv",
        "--production",
        prod.url(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "kind,from,to,g0_covered,g0_delivered,g1_covered,g1_delivered,g2_covered,g2_delivered,merged,gap\n\
         minute,2026-01-05T14:00:00Z,2026-01-05T14:01:00Z,yes,1,yes,1,yes,1,1,no\n"
    );
    let (code, _, err) = kdp(&[
        "coverage",
        "--market",
        "M",
        "--from",
        "2026-01-05T14:04:00Z",
        "--to",
        "2026-01-05T14:00:00Z",
        "--production",
        prod.url(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "kdp coverage: --to (2026-01-05T14:00:00.000000000Z) must be after --from \
         (2026-01-05T14:04:00.000000000Z)\n"
    );
}
