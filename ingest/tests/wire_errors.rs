//! Malformed input: every error kind is reported as a typed error naming the field, never a
//! panic, and the parser keeps working on the next frame.

use kdp_ingest::wire::{FRAME_BYTES_MAX, FrameParser, Message, ParseError};

fn parse_err(frame: &str) -> ParseError {
    let mut parser = FrameParser::new();
    let err = match parser.parse(frame.as_bytes()) {
        Ok(f) => panic!("expected an error for {frame}, got {f:?}"),
        Err(e) => e,
    };
    // The same parser reads a good frame right after the bad one.
    let good = r#"{"type":"unsubscribed","id":2,"sid":1,"seq":7}"#;
    assert_eq!(parser.parse(good.as_bytes()).map(|f| f.message), Ok(Message::Unsubscribed));
    err
}

fn delta_with(msg_fields: &str) -> String {
    format!(
        r#"{{"type":"orderbook_delta","sid":2,"seq":5,"msg":{{"market_ticker":"KXA-1",{msg_fields}}}}}"#
    )
}

const GOOD_TAIL: &str = r#""side":"yes","ts":"2026-09-25T19:16:20.921884Z""#;

#[test]
fn bad_json() {
    for frame in [
        "",
        "{",
        r#"{"type":"orderbook_delta","sid":2,"seq":5,"msg":{"#,
        r#"{"type":"trade" "sid":1}"#,
        "\u{0}\u{1}garbage",
        r#"{"type":"ticker","msg":{"market_ticker":"A"}}}"#,
    ] {
        assert!(matches!(parse_err(frame), ParseError::Json { .. }), "{frame:?}");
    }
}

#[test]
fn too_large() {
    let frame = vec![b' '; FRAME_BYTES_MAX + 1];
    let mut parser = FrameParser::new();
    assert_eq!(parser.parse(&frame).err(), Some(ParseError::TooLarge { len: FRAME_BYTES_MAX + 1 }));
}

#[test]
fn not_an_object() {
    assert_eq!(parse_err("[1,2,3]"), ParseError::NotAnObject { field: "frame" });
    assert_eq!(parse_err(r#""orderbook_delta""#), ParseError::NotAnObject { field: "frame" });
    assert_eq!(
        parse_err(r#"{"type":"orderbook_delta","sid":1,"seq":1,"msg":[1]}"#),
        ParseError::NotAnObject { field: "msg" }
    );
}

#[test]
fn missing_fields() {
    assert_eq!(
        parse_err(r#"{"sid":1,"seq":1,"msg":{}}"#),
        ParseError::MissingField { message: "server", field: "type" }
    );
    assert_eq!(
        parse_err(r#"{"type":"orderbook_delta","sid":1,"seq":1}"#),
        ParseError::MissingField { message: "orderbook_delta", field: "msg" }
    );
    assert_eq!(
        parse_err(&delta_with(&format!(r#""delta_fp":"1.00",{GOOD_TAIL}"#))),
        ParseError::MissingField { message: "orderbook_delta", field: "price_dollars" }
    );
    assert_eq!(
        parse_err(&delta_with(&format!(r#""price_dollars":"0.5000",{GOOD_TAIL}"#))),
        ParseError::MissingField { message: "orderbook_delta", field: "delta_fp" }
    );
    assert_eq!(
        parse_err(&delta_with(r#""price_dollars":"0.5000","delta_fp":"1.00","side":"yes""#)),
        ParseError::MissingField { message: "orderbook_delta", field: "ts|ts_ms" }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"trade","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_price_dollars":"0.3600","count_fp":"1.00","ts_ms":1}}"#
        ),
        ParseError::MissingField { message: "trade", field: "trade_id" }
    );
    assert_eq!(
        parse_err(r#"{"type":"ticker","sid":1,"msg":{"price_dollars":"0.3600","ts":1}}"#),
        ParseError::MissingField { message: "ticker", field: "market_ticker" }
    );
    assert_eq!(
        parse_err(r#"{"type":"market_lifecycle_v2","sid":1,"seq":1,"msg":{"market_ticker":"A"}}"#),
        ParseError::MissingField { message: "market_lifecycle_v2", field: "event_type" }
    );
    assert_eq!(
        parse_err(r#"{"type":"error","id":1,"msg":{"msg":"no code"}}"#),
        ParseError::MissingField { message: "error", field: "code" }
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        parse_err(r#"{"type":"orderbook_delta","sid":"2","seq":5,"msg":{}}"#),
        ParseError::WrongType { field: "sid", expected: "a non-negative integer" }
    );
    assert_eq!(
        parse_err(r#"{"type":"orderbook_delta","sid":2,"seq":-5,"msg":{}}"#),
        ParseError::WrongType { field: "seq", expected: "a non-negative integer" }
    );
    assert_eq!(
        parse_err(r#"{"type":7}"#),
        ParseError::WrongType { field: "type", expected: "a string" }
    );
    assert_eq!(
        parse_err(&delta_with(&format!(
            r#""price_dollars":["0.5"],"delta_fp":"1.00",{GOOD_TAIL}"#
        ))),
        ParseError::WrongType { field: "price_dollars", expected: "a decimal string" }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_dollars_fp":[["0.5000"]]}}"#
        ),
        ParseError::WrongType { field: "yes_dollars_fp", expected: "[price, size] pairs" }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","no_dollars_fp":"0.5"}}"#
        ),
        ParseError::WrongType { field: "no_dollars_fp", expected: "an array" }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"x","market_ticker":"A","yes_price_dollars":"0.3600","count_fp":"1.00","is_block_trade":"no","ts_ms":1}}"#
        ),
        ParseError::WrongType { field: "is_block_trade", expected: "a boolean" }
    );
}

#[test]
fn bad_decimals() {
    for bad in ["", "abc", "0.4x", "1e-2", ".5", "0,42", "0.42 "] {
        assert_eq!(
            parse_err(&delta_with(&format!(
                r#""price_dollars":"{bad}","delta_fp":"1.00",{GOOD_TAIL}"#
            ))),
            ParseError::BadDecimal { field: "price_dollars" },
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_err(&delta_with(&format!(
            r#""price_dollars":"0.5000","delta_fp":"--1",{GOOD_TAIL}"#
        ))),
        ParseError::BadDecimal { field: "delta_fp" }
    );
}

#[test]
fn too_much_precision() {
    assert_eq!(
        parse_err(&delta_with(&format!(
            r#""price_dollars":"0.4200001","delta_fp":"1.00",{GOOD_TAIL}"#
        ))),
        ParseError::TooMuchPrecision { field: "price_dollars", max_decimals: 6 }
    );
    assert_eq!(
        parse_err(&delta_with(&format!(
            r#""price_dollars":"0.4200","delta_fp":"1.005",{GOOD_TAIL}"#
        ))),
        ParseError::TooMuchPrecision { field: "delta_fp", max_decimals: 2 }
    );
}

#[test]
fn out_of_range() {
    for (price, micros) in
        [("0.0000", 0), ("1.0000", 1_000_000), ("1.5", 1_500_000), ("-0.42", -420_000)]
    {
        assert_eq!(
            parse_err(&delta_with(&format!(
                r#""price_dollars":"{price}","delta_fp":"1.00",{GOOD_TAIL}"#
            ))),
            ParseError::OutOfRange { field: "price_dollars", value: micros },
            "{price}"
        );
    }
    assert_eq!(
        parse_err(&delta_with(&format!(r#""price":100,"delta":1,{GOOD_TAIL}"#))),
        ParseError::OutOfRange { field: "price", value: 1_000_000 }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_dollars_fp":[["0.5000","-1.00"]]}}"#
        ),
        ParseError::OutOfRange { field: "yes_dollars_fp", value: -100 }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"x","market_ticker":"A","yes_price_dollars":"0.3600","count_fp":"0.00","ts_ms":1}}"#
        ),
        ParseError::OutOfRange { field: "count_fp", value: 0 }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"ticker","sid":1,"msg":{"market_ticker":"A","yes_ask_dollars":"1.0100","ts":1}}"#
        ),
        ParseError::OutOfRange { field: "yes_ask_dollars", value: 1_010_000 }
    );
}

#[test]
fn bad_timestamps() {
    for ts in [
        r#""2026-09-25 19:16:20Z""#,
        r#""yesterday""#,
        r#""2026-02-30T00:00:00Z""#,
        r#""2026-09-25T19:16:20.1234567891Z""#,
    ] {
        assert_eq!(
            parse_err(&delta_with(&format!(
                r#""price_dollars":"0.5000","delta_fp":"1.00","side":"yes","ts":{ts}"#
            ))),
            ParseError::BadTimestamp { field: "ts" },
            "{ts}"
        );
    }
    assert_eq!(
        parse_err(&delta_with(
            r#""price_dollars":"0.5000","delta_fp":"1.00","side":"yes","ts_ms":9223372036854775807"#
        )),
        ParseError::BadTimestamp { field: "ts_ms" }
    );
}

#[test]
fn bad_sides() {
    assert_eq!(
        parse_err(&delta_with(
            r#""price_dollars":"0.5000","delta_fp":"1.00","side":"YES","ts_ms":1"#
        )),
        ParseError::BadSide { field: "side" }
    );
    assert_eq!(
        parse_err(
            r#"{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"x","market_ticker":"A","yes_price_dollars":"0.3600","count_fp":"1.00","taker_book_side":"buy","ts_ms":1}}"#
        ),
        ParseError::BadSide { field: "taker_book_side" }
    );
}

#[test]
fn floats_are_refused_not_rounded() {
    assert_eq!(
        parse_err(&delta_with(&format!(r#""price_dollars":0.42,"delta_fp":"1.00",{GOOD_TAIL}"#))),
        ParseError::InexactNumber { field: "price_dollars" }
    );
    assert_eq!(
        parse_err(&delta_with(&format!(
            r#""price_dollars":"0.4200","delta_fp":-30.5,{GOOD_TAIL}"#
        ))),
        ParseError::InexactNumber { field: "delta_fp" }
    );
}

#[test]
fn json_integers_are_read_exactly_in_the_fields_unit() {
    let mut parser = FrameParser::new();
    let frame = delta_with(&format!(r#""price_dollars":"0.4200","delta_fp":-30,{GOOD_TAIL}"#));
    let Ok(Message::Event(kdp_engine::event::Event::Delta(d))) =
        parser.parse(frame.as_bytes()).map(|f| f.message)
    else {
        panic!("integer delta_fp must parse");
    };
    assert_eq!(d.delta_centi, -3_000);
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(
        parse_err(&delta_with(&format!(
            r#""price_dollars":"0.4200001","delta_fp":"1.00",{GOOD_TAIL}"#
        )))
        .to_string(),
        "`price_dollars` has nonzero digits beyond 6 decimals; refusing to round"
    );
    assert_eq!(
        parse_err(&delta_with(r#""price_dollars":"0.5000","delta_fp":"1.00","side":"yes""#))
            .to_string(),
        "orderbook_delta frame has no `ts|ts_ms`"
    );
}
