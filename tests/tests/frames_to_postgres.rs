//! Frames → normalized events → binary COPY into PostgreSQL → read back, exactly.
//!
//! The path a gatherer's writer will take, end to end with the real parser and a real server
//! (embedded, or `KDP_DATABASE_URL`): generated `orderbook_delta` frames, including genuinely
//! identical deltas, survive the trip with every value exact and none collapsed.

use kdp_engine::event::{BookDelta, Event, Side};
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::wire::{Envelope, FrameParser, Message, Shape, encode_event};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

const MARKETS: usize = 50;
const FRAMES: usize = 5_000;

/// A deterministic stream of deltas; every 10th repeats its predecessor exactly (same market,
/// time, side, price and change), as the exchange may legitimately send.
fn deltas(tickers: &[String]) -> Vec<BookDelta<'_>> {
    let mut out: Vec<BookDelta<'_>> = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES {
        if i % 10 == 9 {
            let last = out[i - 1];
            out.push(last);
            continue;
        }
        let n = i64::try_from(i).unwrap_or(i64::MAX);
        out.push(BookDelta {
            market: &tickers[i % MARKETS],
            side: if i % 3 == 0 { Side::No } else { Side::Yes },
            price_micros: u32::try_from(10_000 * (1 + i % 99)).unwrap_or(10_000),
            delta_centi: if i % 2 == 0 { n * 7 + 1 } else { -(n * 3 + 25) },
            ts_exch_ns: 1_790_363_780_000_000_000 + n * 1_000,
            client_order_id: None,
        });
    }
    out
}

#[test]
fn parsed_deltas_copy_into_postgres_and_read_back_exactly() {
    let tickers: Vec<String> = (0..MARKETS).map(|i| format!("KXTEST-26NOV29-M{i:03}")).collect();
    let sent = deltas(&tickers);

    // Encode to frames as the exchange would send them, then parse with the real parser.
    let mut parser = FrameParser::new();
    let mut rows: Vec<(i64, String, i64, bool, i32, i64)> = Vec::with_capacity(FRAMES);
    for (seq, delta) in sent.iter().enumerate() {
        let seq = u64::try_from(seq + 1).unwrap_or(u64::MAX);
        let env = Envelope { sid: Some(1), seq: Some(seq), ..Envelope::default() };
        let frame = encode_event(&Event::Delta(*delta), &env, Shape::Current)
            .unwrap_or_else(|| panic!("current shape carries {delta:?}"));
        let parsed = parser.parse(frame.as_bytes()).unwrap_or_else(|e| panic!("{e}: {frame}"));
        let Message::Event(Event::Delta(d)) = parsed.message else {
            panic!("expected a delta from {frame}");
        };
        assert_eq!(&d, delta);
        rows.push((
            i64::try_from(seq).unwrap_or(i64::MAX),
            d.market.to_string(),
            d.ts_exch_ns,
            d.side == Side::Yes,
            i32::try_from(d.price_micros).unwrap_or(i32::MAX),
            d.delta_centi,
        ));
    }

    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let mut client = db.connect().unwrap_or_else(|e| panic!("{e}"));
    client
        .batch_execute(
            "CREATE TABLE delta (gseq bigint PRIMARY KEY, market text NOT NULL, \
             ts_exch_ns bigint NOT NULL, side_yes boolean NOT NULL, price_micros integer NOT NULL, \
             delta_centi bigint NOT NULL)",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tx = client.transaction().unwrap_or_else(|e| panic!("{e}"));
    let sink =
        tx.copy_in("COPY delta FROM STDIN (FORMAT binary)").unwrap_or_else(|e| panic!("{e}"));
    let mut writer = BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::TEXT, Type::INT8, Type::BOOL, Type::INT4, Type::INT8],
    );
    for (gseq, market, ts, side_yes, price, delta) in &rows {
        writer.write(&[gseq, market, ts, side_yes, price, delta]).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(writer.finish().unwrap_or_else(|e| panic!("{e}")), FRAMES as u64);
    tx.commit().unwrap_or_else(|e| panic!("{e}"));

    let back: Vec<(i64, String, i64, bool, i32, i64)> = client
        .query("SELECT gseq, market, ts_exch_ns, side_yes, price_micros, delta_centi FROM delta ORDER BY gseq", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(back, rows);

    // Identical deltas are distinct rows, never collapsed: 500 exact repeats.
    let repeats: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT market, ts_exch_ns, side_yes, price_micros, delta_centi, \
             count(*) AS n FROM delta GROUP BY 1, 2, 3, 4, 5) g WHERE n = 2",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(repeats, (FRAMES / 10) as i64);
}
