//! The ground-truth format: what the writer records reads back identically, damaged files are
//! reported, and the COPY rows are exactly what `kdp verify` will load.

use kdp_sim::market::model::{
    BookSide, ExchEvent, ExchEventKind, LifecycleFields, LifecycleKind, Side, TickerState,
};
use kdp_sim::market::truth::{
    DeliveryItem, DeliveryLog, EXCH_EVENT_COLUMNS, TruthCatalog, TruthError, TruthEvent,
    TruthHeader, TruthReader, TruthRecord, TruthWriter, delivery_copy_text, to_copy_text,
};
use kdp_sim::market::{Exchange, MarketConfig};

fn cfg(seed: u64) -> MarketConfig {
    MarketConfig {
        seed,
        markets: 200,
        lifetime_s_min: 10,
        lifetime_s_max: 60,
        open_delay_s_max: 5,
        pause_ppm: 300_000,
        close_update_ppm: 300_000,
        determine_delay_s_max: 5,
        settle_delay_s_max: 5,
        ..MarketConfig::default()
    }
}

fn deliveries() -> Vec<DeliveryLog> {
    vec![
        DeliveryLog {
            conn_id: 1,
            items: vec![
                DeliveryItem::Delivered(1),
                DeliveryItem::Delivered(2),
                DeliveryItem::Gap { first: 3, last: 9 },
                DeliveryItem::Delivered(10),
                DeliveryItem::Duplicate(10),
                DeliveryItem::Delivered(7), // out of order after a resync
                DeliveryItem::Delivered(u64::MAX),
            ],
        },
        DeliveryLog { conn_id: u64::MAX, items: vec![] },
    ]
}

/// Writes a run of `n` events (with catalog and delivery logs); returns the bytes, the events
/// with the lifecycle fields seen at pull time, and the exchange.
fn write_run(seed: u64, n: usize) -> (Vec<u8>, Vec<TruthEvent>, Exchange) {
    let c = cfg(seed);
    let mut x = Exchange::new(c.clone());
    let mut w = TruthWriter::new(Vec::new(), &TruthHeader::for_config(&c)).expect("vec write");
    let mut expected = Vec::with_capacity(n);
    for i in 0..n {
        let event = x.next_event();
        w.record(&x, &event).expect("vec write");
        let lifecycle = match event.kind {
            ExchEventKind::MarketLifecycle { market, .. } => Some(x.lifecycle_fields(market)),
            _ => None,
        };
        expected.push(TruthEvent { event, lifecycle });
        if i == n / 2 {
            for d in deliveries() {
                w.write_delivery(d.conn_id, &d.items).expect("vec write");
            }
        }
    }
    (w.finish().expect("vec write"), expected, x)
}

#[test]
fn round_trip_reproduces_every_record() {
    let seed = 77;
    eprintln!("seed {seed}");
    let (bytes, expected, x) = write_run(seed, 100_000);
    let mut r = TruthReader::new(&bytes[..]).expect("header");
    assert_eq!(*r.header(), TruthHeader::for_config(&cfg(seed)));
    let mut events = Vec::new();
    let mut logs = Vec::new();
    let mut end = None;
    let mut markets_seen = 0;
    for rec in r.by_ref() {
        match rec.expect("record") {
            TruthRecord::Exch(e) => {
                if let Some(m) = e.event.kind.market() {
                    assert!((m as usize) < markets_seen, "market named before its catalog record");
                }
                events.push(e);
            }
            TruthRecord::Delivery(d) => logs.push(d),
            TruthRecord::Market { id, entry } => {
                assert_eq!(id as usize, markets_seen);
                assert_eq!(entry.ticker, x.markets()[id as usize].ticker);
                markets_seen += 1;
            }
            TruthRecord::End { events: n, last_seq } => end = Some((n, last_seq)),
            TruthRecord::Series { .. } | TruthRecord::Event { .. } => {}
        }
    }
    assert_eq!(events, expected);
    assert_eq!(logs, deliveries());
    assert_eq!(end, Some((100_000, 100_000)));
    let cat = r.catalog();
    assert_eq!(cat.markets.len(), x.markets().len());
    for (i, m) in x.markets().iter().enumerate() {
        assert_eq!(cat.markets[i], m.ticker);
        assert_eq!(cat.market_event[i], m.event);
    }
    for (i, e) in x.events().iter().enumerate() {
        assert_eq!(cat.events[i], e.ticker);
    }
    for (i, s) in x.series().iter().enumerate() {
        assert_eq!(cat.series[i], s.ticker);
    }
    // Compact: about 22 bytes per event on average here (tickers and trade ids dominate; the
    // catalog is included), against ~250 for the JSON frames.
    assert!(bytes.len() < 100_000 * 24, "{} bytes", bytes.len());
}

#[test]
fn damaged_files_are_reported() {
    let (bytes, _, _) = write_run(5, 2_000);
    // Cut at a record boundary or inside one: never a silent short read.
    for cut in [bytes.len() - 1, bytes.len() - 3, bytes.len() / 2, 41] {
        let r = TruthReader::new(&bytes[..cut]).expect("header");
        let last = r.last().expect("at least one item");
        assert!(
            matches!(last, Err(TruthError::Truncated(_) | TruthError::Corrupt { .. })),
            "cut at {cut}: {last:?}"
        );
    }
    // Only the header: truncated after 0 records.
    let mut r = TruthReader::new(&bytes[..40]).expect("header");
    assert!(matches!(r.next(), Some(Err(TruthError::Truncated(0)))));
    assert!(r.next().is_none());

    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(TruthReader::new(&bad[..]), Err(TruthError::BadMagic)));
    let mut newer = bytes.clone();
    newer[8] = 2;
    assert!(matches!(TruthReader::new(&newer[..]), Err(TruthError::UnsupportedVersion(2))));
}

#[test]
fn unknown_records_are_skipped() {
    let header = TruthHeader::for_config(&MarketConfig::default());
    let mut w = TruthWriter::new(Vec::new(), &header).expect("vec write");
    let ev = ExchEvent {
        exch_seq: 1,
        ts_ns: header.start_ts_ns + 5_000,
        kind: ExchEventKind::EventCreated { event: 3 },
    };
    w.write_event(&ev, None).expect("vec write");
    let mut bytes = w.finish().expect("vec write");
    // Splice a record with an unknown tag (a newer writer's) before the end record.
    let end_at = bytes.len() - 4; // tag, len 2, events 1, last_seq 1
    assert_eq!(bytes[end_at], 0x7F);
    bytes.splice(end_at..end_at, [0x55, 3, 1, 2, 3]);
    let recs: Vec<TruthRecord> =
        TruthReader::new(&bytes[..]).expect("header").map(|r| r.expect("record")).collect();
    assert_eq!(
        recs,
        vec![
            TruthRecord::Exch(TruthEvent { event: ev, lifecycle: None }),
            TruthRecord::End { events: 1, last_seq: 1 }
        ]
    );
}

#[test]
fn copy_rows_are_exact() {
    let catalog = TruthCatalog {
        series: vec!["KXHIGHNY".into()],
        events: vec!["KXHIGHNY-26NOV29".into()],
        markets: vec!["KXHIGHNY-26NOV29-T54".into()],
        market_event: vec![0],
    };
    let ts = 1_795_910_400_123_456_000;
    let row = |kind, lifecycle| {
        to_copy_text(
            &TruthEvent { event: ExchEvent { exch_seq: 42, ts_ns: ts, kind }, lifecycle },
            &catalog,
        )
    };
    let n = EXCH_EVENT_COLUMNS.len();
    let nulls = |k: usize| vec!["\\N"; k].join("\t");

    let delta = row(
        ExchEventKind::Delta {
            market: 0,
            side: Side::No,
            price_micros: 560_000,
            delta_centi: -1_700,
        },
        None,
    );
    assert_eq!(
        delta,
        format!(
            "42\t{ts}\tdelta\tKXHIGHNY-26NOV29-T54\tKXHIGHNY-26NOV29\tno\t560000\t-1700\t{}\n",
            nulls(n - 8)
        )
    );

    let trade = row(
        ExchEventKind::Trade {
            market: 0,
            trade_id: [
                0xd9, 0x1b, 0xc7, 0x06, 0xee, 0x49, 0x47, 0x0d, 0x82, 0xd8, 0x11, 0x41, 0x8b, 0xda,
                0x6f, 0xed,
            ],
            yes_price_micros: 360_000,
            count_centi: 13_600,
            taker_side: Side::No,
            taker_book_side: BookSide::Ask,
        },
        None,
    );
    assert_eq!(
        trade,
        format!(
            "42\t{ts}\ttrade\tKXHIGHNY-26NOV29-T54\tKXHIGHNY-26NOV29\t{}\td91bc706-ee49-470d-82d8-11418bda6fed\t360000\t13600\tno\task\t{}\n",
            nulls(3),
            nulls(n - 13)
        )
    );

    let state = TickerState {
        last_price_micros: None,
        yes_bid_micros: 450_000,
        yes_ask_micros: 530_000,
        yes_bid_size_centi: 30_000,
        yes_ask_size_centi: 15_000,
        last_trade_size_centi: None,
        volume_centi: 0,
        open_interest_centi: 0,
        dollar_volume: 0,
        dollar_open_interest: 0,
    };
    let ticker = row(ExchEventKind::Ticker { market: 0, state }, None);
    assert_eq!(
        ticker,
        format!(
            "42\t{ts}\tticker\tKXHIGHNY-26NOV29-T54\tKXHIGHNY-26NOV29\t{}\t\\N\t450000\t530000\t30000\t15000\t\\N\t0\t0\t0\t0\t{}\n",
            nulls(8),
            nulls(8)
        )
    );

    let fields = LifecycleFields {
        open_ts_ns: 1_795_910_400_000_000_000,
        close_ts_ns: 1_795_914_000_000_000_000,
        determined_ts_ns: Some(ts),
        settled_ts_ns: None,
        result: Some(Side::Yes),
        settlement_value_micros: Some(1_000_000),
        is_deactivated: false,
    };
    let life = row(
        ExchEventKind::MarketLifecycle { market: 0, kind: LifecycleKind::Determined },
        Some(fields),
    );
    assert_eq!(
        life,
        format!(
            "42\t{ts}\tmarket_lifecycle\tKXHIGHNY-26NOV29-T54\tKXHIGHNY-26NOV29\t{}\tdetermined\t1795910400000000000\t1795914000000000000\t{ts}\t\\N\tyes\t1000000\tf\n",
            nulls(18)
        )
    );

    let created = row(ExchEventKind::EventCreated { event: 0 }, None);
    assert_eq!(
        created,
        format!("42\t{ts}\tevent_created\t\\N\tKXHIGHNY-26NOV29\t{}\n", nulls(n - 5))
    );
    // An id the catalog does not know is still named.
    let unknown = row(ExchEventKind::EventCreated { event: 9 }, None);
    assert!(unknown.contains("\t#9\t"));

    assert_eq!(
        delivery_copy_text(&deliveries()[0]),
        "1\tdelivered\t1\t1\n1\tdelivered\t2\t2\n1\tgap\t3\t9\n1\tdelivered\t10\t10\n\
         1\tduplicate\t10\t10\n1\tdelivered\t7\t7\n1\tdelivered\t18446744073709551615\t18446744073709551615\n"
    );
}
