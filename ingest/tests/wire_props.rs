//! Property tests: every normalized event encodes to a frame (in each wire shape that can carry
//! it exactly) and parses back to the same event; decimals and timestamps round-trip exactly and
//! agree with an independent implementation (chrono). proptest prints the failing seed and
//! input; regressions are kept in `proptest-regressions/`.

use kdp_engine::event::{
    BookDelta, BookSide, BookSnapshot, Event, EventLifecycle, Level, LifecycleKind,
    MarketLifecycle, Side, Ticker, Trade,
};
use kdp_ingest::wire::{
    Envelope, FrameParser, Message, Shape, encode_event, market_lifecycle_payload, parse_rfc3339,
    parse_scaled, write_rfc3339, write_scaled,
};
use proptest::prelude::*;

const SHAPES: [Shape; 3] = [Shape::Current, Shape::LegacyDollars, Shape::LegacyCents];

/// 2015-01-01 .. 2035-01-01 in ns.
const TS_MIN_NS: i64 = 1_420_070_400_000_000_000;
const TS_MAX_NS: i64 = 2_051_222_400_000_000_000;

fn ticker() -> impl Strategy<Value = String> {
    "KX[A-Z]{1,8}-[0-9]{2}[A-Z]{3}[0-9]{2}(-[A-Z][0-9]{1,6}(\\.[0-9]{2})?)?"
}

fn uuid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

/// Book prices: strictly inside ($0, $1); often on the cent grid so legacy shapes are exercised.
fn book_price() -> impl Strategy<Value = u32> {
    prop_oneof![
        (1_u32..=99).prop_map(|c| c * 10_000),
        (1_u32..=999).prop_map(|m| m * 1_000),
        1_u32..=999_999
    ]
}

/// Sizes in hundredths: often whole contracts so legacy shapes are exercised.
fn size(max_contracts: i64) -> impl Strategy<Value = i64> {
    prop_oneof![(0..=max_contracts).prop_map(|c| c * 100), 0..=max_contracts * 100]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Yes), Just(Side::No)]
}

fn ts_ns() -> impl Strategy<Value = i64> {
    prop_oneof![
        (TS_MIN_NS / 1_000..TS_MAX_NS / 1_000).prop_map(|us| us * 1_000),
        (TS_MIN_NS / 1_000_000_000..TS_MAX_NS / 1_000_000_000).prop_map(|s| s * 1_000_000_000),
        TS_MIN_NS..TS_MAX_NS,
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        proptest::option::of(1_u64..1_000),
        proptest::option::of(1_u64..100),
        proptest::option::of(1_u64..u64::from(u32::MAX)),
        proptest::option::of(1_400_000_000_000_i64..2_000_000_000_000),
    )
        .prop_map(|(id, sid, seq, sending_ts_ms)| Envelope { id, sid, seq, sending_ts_ms })
}

/// Encodes in every shape that carries the event exactly, parses back, and compares.
/// Returns how many shapes could carry it.
fn round_trip(event: &Event<'_>, env: &Envelope) -> Result<usize, TestCaseError> {
    let mut parser = FrameParser::new();
    let mut carried = 0;
    for shape in SHAPES {
        let Some(text) = encode_event(event, env, shape) else { continue };
        carried += 1;
        let frame = parser
            .parse(text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{shape:?}: {e}\nframe: {text}")))?;
        prop_assert_eq!(&frame.envelope, env, "{:?} frame: {}", shape, text);
        prop_assert_eq!(
            &frame.message,
            &Message::Event(event.clone()),
            "{:?} frame: {}",
            shape,
            text
        );
    }
    Ok(carried)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn deltas_round_trip(
        market in ticker(), side in side(), price in book_price(),
        delta in prop_oneof![size(100_000), size(100_000).prop_map(|s| -s)],
        ts in ts_ns(), coid in proptest::option::of("[a-z0-9-]{1,20}"), env in envelope(),
    ) {
        let event = Event::Delta(BookDelta {
            market: &market, side, price_micros: price, delta_centi: delta, ts_exch_ns: ts,
            client_order_id: coid.as_deref(),
        });
        prop_assert!(round_trip(&event, &env)? >= 1, "the current shape carries every delta");
    }

    #[test]
    fn snapshots_round_trip(
        market in ticker(),
        yes in proptest::collection::vec((book_price(), size(1_000_000)), 0..40),
        no in proptest::collection::vec((book_price(), size(1_000_000)), 0..40),
        env in envelope(),
    ) {
        let yes: Vec<Level> = yes.into_iter().map(|(p, s)| Level { price_micros: p, size_centi: s }).collect();
        let no: Vec<Level> = no.into_iter().map(|(p, s)| Level { price_micros: p, size_centi: s }).collect();
        let event = Event::Snapshot(BookSnapshot { market: &market, yes: &yes, no: &no });
        prop_assert!(round_trip(&event, &env)? >= 1);
    }

    #[test]
    fn trades_round_trip(
        id in uuid(), market in ticker(), yes_price in book_price(),
        count in size(1_000_000).prop_filter("trades are never empty", |c| *c > 0),
        taker in proptest::option::of(side()),
        book in proptest::option::of(prop_oneof![Just(BookSide::Ask), Just(BookSide::Bid)]),
        block in proptest::option::of(any::<bool>()),
        ts_ms in TS_MIN_NS / 1_000_000..TS_MAX_NS / 1_000_000, env in envelope(),
    ) {
        let event = Event::Trade(Trade {
            trade_id: &id, market: &market, yes_price_micros: yes_price,
            no_price_micros: 1_000_000 - yes_price, count_centi: count, taker_side: taker,
            taker_book_side: book, is_block_trade: block, ts_exch_ns: ts_ms * 1_000_000,
        });
        prop_assert!(round_trip(&event, &env)? >= 1);
    }

    #[test]
    fn tickers_round_trip(
        market in ticker(),
        quotes in proptest::array::uniform3(proptest::option::of(prop_oneof![Just(0_u32), Just(1_000_000), book_price()])),
        sizes in proptest::array::uniform5(proptest::option::of(size(10_000_000))),
        dollars in proptest::array::uniform2(proptest::option::of(-1_000_000_000_i64..1_000_000_000)),
        clock in proptest::option::of(any::<u64>()),
        ts in ts_ns(), env in envelope(),
    ) {
        let event = Event::Ticker(Ticker {
            market: &market, price_micros: quotes[0], yes_bid_micros: quotes[1],
            yes_ask_micros: quotes[2], volume_centi: sizes[0], open_interest_centi: sizes[1],
            yes_bid_size_centi: sizes[2], yes_ask_size_centi: sizes[3],
            last_trade_size_centi: sizes[4], dollar_volume: dollars[0],
            dollar_open_interest: dollars[1], clock, ts_exch_ns: ts,
        });
        prop_assert!(round_trip(&event, &env)? >= 1);
    }

    #[test]
    fn lifecycles_round_trip(
        market in ticker(), kind in 0_usize..9, multivariate in any::<bool>(),
        times in proptest::array::uniform4(proptest::option::of(1_400_000_000_i64..2_000_000_000)),
        result in proptest::option::of(prop_oneof![Just("yes"), Just("no"), Just("scalar")]),
        value in proptest::option::of(0_u32..=1_000_000),
        structure in proptest::option::of(prop_oneof![Just("linear_cent"), Just("deci_cent"), Just("tapered_deci_cent")]),
        env in envelope(),
    ) {
        let kinds = [
            LifecycleKind::Created, LifecycleKind::Activated, LifecycleKind::Deactivated,
            LifecycleKind::CloseDateUpdated, LifecycleKind::Determined, LifecycleKind::Settled,
            LifecycleKind::PriceLevelStructureUpdated, LifecycleKind::MetadataUpdated,
            LifecycleKind::Other("something_new"),
        ];
        let mut m = MarketLifecycle {
            market: &market, kind: kinds[kind], multivariate, open_ts_s: times[0],
            close_ts_s: times[1], determination_ts_s: times[2], settled_ts_s: times[3], result,
            settlement_value_micros: value, price_level_structure: structure, payload: String::new(),
        };
        m.payload = market_lifecycle_payload(&m);
        prop_assert_eq!(round_trip(&Event::MarketLifecycle(m), &env)?, 3);
        let e = Event::EventLifecycle(EventLifecycle {
            event_ticker: &market,
            payload: format!(r#"{{"event_ticker":"{market}","exchange_index":0,"title":"t \"q\""}}"#),
        });
        prop_assert_eq!(round_trip(&e, &env)?, 3);
    }

    #[test]
    fn decimals_round_trip(value in -1_000_000_000_000_i64..1_000_000_000_000, scale in 0_u32..=6) {
        let mut text = String::new();
        write_scaled(&mut text, value, scale);
        prop_assert_eq!(parse_scaled(text.as_bytes(), scale), Ok(value), "{}", text);
        // Trailing zeros beyond the scale keep the value exact.
        text.push_str(if scale == 0 { ".000" } else { "000" });
        prop_assert_eq!(parse_scaled(text.as_bytes(), scale), Ok(value), "{}", text);
    }

    #[test]
    fn timestamps_agree_with_chrono(ts in TS_MIN_NS..TS_MAX_NS, digits in 0_u32..=9) {
        let mut text = String::new();
        write_rfc3339(&mut text, ts, digits);
        let truncated = ts - ts.rem_euclid(10_i64.pow(9 - digits));
        prop_assert_eq!(parse_rfc3339(text.as_bytes()), Ok((truncated, digits)), "{}", text);
        let chrono_ns = chrono::DateTime::parse_from_rfc3339(&text)
            .map_err(|e| TestCaseError::fail(format!("chrono refused {text}: {e}")))?
            .timestamp_nanos_opt();
        prop_assert_eq!(chrono_ns, Some(truncated), "{}", text);
    }
}
