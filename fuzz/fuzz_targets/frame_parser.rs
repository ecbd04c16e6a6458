//! Fuzz target: arbitrary bytes into `kdp_ingest::wire::FrameParser::parse`.
//!
//! One parser is reused across inputs, as a shard reuses its own, and every result is compared
//! with a fresh parser's, so state left behind by one frame cannot leak into the next. When a
//! frame parses, the invariants every normalized event promises are checked, and market-data
//! events are re-encoded with `encode_event(.., Shape::Current)` and parsed back to themselves.

#![no_main]

use std::cell::RefCell;

use kdp_engine::event::{DOLLAR_MICROS, Event, Level};
use kdp_ingest::wire::{Frame, FrameParser, Message, ParseError, Shape, encode_event};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// The long-lived parser under test.
    static PARSER: RefCell<FrameParser> = RefCell::new(FrameParser::new());
    /// Reads re-encoded frames back.
    static ROUND_TRIP: RefCell<FrameParser> = RefCell::new(FrameParser::new());
}

fuzz_target!(|data: &[u8]| {
    PARSER.with_borrow_mut(|parser| {
        let mut fresh = FrameParser::new();
        let reused = parser.parse(data);
        assert_eq!(reused, fresh.parse(data), "a reused parser disagrees with a fresh one");
        match reused {
            Ok(frame) => check_frame(&frame),
            Err(e) => check_error(&e),
        }
    });
});

fn check_error(e: &ParseError) {
    assert!(!e.to_string().is_empty());
}

fn check_frame(frame: &Frame<'_>) {
    let Message::Event(event) = &frame.message else { return };
    check_event(event);
    if let Some(text) = encode_event(event, &frame.envelope, Shape::Current) {
        ROUND_TRIP.with_borrow_mut(|p| match p.parse(text.as_bytes()) {
            Ok(back) => assert_eq!(&back, frame, "re-encoded as {text}"),
            Err(e) => panic!("re-encoded frame {text} does not parse: {e}"),
        });
    }
}

/// A price strictly inside ($0, $1): book levels, deltas, trades.
fn book_price(micros: u32) {
    assert!(micros > 0 && micros < DOLLAR_MICROS, "book price {micros} outside (0, 1)");
}

/// A price within [$0, $1]: ticker quotes, settlement values.
fn closed_price(micros: u32) {
    assert!(micros <= DOLLAR_MICROS, "price {micros} above $1");
}

fn levels(side: &[Level]) {
    for l in side {
        book_price(l.price_micros);
        assert!(l.size_centi >= 0, "negative resting size {}", l.size_centi);
    }
}

fn check_event(event: &Event<'_>) {
    match event {
        Event::Delta(d) => book_price(d.price_micros),
        Event::Snapshot(s) => {
            levels(s.yes);
            levels(s.no);
        }
        Event::Trade(t) => {
            book_price(t.yes_price_micros);
            book_price(t.no_price_micros);
            assert!(t.count_centi > 0, "trade of {} hundredths", t.count_centi);
        }
        Event::Ticker(t) => {
            for p in [t.price_micros, t.yes_bid_micros, t.yes_ask_micros].into_iter().flatten() {
                closed_price(p);
            }
        }
        Event::MarketLifecycle(m) => {
            if let Some(v) = m.settlement_value_micros {
                closed_price(v);
            }
            json_object(&m.payload);
        }
        Event::EventLifecycle(e) => json_object(&e.payload),
    }
}

/// A kept payload must be a JSON object that any JSON reader accepts.
fn json_object(payload: &str) {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(v) => assert!(v.is_object(), "payload {payload} is not an object"),
        Err(e) => panic!("payload {payload} is not JSON: {e}"),
    }
}
