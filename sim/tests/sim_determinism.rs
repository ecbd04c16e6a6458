//! Determinism through the whole simulator: `Simulator::start` with the same market seed, the
//! same fault seed, a manual clock and the same client behaviour writes a byte-identical truth
//! file (every exchange event and the connection's delivery log with its seeded drops and
//! duplicates); another market seed or another fault seed writes a different one.
//!
//! The client is one `wss` connection that subscribes to a fixed market set, advances the clock
//! in fixed steps and waits for each step's frames (a `list_subscriptions` barrier), asking for
//! a snapshot and adding a market midway. The run delivers more than one delivery-log chunk
//! (`ws::DELIVERY_CHUNK_ITEMS`), so where the log is cut is covered too. Per-second random
//! faults (close, silence, overflow, outage) are rolled on the real clock, so they are off here;
//! per-frame faults (drop, duplicate) are on.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod ws_support;

use kdp_ingest::wire::{Channel, Command, MarketFilter, UpdateAction};
use kdp_sim::market::truth::{DeliveryItem, TruthReader, TruthRecord};
use kdp_sim::transport::faults::FaultConfig;
use kdp_sim::transport::ws::DELIVERY_CHUNK_ITEMS;
use ws_support::{Kind, busy_markets, client, start};

/// Clock steps of a run, and events per step: 40 × 5,000 = 200k events, well over one
/// delivery-log chunk of frames on this subscription set.
const STEPS: u64 = 40;
const EVENTS_PER_STEP: u64 = 5_000;

/// One run; returns the truth file's bytes.
async fn run(market_seed: u64, fault_seed: u64) -> Vec<u8> {
    println!("run: market seed {market_seed}, fault seed {fault_seed:#x}");
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.bin");
    let path = truth_path.clone();
    let faults = FaultConfig {
        seed: fault_seed,
        drop_frame_ppm: 20_000,
        dup_frame_ppm: 20_000,
        ..FaultConfig::default()
    };
    let sim = start(market_seed, move |cfg| {
        cfg.truth_path = Some(path);
        cfg.faults = faults;
    })
    .await;
    let markets = busy_markets(&sim.handle, 5).await;
    let (first, extra) = markets.split_at(4);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut c = client(&sim).await;
    let id = c.id();
    c.send(&Command::Subscribe {
        id,
        channels: &[Channel::OrderbookDelta, Channel::Trade],
        markets: MarketFilter::Many(&first),
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    })
    .await;
    let id = c.id();
    c.send(&Command::Subscribe {
        id,
        channels: &[Channel::Ticker, Channel::MarketLifecycleV2],
        markets: MarketFilter::All,
        send_initial_snapshot: true,
        skip_ticker_ack: false,
    })
    .await;
    c.barrier().await;
    for step in 0..STEPS {
        sim.handle.hub().advance(EVENTS_PER_STEP).await.unwrap();
        if step == STEPS / 2 {
            let id = c.id();
            c.send(&Command::UpdateSubscription {
                id,
                sid: 1,
                market_tickers: &first[..1],
                action: UpdateAction::GetSnapshot,
            })
            .await;
            let id = c.id();
            c.send(&Command::UpdateSubscription {
                id,
                sid: 1,
                market_tickers: &extra,
                action: UpdateAction::AddMarkets,
            })
            .await;
        }
        let frames = c.barrier().await;
        assert!(
            frames.iter().all(|f| !matches!(f.kind, Kind::Error { .. } | Kind::Unknown(_))),
            "step {step}: unexpected frame in a clean run"
        );
    }
    sim.handle.shutdown().await;
    std::fs::read(&truth_path).unwrap()
}

/// The records of a truth file, split into delivery records and all others.
fn records(bytes: &[u8]) -> (Vec<TruthRecord>, Vec<TruthRecord>) {
    TruthReader::new(bytes)
        .unwrap()
        .map(Result::unwrap)
        .partition(|r| matches!(r, TruthRecord::Delivery(_)))
}

/// Delivery items in a truth file: all, duplicates, gaps.
fn item_counts(deliveries: &[TruthRecord]) -> (usize, usize, usize) {
    let items = deliveries.iter().flat_map(|r| match r {
        TruthRecord::Delivery(log) => log.items.as_slice(),
        _ => &[],
    });
    items.fold((0, 0, 0), |(n, d, g), i| match i {
        DeliveryItem::Duplicate(_) => (n + 1, d + 1, g),
        DeliveryItem::Gap { .. } => (n + 1, d, g + 1),
        DeliveryItem::Delivered(_) => (n + 1, d, g),
    })
}

#[tokio::test]
async fn same_seeds_same_truth_bytes_other_seeds_other_bytes() {
    let a = run(71, 0xd37e).await;
    let b = run(71, 0xd37e).await;
    let (deliveries, exchange) = records(&a);
    let (items, dups, gaps) = item_counts(&deliveries);
    println!(
        "truth file {} bytes: {} exchange/catalog records, {} delivery records, {items} items",
        a.len(),
        exchange.len(),
        deliveries.len()
    );
    assert!(
        items > DELIVERY_CHUNK_ITEMS && deliveries.len() >= 2,
        "the run must cut the delivery log at least once ({items} items in {} records)",
        deliveries.len()
    );
    assert!(dups > 0 && gaps > 0, "seeded faults must show: {dups} duplicates, {gaps} gaps");
    assert_eq!(a.len(), b.len(), "same seeds and client: the truth files differ in length");
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(first_diff, None, "same seeds and client: the truth files differ at this byte");

    let other_market = run(72, 0xd37e).await;
    assert_ne!(records(&other_market).1, exchange, "another market seed: other exchange events");

    let other_faults = run(71, 0xd37f).await;
    let (other_deliveries, other_exchange) = records(&other_faults);
    assert_eq!(other_exchange, exchange, "the fault seed must not change the exchange");
    assert_ne!(other_deliveries, deliveries, "another fault seed: another delivery log");
}
