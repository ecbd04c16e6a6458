//! Table tests: every example frame of the protocol note (current and legacy shapes) parses to
//! exact normalized values. The frames live in `ingest/test_data/frames/`, one file per case.

use kdp_engine::event::{
    BookDelta, BookSide, BookSnapshot, Event, EventLifecycle, Level, LifecycleKind,
    MarketLifecycle, Side, Ticker, Trade,
};
use kdp_ingest::wire::{Envelope, Frame, FrameParser, Message, OkReply, SubscriptionInfo};

fn frame_text(name: &str) -> Vec<u8> {
    let path = format!("{}/test_data/frames/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    // One frame per file; a trailing newline is not part of the frame.
    text.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(text)
}

fn check(name: &str, expected: Frame<'_>) {
    let bytes = frame_text(name);
    let mut parser = FrameParser::new();
    let got = parser.parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got, expected, "{name}");
    // The parser is reused across frames: a second parse of the same bytes is identical.
    let again = parser.parse(&bytes).unwrap_or_else(|e| panic!("{name} (again): {e}"));
    assert_eq!(again, expected, "{name} (again)");
}

fn env(id: Option<u64>, sid: Option<u64>, seq: Option<u64>) -> Envelope {
    Envelope { id, sid, seq, sending_ts_ms: None }
}

fn event(envelope: Envelope, event: Event<'_>) -> Frame<'_> {
    Frame { envelope, message: Message::Event(event) }
}

const fn lvl(price_micros: u32, size_centi: i64) -> Level {
    Level { price_micros, size_centi }
}

#[test]
fn snapshot_current() {
    let yes = [lvl(80_000, 30_000), lvl(220_000, 33_300)];
    let no = [lvl(540_000, 2_000), lvl(560_000, 14_600)];
    check(
        "snapshot_current",
        event(
            env(None, Some(2), Some(1)),
            Event::Snapshot(BookSnapshot { market: "FED-23DEC-T3.00", yes: &yes, no: &no }),
        ),
    );
}

#[test]
fn snapshot_one_side_absent() {
    let no = [lvl(560_000, 14_677)];
    check(
        "snapshot_no_yes_side",
        event(
            env(None, Some(2), Some(7)),
            Event::Snapshot(BookSnapshot { market: "FED-23DEC-T3.00", yes: &[], no: &no }),
        ),
    );
}

#[test]
fn snapshot_legacy_cents() {
    let yes = [lvl(80_000, 30_000), lvl(220_000, 33_300)];
    let no = [lvl(540_000, 2_000)];
    check(
        "snapshot_legacy_cents",
        event(
            env(None, Some(1), Some(1)),
            Event::Snapshot(BookSnapshot {
                market: "KXMLBGAME-25AUG12SDSF-SD",
                yes: &yes,
                no: &no,
            }),
        ),
    );
}

#[test]
fn snapshot_legacy_dollars_prefers_the_most_precise_field() {
    // The frame carries cents, `*_dollars` with integer counts, and `*_dollars_fp`; the `_fp`
    // levels (fractional 333.25) must win.
    let yes = [lvl(80_000, 30_000), lvl(225_000, 33_325)];
    let no = [lvl(540_000, 2_000)];
    check(
        "snapshot_legacy_dollars",
        event(
            env(None, Some(1), Some(1)),
            Event::Snapshot(BookSnapshot {
                market: "KXMLBGAME-25AUG12SDSF-SD",
                yes: &yes,
                no: &no,
            }),
        ),
    );
}

#[test]
fn snapshot_legacy_dollars_integer_counts() {
    let yes = [lvl(80_000, 30_000)];
    let no = [lvl(960_000, 100)];
    check(
        "snapshot_legacy_dollars_int_counts",
        event(
            env(None, Some(4), Some(2)),
            Event::Snapshot(BookSnapshot { market: "KXA-1", yes: &yes, no: &no }),
        ),
    );
}

#[test]
fn delta_current() {
    check(
        "delta_current",
        event(
            env(None, Some(2), Some(501)),
            Event::Delta(BookDelta {
                market: "KXBTCD-26SEP2517-T114999.99",
                side: Side::Yes,
                price_micros: 420_000,
                delta_centi: -3_000,
                ts_exch_ns: 1_790_363_780_921_884_000,
                client_order_id: None,
            }),
        ),
    );
}

#[test]
fn delta_legacy_2025_capture() {
    check(
        "delta_legacy",
        event(
            env(None, Some(1), Some(3)),
            Event::Delta(BookDelta {
                market: "KXMLBGAME-25AUG12SDSF-SD",
                side: Side::No,
                price_micros: 510_000,
                delta_centi: -100,
                ts_exch_ns: 1_755_032_432_539_836_022,
                client_order_id: None,
            }),
        ),
    );
}

#[test]
fn delta_ts_ms_only_with_envelope_sending_time_and_own_order() {
    check(
        "delta_ts_ms_only",
        Frame {
            envelope: Envelope {
                id: None,
                sid: Some(3),
                seq: Some(9),
                sending_ts_ms: Some(1_790_363_780_925),
            },
            message: Message::Event(Event::Delta(BookDelta {
                market: "KXA-1",
                side: Side::No,
                price_micros: 1_500,
                delta_centi: 7_477,
                ts_exch_ns: 1_790_363_780_921_000_000,
                client_order_id: Some("my-order-1"),
            })),
        },
    );
}

#[test]
fn delta_integer_second_ts() {
    check(
        "delta_ts_seconds",
        event(
            env(None, Some(1), Some(4)),
            Event::Delta(BookDelta {
                market: "KXA-1",
                side: Side::Yes,
                price_micros: 990_000,
                delta_centi: 200,
                ts_exch_ns: 1_669_149_841_000_000_000,
                client_order_id: None,
            }),
        ),
    );
}

#[test]
fn trade_current() {
    check(
        "trade_current",
        event(
            env(None, Some(11), Some(2)),
            Event::Trade(Trade {
                trade_id: "d91bc706-ee49-470d-82d8-11418bda6fed",
                market: "HIGHNY-22DEC23-B53.5",
                yes_price_micros: 360_000,
                no_price_micros: 640_000,
                count_centi: 13_600,
                taker_side: Some(Side::No),
                taker_book_side: Some(BookSide::Ask),
                is_block_trade: Some(false),
                ts_exch_ns: 1_669_149_841_000_000_000,
            }),
        ),
    );
}

#[test]
fn trade_legacy() {
    check(
        "trade_legacy",
        event(
            env(None, Some(11), None),
            Event::Trade(Trade {
                trade_id: "d91bc706-ee49-470d-82d8-11418bda6fed",
                market: "HIGHNY-22DEC23-B53.5",
                yes_price_micros: 360_000,
                no_price_micros: 640_000,
                count_centi: 13_600,
                taker_side: Some(Side::No),
                taker_book_side: None,
                is_block_trade: None,
                ts_exch_ns: 1_669_149_841_000_000_000,
            }),
        ),
    );
}

#[test]
fn ticker_current() {
    check(
        "ticker_current",
        event(
            env(None, Some(11), None),
            Event::Ticker(Ticker {
                market: "FED-23DEC-T3.00",
                price_micros: Some(480_000),
                yes_bid_micros: Some(450_000),
                yes_ask_micros: Some(530_000),
                yes_bid_size_centi: Some(30_000),
                yes_ask_size_centi: Some(15_000),
                last_trade_size_centi: Some(2_500),
                volume_centi: Some(3_389_600),
                open_interest_centi: Some(2_042_200),
                dollar_volume: Some(16_948),
                dollar_open_interest: Some(10_211),
                clock: None,
                ts_exch_ns: 1_669_149_841_000_000_000,
            }),
        ),
    );
}

#[test]
fn ticker_high_precision_time_wins_over_ts_ms() {
    check(
        "ticker_time_us",
        event(
            env(None, Some(5), None),
            Event::Ticker(Ticker {
                market: "KXA-1",
                price_micros: None,
                yes_bid_micros: Some(0),
                yes_ask_micros: Some(1_000_000),
                volume_centi: Some(0),
                ts_exch_ns: 1_790_363_780_921_884_000,
                ..Ticker::default()
            }),
        ),
    );
}

#[test]
fn ticker_legacy_with_clock() {
    check(
        "ticker_legacy",
        event(
            env(None, Some(11), None),
            Event::Ticker(Ticker {
                market: "FED-23DEC-T3.00",
                price_micros: Some(480_000),
                yes_bid_micros: Some(450_000),
                yes_ask_micros: Some(530_000),
                volume_centi: Some(3_389_600),
                open_interest_centi: Some(2_042_200),
                clock: Some(6_598_272_994),
                ts_exch_ns: 1_669_149_841_000_000_000,
                ..Ticker::default()
            }),
        ),
    );
}

#[test]
fn market_lifecycle_created() {
    let payload = String::from_utf8(frame_text("lifecycle_created_msg")).unwrap_or_default();
    check(
        "lifecycle_created",
        event(
            env(None, Some(13), Some(3)),
            Event::MarketLifecycle(MarketLifecycle {
                market: "INXD-23SEP14-B4487",
                kind: LifecycleKind::Created,
                multivariate: false,
                open_ts_s: Some(1_694_635_200),
                close_ts_s: Some(1_694_721_600),
                determination_ts_s: None,
                settled_ts_s: None,
                result: None,
                settlement_value_micros: None,
                price_level_structure: Some("linear_cent"),
                payload,
            }),
        ),
    );
}

#[test]
fn market_lifecycle_determined() {
    check(
        "lifecycle_determined",
        event(
            env(None, Some(13), Some(9)),
            Event::MarketLifecycle(MarketLifecycle {
                market: "INXD-23SEP14-B4487",
                kind: LifecycleKind::Determined,
                multivariate: false,
                open_ts_s: None,
                close_ts_s: None,
                determination_ts_s: Some(1_694_722_000),
                settled_ts_s: None,
                result: Some("yes"),
                settlement_value_micros: Some(1_000_000),
                price_level_structure: None,
                payload: r#"{"market_ticker":"INXD-23SEP14-B4487","event_type":"determined","result":"yes","determination_ts":1694722000,"settlement_value":"1.0000"}"#.to_string(),
            }),
        ),
    );
}

#[test]
fn market_lifecycle_unknown_kind_is_kept() {
    let bytes = frame_text("lifecycle_unknown_kind");
    let mut parser = FrameParser::new();
    let frame = parser.parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    let Message::Event(Event::MarketLifecycle(m)) = frame.message else {
        panic!("expected a lifecycle event, got {:?}", frame.message)
    };
    assert_eq!(m.kind, LifecycleKind::Other("fractional_trading_updated"));
    assert!(m.multivariate);
    // Escapes inside strings survive in the payload.
    assert_eq!(
        m.payload,
        r#"{"market_ticker":"KXMVE-1","event_type":"fractional_trading_updated","note":"a \"quoted\"\nline","floor_strike":114999.99}"#
    );
}

#[test]
fn event_lifecycle() {
    check(
        "event_lifecycle",
        event(
            env(None, Some(13), Some(10)),
            Event::EventLifecycle(EventLifecycle {
                event_ticker: "KXQUICKSETTLE-26JAN25H2150",
                payload: r#"{"event_ticker":"KXQUICKSETTLE-26JAN25H2150","exchange_index":0,"title":"...","subtitle":"Jan 25 at 21:50","collateral_return_type":"MECNET","series_ticker":"KXQUICKSETTLE"}"#.to_string(),
            }),
        ),
    );
}

#[test]
fn unknown_type_is_reported_not_refused() {
    check(
        "event_fee_update",
        Frame {
            envelope: env(None, Some(13), Some(11)),
            message: Message::Unknown { type_name: "event_fee_update" },
        },
    );
}

#[test]
fn subscribed_replies() {
    check(
        "subscribed",
        Frame {
            envelope: env(Some(1), None, None),
            message: Message::Subscribed { channel: "orderbook_delta", sid: 1 },
        },
    );
}

#[test]
fn ok_with_ticker_list() {
    check(
        "ok_update",
        Frame {
            envelope: env(Some(3), Some(1), Some(222)),
            message: Message::Ok(OkReply {
                market_tickers: Some(vec!["KXA-1", "KXB-1", "KXC-1"]),
                subscriptions: None,
            }),
        },
    );
}

#[test]
fn ok_with_top_level_tickers_and_bare_ok() {
    check(
        "ok_top_level_tickers",
        Frame {
            envelope: env(Some(4), Some(1), Some(223)),
            message: Message::Ok(OkReply {
                market_tickers: Some(vec!["KXA-1"]),
                subscriptions: None,
            }),
        },
    );
    check(
        "ok_bare",
        Frame { envelope: env(Some(5), Some(1), None), message: Message::Ok(OkReply::default()) },
    );
}

#[test]
fn list_subscriptions_reply() {
    check(
        "ok_list_subscriptions",
        Frame {
            envelope: env(Some(6), None, None),
            message: Message::Ok(OkReply {
                market_tickers: None,
                subscriptions: Some(vec![
                    SubscriptionInfo { channel: "orderbook_delta", sid: 1 },
                    SubscriptionInfo { channel: "trade", sid: 2 },
                ]),
            }),
        },
    );
}

#[test]
fn unsubscribed_reply() {
    check(
        "unsubscribed",
        Frame { envelope: env(Some(2), Some(1), Some(7)), message: Message::Unsubscribed },
    );
}

#[test]
fn error_replies() {
    check(
        "error",
        Frame {
            envelope: env(Some(123), None, None),
            message: Message::Error {
                code: 7,
                message: "Unknown subscription ID",
                market_ticker: None,
            },
        },
    );
    check(
        "error_slow_reader",
        Frame {
            envelope: env(None, Some(2), Some(88)),
            message: Message::Error {
                code: 25,
                message: "Subscription buffer overflow",
                market_ticker: Some("KXA-1"),
            },
        },
    );
}
