//! Merge core throughput: three gatherer streams of one truth (every event delivered three
//! times: two thirds of the rows are duplicates), interleaved in chunks with the second and third
//! reader lagging, batches taken whenever full. Throughput counts input rows (events pushed).
//!
//! Checked before timing: the merge emits exactly the truth's events.
//!
//! `cargo bench -p kdp-dedup --bench merge`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kdp_dedup::limits::MergeLimits;
use kdp_dedup::merge::MergeCore;
use kdp_dedup::row::{Delta, Row, Ticker, TickerContent, Trade};
use kdp_engine::event::Side;

/// Events in the truth: 3 × this many rows are pushed per iteration.
const EVENTS: usize = 200_000;
/// Markets the events spread over.
const MARKETS: usize = 1_000;
/// Rows a reader hands over at a time.
const CHUNK_ROWS: usize = 256;

/// xorshift64*: a fixed, seeded workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A realistic mix: 80% deltas (a few identical ones at one time), 15% tickers, 5% trades;
/// exchange time advances by about 100 µs per event.
fn truth() -> Vec<Row> {
    let mut rng = Rng(0x5eed_2026);
    let markets: Vec<Arc<str>> =
        (0..MARKETS).map(|i| Arc::from(format!("KXBENCH-26JAN01-T{i:04}"))).collect();
    let mut ts = 1_767_225_600_000_000_000i64;
    let mut last_ticker_bid = vec![0u32; MARKETS];
    (0..EVENTS)
        .map(|i| {
            ts += 100_000;
            let market = Arc::clone(&markets[rng.below(MARKETS as u64) as usize]);
            match rng.below(100) {
                0..=79 => Row::Delta(Delta {
                    market,
                    side: if rng.below(2) == 0 { Side::Yes } else { Side::No },
                    price_micros: 10_000 * (1 + rng.below(4) as u32),
                    delta_centi: 100 * (1 + rng.below(2) as i64),
                    ts_exch_ns: ts,
                    ts_recv_ns: ts + 2_000_000,
                    client_order_id: None,
                }),
                80..=94 => {
                    let m = i % MARKETS;
                    last_ticker_bid[m] += 1;
                    Row::Ticker(Box::new(Ticker {
                        market,
                        content: TickerContent {
                            yes_bid_micros: Some(last_ticker_bid[m]),
                            volume_centi: Some(i as i64),
                            ..TickerContent::default()
                        },
                        ts_exch_ns: ts,
                        ts_recv_ns: ts + 2_000_000,
                    }))
                }
                _ => Row::Trade(Box::new(Trade {
                    trade_id: format!("{:08x}-0000-4000-8000-{:012x}", i, rng.below(1 << 40))
                        .into(),
                    market,
                    yes_price_micros: 420_000,
                    no_price_micros: 580_000,
                    count_centi: 100,
                    taker_side: Some(Side::Yes),
                    taker_book_side: None,
                    is_block_trade: None,
                    ts_exch_ns: ts,
                    ts_recv_ns: ts + 2_000_000,
                })),
            }
        })
        .collect()
}

/// Pushes the three streams chunk by chunk, reader g lagging g chunks; returns rows emitted.
fn merge(streams: [Vec<Row>; 3]) -> u64 {
    let mut core = MergeCore::new(MergeLimits::DEFAULT, &[0, 0, 0]).expect("core");
    let mut emitted = 0u64;
    let mut iters = streams.map(|s| s.into_iter().enumerate());
    let chunks = EVENTS.div_ceil(CHUNK_ROWS);
    for step in 0..chunks + 2 {
        for (g, rows) in iters.iter_mut().enumerate() {
            if step < g {
                continue;
            }
            for (i, row) in rows.by_ref().take(CHUNK_ROWS) {
                core.push(g as u8, i as i64 + 1, row).expect("push");
                if core.batch_full() {
                    emitted += core.take_batch().map_or(0, |b| b.rows() as u64);
                }
            }
        }
    }
    emitted + core.take_batch().map_or(0, |b| b.rows() as u64)
}

fn bench(c: &mut Criterion) {
    let truth = truth();
    let streams = || [truth.clone(), truth.clone(), truth.clone()];
    assert_eq!(merge(streams()), EVENTS as u64, "the merge must emit each event exactly once");
    let mut group = c.benchmark_group("merge");
    group.throughput(Throughput::Elements(3 * EVENTS as u64));
    group.sample_size(20);
    group.bench_function("three_streams_two_thirds_duplicates", |b| {
        b.iter_batched(streams, |s| black_box(merge(s)), BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
