//! The simulator's ground truth loads into PostgreSQL: a seeded run is written in the binary
//! truth format, read back, rendered as COPY text rows and COPYed into a real server, where the
//! rows match the events the engine produced, exactly.

use std::collections::BTreeMap;

use kdp_engine::pg::testing::TestDatabase;
use kdp_sim::market::model::{ExchEvent, ExchEventKind};
use kdp_sim::market::truth::{
    EXCH_EVENT_COLUMNS, TruthHeader, TruthReader, TruthRecord, TruthWriter, to_copy_text,
};
use kdp_sim::market::{Exchange, MarketConfig};

const SEED: u64 = 0x7472_7574_6870_6721;
const EVENTS: usize = 20_000;

/// Column types of `EXCH_EVENT_COLUMNS`, in order.
fn column_type(name: &str) -> &'static str {
    match name {
        "kind" | "market_ticker" | "event_ticker" | "side" | "taker_side" | "taker_book_side"
        | "lifecycle_kind" | "result" => "text",
        "trade_id" => "uuid",
        "is_deactivated" => "boolean",
        _ => "bigint",
    }
}

#[test]
fn truth_rows_copy_into_postgres_exactly() {
    eprintln!("seed {SEED:#x}");
    let config = MarketConfig { seed: SEED, markets: 500, ..MarketConfig::default() };
    let mut exchange = Exchange::new(config.clone());
    let mut writer = TruthWriter::new(Vec::new(), &TruthHeader::for_config(&config))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut produced: Vec<ExchEvent> = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        let event = exchange.next_event();
        writer.record(&exchange, &event).unwrap_or_else(|e| panic!("{e}"));
        produced.push(event);
    }
    let bytes = writer.finish().unwrap_or_else(|e| panic!("{e}"));

    // Read the file back and render every event as a COPY text row.
    let mut reader = TruthReader::new(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    let mut rows = String::new();
    let mut read = 0_usize;
    while let Some(record) = reader.next() {
        if let TruthRecord::Exch(event) = record.unwrap_or_else(|e| panic!("{e}")) {
            rows.push_str(&to_copy_text(&event, reader.catalog()));
            read += 1;
        }
    }
    assert_eq!(read, EVENTS);

    let db = TestDatabase::new().unwrap_or_else(|e| panic!("{e}"));
    let mut client = db.connect().unwrap_or_else(|e| panic!("{e}"));
    let columns: Vec<String> =
        EXCH_EVENT_COLUMNS.iter().map(|c| format!("{c} {}", column_type(c))).collect();
    client
        .batch_execute(&format!("CREATE TABLE exch_event ({})", columns.join(", ")))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut sink = client
        .copy_in(&format!("COPY exch_event ({}) FROM STDIN", EXCH_EVENT_COLUMNS.join(", ")))
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut sink, rows.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sink.finish().unwrap_or_else(|e| panic!("{e}")), EVENTS as u64);

    // Counts per kind, the sum of all delta changes and the trade volume match the engine.
    let mut kinds: BTreeMap<&str, i64> = BTreeMap::new();
    let (mut delta_sum, mut traded_centi) = (0_i64, 0_i64);
    for e in &produced {
        let kind = match e.kind {
            ExchEventKind::Delta { delta_centi, .. } => {
                delta_sum += delta_centi;
                "delta"
            }
            ExchEventKind::Trade { count_centi, .. } => {
                traded_centi += count_centi;
                "trade"
            }
            ExchEventKind::Ticker { .. } => "ticker",
            ExchEventKind::MarketLifecycle { .. } => "market_lifecycle",
            ExchEventKind::EventCreated { .. } => "event_created",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let db_kinds: BTreeMap<String, i64> = client
        .query("SELECT kind, count(*) FROM exch_event GROUP BY kind", &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: BTreeMap<String, i64> =
        kinds.iter().map(|(k, v)| ((*k).to_string(), *v)).collect();
    assert_eq!(db_kinds, expected);
    let sums = client
        .query_one(
            "SELECT coalesce(sum(delta_centi) FILTER (WHERE kind = 'delta'), 0)::bigint, \
             coalesce(sum(count_centi) FILTER (WHERE kind = 'trade'), 0)::bigint, \
             min(exch_seq), max(exch_seq), count(DISTINCT exch_seq) FROM exch_event",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sums.get::<_, i64>(0), delta_sum);
    assert_eq!(sums.get::<_, i64>(1), traded_centi);
    assert_eq!(sums.get::<_, i64>(2), 1);
    assert_eq!(sums.get::<_, i64>(3), EVENTS as i64);
    assert_eq!(sums.get::<_, i64>(4), EVENTS as i64);
    assert!(kinds.get("trade").copied().unwrap_or(0) > 0, "the run must contain trades");
}
