//! Measures the market engine's event rate: `cargo run --release -p kdp-sim --example market_rate
//! [markets] [events]` (defaults 100,000 markets, 10,000,000 events). Checks the stream's basic
//! invariants (sequence, time order) while it counts, then prints events/s and the mix.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use kdp_sim::market::model::ExchEventKind;
use kdp_sim::market::{Exchange, MarketConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let markets: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    let cfg = MarketConfig { markets, ..MarketConfig::default() };
    let t0 = Instant::now();
    let mut x = Exchange::new(cfg);
    let build_ms = t0.elapsed().as_millis();
    let t1 = Instant::now();
    let (mut deltas, mut trades, mut tickers, mut lifecycle) = (0u64, 0u64, 0u64, 0u64);
    let mut last_ts = i64::MIN;
    for seq in 1..=events {
        let ev = x.next_event();
        assert_eq!(ev.exch_seq, seq);
        assert!(ev.ts_ns >= last_ts);
        last_ts = ev.ts_ns;
        match ev.kind {
            ExchEventKind::Delta { .. } => deltas += 1,
            ExchEventKind::Trade { .. } => trades += 1,
            ExchEventKind::Ticker { .. } => tickers += 1,
            ExchEventKind::MarketLifecycle { .. } | ExchEventKind::EventCreated { .. } => {
                lifecycle += 1
            }
        }
    }
    let ns = t1.elapsed().as_nanos().max(1);
    let rate = u128::from(events) * 1_000_000_000 / ns;
    let virtual_s = (x.now_ns() - x.config().start_ts_ns) / 1_000_000_000;
    println!("markets {markets}: catalog built in {build_ms} ms");
    println!("{events} events in {} ms: {rate} events/s", ns / 1_000_000);
    println!(
        "deltas {deltas}, trades {trades}, tickers {tickers}, lifecycle {lifecycle}; virtual {virtual_s} s"
    );
    println!("{:?}", x.stats());
    let levels: usize = (0..x.markets().len() as u32)
        .map(|m| {
            let b = x.book(m, None);
            b.yes.len() + b.no.len()
        })
        .sum();
    println!(
        "levels total {levels}, catalog now {} markets, {} events",
        x.markets().len(),
        x.events().len()
    );
}
