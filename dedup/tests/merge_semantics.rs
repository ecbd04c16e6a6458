//! The merge core's semantics (DESIGN §4) on hand-made streams, with exact expected outputs.

mod support;

use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::{Batch, Evictions, Fate, MergeCore, MergeError, ProductionKey};
use kdp_dedup::row::{Gap, Row, Snapshot, SnapshotAnchor};
use kdp_engine::event::{Level, Side};
use support::{content, delta, event_lifecycle, market_lifecycle, ticker, trade};

/// Feeds rows to a core, numbering each gatherer's rows 1, 2, 3, ... after its cursor.
struct Feed {
    core: MergeCore,
    next_gseq: Vec<i64>,
}

impl Feed {
    fn new(gatherers: usize) -> Feed {
        Feed::with_limits(MergeLimits::DEFAULT, gatherers)
    }

    fn with_limits(limits: MergeLimits, gatherers: usize) -> Feed {
        let cursors = vec![0; gatherers];
        Feed {
            core: MergeCore::new(limits, &cursors).expect("core"),
            next_gseq: vec![1; gatherers],
        }
    }

    fn push(&mut self, gatherer: u8, row: Row) -> Fate {
        let g = usize::from(gatherer);
        let gseq = self.next_gseq[g];
        self.next_gseq[g] += 1;
        self.core.push(gatherer, gseq, row).expect("push")
    }

    fn take(&mut self) -> Batch {
        self.core.take_batch().expect("a batch")
    }
}

/// (gatherer, occ, ts, side, price, change) of each emitted delta, in order.
fn deltas(batch: &Batch) -> Vec<(u8, u32, i64, Side, u32, i64)> {
    batch
        .deltas
        .iter()
        .map(|m| {
            (m.gatherer, m.occ, m.row.ts_exch_ns, m.row.side, m.row.price_micros, m.row.delta_centi)
        })
        .collect()
}

/// (gatherer, occ, ts, yes bid) of each emitted ticker, in order.
fn tickers(batch: &Batch) -> Vec<(u8, u32, i64, Option<u32>)> {
    batch
        .tickers
        .iter()
        .map(|m| (m.gatherer, m.occ, m.row.ts_exch_ns, m.row.content.yes_bid_micros))
        .collect()
}

const P: u32 = 500_000;

#[test]
fn identical_deltas_in_one_gatherer_stay_distinct_and_other_gatherers_add_nothing() {
    let mut f = Feed::new(3);
    for _ in 0..3 {
        assert_eq!(f.push(0, delta("KXA-1", 10, Side::Yes, P, 100)), Fate::Emitted);
    }
    for g in [1, 2] {
        for _ in 0..3 {
            assert_eq!(f.push(g, delta("KXA-1", 10, Side::Yes, P, 100)), Fate::Duplicate);
        }
    }
    let batch = f.take();
    assert_eq!(
        deltas(&batch),
        vec![
            (0, 0, 10, Side::Yes, P, 100),
            (0, 1, 10, Side::Yes, P, 100),
            (0, 2, 10, Side::Yes, P, 100)
        ]
    );
    assert_eq!(batch.cursors[..3], [Some(3), Some(3), Some(3)]);
    let stats = f.core.stats();
    assert_eq!((stats.emitted, stats.duplicates, stats.repeats), (3, 6, 0));
    assert_eq!(stats.evictions, Evictions { full: 3, watermark: 0, limit: 0 });
    assert_eq!(stats.index_keys, 0, "every key was delivered by all three gatherers");
}

#[test]
fn the_merge_keeps_the_maximum_multiplicity_over_gatherers() {
    let mut f = Feed::new(3);
    // Truth: X three times at t=10, then Y. Gatherer 0 lost one X, gatherer 1 lost Y,
    // gatherer 2 lost two Xs.
    let x = || delta("KXA-1", 10, Side::No, P, -200);
    let y = || delta("KXA-1", 11, Side::No, P, -200);
    assert_eq!(f.push(0, x()), Fate::Emitted);
    assert_eq!(f.push(0, x()), Fate::Emitted);
    assert_eq!(f.push(0, y()), Fate::Emitted);
    assert_eq!(f.push(2, x()), Fate::Duplicate);
    assert_eq!(f.push(2, y()), Fate::Duplicate);
    assert_eq!(f.push(1, x()), Fate::Duplicate);
    assert_eq!(f.push(1, x()), Fate::Duplicate);
    assert_eq!(f.push(1, x()), Fate::Emitted);
    let batch = f.take();
    assert_eq!(
        deltas(&batch),
        vec![
            (0, 0, 10, Side::No, P, -200),
            (0, 1, 10, Side::No, P, -200),
            (0, 0, 11, Side::No, P, -200),
            (1, 2, 10, Side::No, P, -200),
        ]
    );
}

#[test]
fn a_gap_in_one_gatherer_is_filled_by_another() {
    let mut f = Feed::new(2);
    let a = || delta("KXA-1", 1, Side::Yes, P, 1);
    let b = || delta("KXA-1", 2, Side::Yes, P, 2);
    let c = || delta("KXA-1", 3, Side::Yes, P, 3);
    assert_eq!(f.push(0, a()), Fate::Emitted);
    assert_eq!(f.push(0, c()), Fate::Emitted); // gatherer 0 lost b
    let first = f.take();
    assert_eq!(deltas(&first), vec![(0, 0, 1, Side::Yes, P, 1), (0, 0, 3, Side::Yes, P, 3)]);
    assert_eq!(first.cursors[..2], [Some(2), None]);
    assert_eq!(f.push(1, a()), Fate::Duplicate);
    assert_eq!(f.push(1, b()), Fate::Emitted);
    assert_eq!(f.push(1, c()), Fate::Duplicate);
    let second = f.take();
    assert_eq!(deltas(&second), vec![(1, 0, 2, Side::Yes, P, 2)]);
    assert_eq!(second.cursors[..2], [None, Some(3)]);
    assert!(f.core.take_batch().is_none(), "nothing pushed since");
}

#[test]
fn a_duplicated_ticker_frame_is_one_ticker_but_a_recurring_state_is_two() {
    let mut f = Feed::new(3);
    // Truth at t=5: states a, b, a (a recurs). Gatherer 0 got a's frame twice (dup fault).
    assert_eq!(f.push(0, ticker("KXA-1", 5, 1)), Fate::Emitted);
    assert_eq!(f.push(0, ticker("KXA-1", 5, 1)), Fate::Repeat);
    assert_eq!(f.push(0, ticker("KXA-1", 5, 2)), Fate::Emitted);
    assert_eq!(f.push(0, ticker("KXA-1", 5, 1)), Fate::Emitted);
    // Gatherer 1 got all three once.
    assert_eq!(f.push(1, ticker("KXA-1", 5, 1)), Fate::Duplicate);
    assert_eq!(f.push(1, ticker("KXA-1", 5, 2)), Fate::Duplicate);
    assert_eq!(f.push(1, ticker("KXA-1", 5, 1)), Fate::Duplicate);
    // Gatherer 2 lost b: its two a's are back to back, so it can only vouch for one.
    assert_eq!(f.push(2, ticker("KXA-1", 5, 1)), Fate::Duplicate);
    assert_eq!(f.push(2, ticker("KXA-1", 5, 1)), Fate::Repeat);
    let batch = f.take();
    assert_eq!(tickers(&batch), vec![(0, 0, 5, Some(1)), (0, 0, 5, Some(2)), (0, 1, 5, Some(1))]);
    let stats = f.core.stats();
    assert_eq!((stats.emitted, stats.duplicates, stats.repeats), (3, 4, 2));
}

#[test]
fn a_gatherer_that_saw_the_recurrence_alone_supplies_it() {
    let mut f = Feed::new(2);
    assert_eq!(f.push(0, ticker("KXA-1", 5, 1)), Fate::Emitted);
    assert_eq!(f.push(0, ticker("KXA-1", 5, 1)), Fate::Repeat); // lost b: a, a
    assert_eq!(f.push(1, ticker("KXA-1", 5, 1)), Fate::Duplicate);
    assert_eq!(f.push(1, ticker("KXA-1", 5, 2)), Fate::Emitted);
    assert_eq!(f.push(1, ticker("KXA-1", 5, 1)), Fate::Emitted);
    assert_eq!(
        tickers(&f.take()),
        vec![(0, 0, 5, Some(1)), (1, 0, 5, Some(2)), (1, 1, 5, Some(1))]
    );
}

#[test]
fn trades_are_identified_by_trade_id_exactly() {
    let mut f = Feed::new(2);
    let id = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    assert_eq!(f.push(0, trade(id, 7)), Fate::Emitted);
    assert_eq!(f.push(0, trade("not-a-uuid", 7)), Fate::Emitted);
    assert_eq!(f.push(1, trade(id, 7)), Fate::Duplicate);
    assert_eq!(f.push(1, trade("not-a-uuid", 7)), Fate::Duplicate);
    // Another spelling is another id: never merged by accident.
    assert_eq!(f.push(1, trade(&id.to_uppercase(), 7)), Fate::Emitted);
    assert_eq!(f.push(1, trade("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1", 7)), Fate::Emitted);
    let batch = f.take();
    let ids: Vec<(u8, &str)> =
        batch.trades.iter().map(|m| (m.gatherer, &*m.row.trade_id)).collect();
    assert_eq!(
        ids,
        vec![
            (0, id),
            (0, "not-a-uuid"),
            (1, "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0"),
            (1, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1"),
        ]
    );
}

#[test]
fn lifecycle_events_are_identified_by_ticker_kind_and_payload() {
    let mut f = Feed::new(2);
    assert_eq!(f.push(0, market_lifecycle("KXA-1", "determined", "{\"r\":1}", 100)), Fate::Emitted);
    assert_eq!(
        f.push(1, market_lifecycle("KXA-1", "determined", "{\"r\":1}", 105)),
        Fate::Duplicate
    );
    assert_eq!(f.push(1, market_lifecycle("KXA-1", "settled", "{\"r\":1}", 106)), Fate::Emitted);
    assert_eq!(f.push(1, market_lifecycle("KXA-1", "determined", "{\"r\":2}", 107)), Fate::Emitted);
    assert_eq!(f.push(0, event_lifecycle("KXA", "{\"e\":1}", 100)), Fate::Emitted);
    assert_eq!(f.push(1, event_lifecycle("KXA", "{\"e\":1}", 101)), Fate::Duplicate);
    let batch = f.take();
    let markets: Vec<(u8, &str, &str)> = batch
        .market_lifecycles
        .iter()
        .map(|m| (m.gatherer, &*m.row.kind, &*m.row.payload))
        .collect();
    assert_eq!(
        markets,
        vec![
            (0, "determined", "{\"r\":1}"),
            (1, "settled", "{\"r\":1}"),
            (1, "determined", "{\"r\":2}")
        ]
    );
    assert_eq!(batch.event_lifecycles.len(), 1);
    assert_eq!(batch.event_lifecycles[0].gatherer, 0);
}

#[test]
fn snapshots_and_gaps_are_kept_per_gatherer_with_their_gseq() {
    let mut f = Feed::new(2);
    let snapshot = |seq| {
        Row::Snapshot(Box::new(Snapshot {
            market: "KXA-1".into(),
            anchor: SnapshotAnchor::Ws { conn_id: 1, sid: 2, seq },
            yes: vec![Level { price_micros: P, size_centi: 100 }].into(),
            no: Box::new([]),
            ts_recv_ns: 50,
        }))
    };
    let gap = Row::Gap(Box::new(Gap {
        conn_id: 1,
        sid: 2,
        expected_seq: 7,
        got_seq: Some(9),
        ts_recv_last_good_ns: Some(40),
        markets: vec!["KXA-1".into()].into(),
        ts_recv_ns: 60,
    }));
    assert_eq!(f.push(0, snapshot(1)), Fate::Kept);
    assert_eq!(f.push(1, snapshot(1)), Fate::Kept, "the same book from another gatherer is kept");
    assert_eq!(f.push(1, gap), Fate::Kept);
    let batch = f.take();
    let kept: Vec<(u8, i64)> = batch.snapshots.iter().map(|k| (k.gatherer, k.gseq)).collect();
    assert_eq!(kept, vec![(0, 1), (1, 1)]);
    assert_eq!(batch.gaps.iter().map(|k| (k.gatherer, k.gseq)).collect::<Vec<_>>(), vec![(1, 2)]);
    assert_eq!(batch.cursors[..2], [Some(1), Some(2)]);
}

#[test]
fn keys_leave_when_every_live_gatherer_delivered_them() {
    let mut f = Feed::new(3);
    f.core.set_live(2, false).expect("gatherer 2");
    assert_eq!(f.push(0, delta("KXA-1", 10, Side::Yes, P, 1)), Fate::Emitted);
    assert_eq!(f.core.stats().index_keys, 1);
    assert_eq!(f.push(1, delta("KXA-1", 10, Side::Yes, P, 1)), Fate::Duplicate);
    assert_eq!(f.core.stats().index_keys, 0, "both live gatherers delivered it");
    assert_eq!(f.core.stats().evictions, Evictions { full: 1, watermark: 0, limit: 0 });
    // Gatherer 2 comes back late: its copy is emitted again; production's unique constraint
    // absorbs it (the sink's staging path), so nothing is lost and nothing doubled.
    f.core.set_live(2, true).expect("gatherer 2");
    assert_eq!(f.push(2, delta("KXA-1", 10, Side::Yes, P, 1)), Fate::Emitted);
}

#[test]
fn keys_behind_the_watermark_are_evicted_at_batch_boundaries() {
    let limits = MergeLimits { watermark_slack_ns: 100, ..MergeLimits::DEFAULT };
    let mut f = Feed::with_limits(limits, 2);
    assert_eq!(f.push(0, delta("KXA-1", 1_000, Side::Yes, P, 1)), Fate::Emitted);
    assert_eq!(f.push(0, delta("KXA-1", 1_050, Side::Yes, P, 1)), Fate::Emitted);
    assert_eq!(f.push(0, delta("KXA-1", 1_200, Side::Yes, P, 1)), Fate::Emitted);
    f.take();
    assert_eq!(f.core.watermark_ns(), Some(i64::MIN), "gatherer 1 has shown no progress");
    assert_eq!(f.core.stats().index_keys, 3);
    f.core.note_progress(1, 1_151).expect("gatherer 1");
    assert!(f.core.take_batch().is_none());
    assert_eq!(f.core.watermark_ns(), Some(1_051));
    let stats = f.core.stats();
    assert_eq!(stats.evictions, Evictions { full: 0, watermark: 2, limit: 0 });
    assert_eq!(stats.index_keys, 1);
    // A delivery later than the slack is emitted again (the unique constraint absorbs it).
    assert_eq!(f.push(1, delta("KXA-1", 1_000, Side::Yes, P, 1)), Fate::Emitted);
    assert_eq!(f.push(1, delta("KXA-1", 1_200, Side::Yes, P, 1)), Fate::Duplicate);
}

#[test]
fn at_the_index_limit_the_oldest_key_is_evicted_and_a_late_copy_is_emitted_not_dropped() {
    let limits = MergeLimits { index_keys_max: 2, ..MergeLimits::DEFAULT };
    let mut f = Feed::with_limits(limits, 2);
    for ts in [1, 2, 3] {
        assert_eq!(f.push(0, delta("KXA-1", ts, Side::Yes, P, 1)), Fate::Emitted);
    }
    let stats = f.core.stats();
    assert_eq!((stats.index_keys, stats.evictions.limit), (2, 1));
    // Gatherer 1's copies: ts 3 and 2 are still held (and leave, complete); ts 1 was evicted.
    assert_eq!(f.push(1, delta("KXA-1", 3, Side::Yes, P, 1)), Fate::Duplicate);
    assert_eq!(f.push(1, delta("KXA-1", 2, Side::Yes, P, 1)), Fate::Duplicate);
    assert_eq!(f.push(1, delta("KXA-1", 1, Side::Yes, P, 1)), Fate::Emitted);
    let batch = f.take();
    assert_eq!(
        deltas(&batch),
        vec![
            (0, 0, 1, Side::Yes, P, 1),
            (0, 0, 2, Side::Yes, P, 1),
            (0, 0, 3, Side::Yes, P, 1),
            (1, 0, 1, Side::Yes, P, 1),
        ],
        "the key at ts 1 twice: the sink's staging path keeps one"
    );
}

#[test]
fn batch_full_follows_the_row_limit() {
    let limits = MergeLimits { batch_rows_max: 2, ..MergeLimits::DEFAULT };
    let mut f = Feed::with_limits(limits, 2);
    f.push(0, delta("KXA-1", 1, Side::Yes, P, 1));
    f.push(1, delta("KXA-1", 1, Side::Yes, P, 1));
    assert!(!f.core.batch_full(), "a duplicate adds no row");
    f.push(1, delta("KXA-1", 2, Side::Yes, P, 1));
    assert!(f.core.batch_full());
    assert_eq!(f.take().rows(), 2);
    assert!(!f.core.batch_full());
}

#[test]
fn misuse_is_refused_without_taking_the_row() {
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &[5, 0]).expect("core");
    assert_eq!(
        core.push(0, 5, delta("KXA-1", 1, Side::Yes, P, 1)),
        Err(MergeError::GseqNotIncreasing { gatherer: 0, gseq: 5, last: 5 })
    );
    assert_eq!(
        core.push(2, 1, delta("KXA-1", 1, Side::Yes, P, 1)),
        Err(MergeError::UnknownGatherer { gatherer: 2, count: 2 })
    );
    assert!(core.take_batch().is_none());
    assert_eq!(
        MergeCore::new(MergeLimits::DEFAULT, &[0; 9]).err(),
        Some(MergeError::GathererCount(9))
    );
}

#[test]
fn a_restart_mid_run_keeps_numbering_after_priming_and_production_keys_are_duplicates() {
    // Before the restart gatherer 0 delivered X, X at t=10 (gseq 1, 2), committed with cursor
    // 2. Its next row (gseq 3) is a third X: it must become occ 2, not collide with occ 0.
    let x = || delta("KXA-1", 10, Side::Yes, P, 1);
    let production = |occ| ProductionKey::Delta {
        market: "KXA-1".into(),
        ts_exch_ns: 10,
        side: Side::Yes,
        price_micros: P,
        delta_centi: 1,
        occ,
    };
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &[2, 0]).expect("core");
    core.load_production(production(0));
    core.load_production(production(1));
    core.prime(0, &x()).expect("prime");
    core.prime(0, &x()).expect("prime");
    assert_eq!(core.push(0, 3, x()), Ok(Fate::Emitted));
    assert_eq!(core.push(1, 1, x()), Ok(Fate::Duplicate), "occ 0 is in production");
    let batch = core.take_batch().expect("batch");
    assert_eq!(deltas(&batch), vec![(0, 2, 10, Side::Yes, P, 1)]);

    // Without priming the third X would be numbered 0 and taken for the first: a loss.
    let mut unprimed = MergeCore::new(MergeLimits::DEFAULT, &[2, 0]).expect("core");
    unprimed.load_production(production(0));
    unprimed.load_production(production(1));
    assert_eq!(unprimed.push(0, 3, x()), Ok(Fate::Duplicate));
}

#[test]
fn production_ticker_and_trade_keys_make_later_deliveries_duplicates() {
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &[0]).expect("core");
    core.load_production(ProductionKey::Ticker {
        market: "KXA-1".into(),
        ts_exch_ns: 5,
        content: content(1),
        occ: 0,
    });
    core.load_production(ProductionKey::Trade { trade_id: "t-1".into(), ts_exch_ns: 7 });
    assert_eq!(core.push(0, 1, ticker("KXA-1", 5, 1)), Ok(Fate::Duplicate));
    assert_eq!(core.push(0, 2, trade("t-1", 7)), Ok(Fate::Duplicate));
    assert_eq!(core.push(0, 3, ticker("KXA-1", 5, 2)), Ok(Fate::Emitted));
}
