//! `kdp trades` as a real process (issue 6 item 4): a fixture through the merge core and the
//! real sink (two gatherers delivering overlapping trades, another market, trades exactly at
//! both ends of the range), then the exact table, CSV and JSON output: `[from, to)`, by exchange
//! time then trade id, prices in dollars and counts in contracts with exact decimals.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::sync::Arc;

use gatherer_support::process::kdp;
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::MergeCore;
use kdp_dedup::row::{Row, Trade};
use kdp_dedup::sink::{Sink, SinkOptions};
use kdp_engine::event::{BookSide, Side};
use kdp_engine::pg::testing::TestDatabase;

/// 2026-01-05T14:00:00Z.
const T0: i64 = 1_767_621_600_000_000_000;
const S: i64 = 1_000_000_000;

#[allow(clippy::too_many_arguments)]
fn trade(
    market: &Arc<str>,
    id: &str,
    ts: i64,
    yes_price_micros: u32,
    count_centi: i64,
    taker: Option<Side>,
    block: Option<bool>,
) -> Row {
    Row::Trade(Box::new(Trade {
        trade_id: id.into(),
        market: Arc::clone(market),
        yes_price_micros,
        no_price_micros: 1_000_000 - yes_price_micros,
        count_centi,
        taker_side: taker,
        taker_book_side: taker.map(|_| BookSide::Ask),
        is_block_trade: block,
        ts_exch_ns: ts,
        ts_recv_ns: ts + 3_000_000,
    }))
}

#[test]
fn trades_prints_the_range_exactly() {
    let prod = TestDatabase::new().unwrap();
    let mut sink = Sink::new(prod.url().parse().unwrap(), SinkOptions { migrate: true });
    let mut core = MergeCore::new(MergeLimits::default(), &[0, 0]).unwrap();
    let m: Arc<str> = Arc::from("KXTEST-26JAN05-T1");
    let other: Arc<str> = Arc::from("KXOTHER-26JAN05-T1");
    let a = "0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d01";
    let b = "0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d02";
    let c = "0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d03";
    let rows = [
        // Before the range.
        trade(&m, "0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d00", T0 - 1, 420_000, 100, None, None),
        // At --from: included.
        trade(&m, a, T0, 420_000, 13_600, Some(Side::Yes), Some(false)),
        // Two at one time, deci-cent and sub-cent prices, a fractional count.
        trade(&m, c, T0 + 90 * S + 250_000, 1_500, 1, Some(Side::No), None),
        trade(&m, b, T0 + 90 * S + 250_000, 999_000, 7_477, None, Some(true)),
        trade(&other, "0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d09", T0 + S, 500_000, 100, None, None),
        // At --to: excluded.
        trade(&m, "0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d04", T0 + 120 * S, 420_125, 100, None, None),
    ];
    // Gatherer 0 has them all; gatherer 1 the same trades again (merged away).
    for g in 0..2u8 {
        for (i, row) in rows.iter().enumerate() {
            core.push(g, i64::try_from(i).unwrap() + 1, row.clone()).unwrap();
        }
    }
    sink.write(&core.take_batch().unwrap()).unwrap();
    let args = |format: &'static str| {
        [
            "trades",
            "--market",
            "KXTEST-26JAN05-T1",
            "--from",
            "2026-01-05T14:00:00Z",
            "--to",
            "2026-01-05T14:02:00Z",
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
        "trades of KXTEST-26JAN05-T1 from 2026-01-05T14:00:00.000000000Z to \
         2026-01-05T14:02:00.000000000Z (end excluded): 3\n\
         time                            trade_id                                     yes        no         count  taker   hit  block\n\
         2026-01-05T14:00:00.000000000Z  0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d01      0.4200    0.5800        136.00    yes   ask     no\n\
         2026-01-05T14:01:30.000250000Z  0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d02      0.9990    0.0010         74.77      -     -    yes\n\
         2026-01-05T14:01:30.000250000Z  0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d03      0.0015    0.9985          0.01     no   ask      -\n"
    );
    let (code, out, _) = kdp(&args("csv"));
    println!("{out}");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "time,trade_id,yes_price,no_price,count,taker_side,taker_book_side,block_trade\n\
         2026-01-05T14:00:00.000000000Z,0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d01,0.4200,0.5800,136.00,yes,ask,false\n\
         2026-01-05T14:01:30.000250000Z,0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d02,0.9990,0.0010,74.77,,,true\n\
         2026-01-05T14:01:30.000250000Z,0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d03,0.0015,0.9985,0.01,no,ask,\n"
    );
    let (code, out, _) = kdp(&args("json"));
    println!("{out}");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\"market\":\"KXTEST-26JAN05-T1\",\"from\":\"2026-01-05T14:00:00.000000000Z\",\
         \"to\":\"2026-01-05T14:02:00.000000000Z\",\"trades\":[\
         {\"time\":\"2026-01-05T14:00:00.000000000Z\",\"trade_id\":\"0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d01\",\"yes_price\":\"0.4200\",\"no_price\":\"0.5800\",\"count\":\"136.00\",\"taker_side\":\"yes\",\"taker_book_side\":\"ask\",\"block_trade\":false},\
         {\"time\":\"2026-01-05T14:01:30.000250000Z\",\"trade_id\":\"0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d02\",\"yes_price\":\"0.9990\",\"no_price\":\"0.0010\",\"count\":\"74.77\",\"taker_side\":null,\"taker_book_side\":null,\"block_trade\":true},\
         {\"time\":\"2026-01-05T14:01:30.000250000Z\",\"trade_id\":\"0b6c8a52-4c55-4f43-9d61-6a1f1b2c3d03\",\"yes_price\":\"0.0015\",\"no_price\":\"0.9985\",\"count\":\"0.01\",\"taker_side\":\"no\",\"taker_book_side\":\"ask\",\"block_trade\":null}]}\n"
    );
}

#[test]
fn trades_refuses_an_empty_range_and_an_unreachable_database() {
    let (code, _, err) = kdp(&[
        "trades",
        "--market=M",
        "--from=2026-01-05T14:02:00Z",
        "--to=2026-01-05T14:02:00Z",
        "--production=postgres://kdp@127.0.0.1:1/p",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "kdp trades: --to (2026-01-05T14:02:00.000000000Z) must be after --from \
         (2026-01-05T14:02:00.000000000Z)\n"
    );
    let (code, _, err) = kdp(&[
        "trades",
        "--market=M",
        "--from=2026-01-05T14:00:00Z",
        "--to=2026-01-05T14:02:00Z",
        "--production=postgres://kdp@127.0.0.1:1/p",
    ]);
    assert_eq!(code, 2);
    assert!(err.starts_with("kdp trades: cannot reach the production database ("), "{err}");
}
