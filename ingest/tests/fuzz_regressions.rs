//! Inputs the fuzzer once crashed on (`ingest/test_data/fuzz_regressions/`), kept as tests: each
//! must parse or fail with a typed error, and a parsed event must re-encode and parse back to
//! itself. The file name says what each input caught.

use kdp_ingest::wire::{FrameParser, Message, ParseError, Shape, encode_event};

fn regressions() -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/test_data/fuzz_regressions", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|entry| {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let bytes = bytes.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(bytes);
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_regression_input_is_handled() {
    let files = regressions();
    assert!(files.len() >= 2, "regression inputs missing: {files:?}");
    let mut parser = FrameParser::new();
    for (name, bytes) in files {
        let parsed = parser.parse(&bytes).map(|f| f.message);
        if let Ok(Message::Event(event)) = parsed {
            let text = encode_event(&event, &Default::default(), Shape::Current)
                .unwrap_or_else(|| panic!("{name}: current shape must carry {event:?}"));
            let mut again = FrameParser::new();
            let back = again.parse(text.as_bytes()).map(|f| f.message);
            assert_eq!(back, Ok(Message::Event(event)), "{name}: re-encoded as {text}");
        }
    }
}

#[test]
fn out_of_range_years_are_bad_timestamps() {
    let mut parser = FrameParser::new();
    let frame = br#"{"type":"ticker","msg":{"market_ticker":"A","time":"1011-11-22T20:44:01Z"}}"#;
    assert_eq!(parser.parse(frame).err(), Some(ParseError::BadTimestamp { field: "time" }));
}

#[test]
fn tickers_with_quotes_round_trip() {
    let mut parser = FrameParser::new();
    let frame = br#"{"type":"orderbook_delta","msg":{"market_ticker":"A\"B\\C","price_dollars":"0.5","delta_fp":"1","side":"yes","ts_ms":1}}"#;
    let Ok(Message::Event(event)) = parser.parse(frame).map(|f| f.message) else {
        panic!("frame must parse");
    };
    let text = encode_event(&event, &Default::default(), Shape::Current).unwrap_or_default();
    assert!(text.contains(r#""market_ticker":"A\"B\\C""#), "{text}");
    let mut again = FrameParser::new();
    assert_eq!(again.parse(text.as_bytes()).map(|f| f.message), Ok(Message::Event(event)));
}
