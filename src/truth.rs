//! `kdp verify --truth FILE`: the simulator's truth file (`kdp sim --truth`) as the events
//! `kdp_dedup::verify` compares production with. This is the one place that knows both sides: the
//! simulator's exchange events and how a gatherer stores what the simulator sends for them (the
//! wire carries delta and ticker times to the microsecond, trade times to the millisecond; a
//! ticker's last trade size is sent as 0 before the first trade; no ticker carries a clock).
//!
//! **Which events are checked.** The exchange makes events for every market, but the gatherers
//! are sent only what they subscribed to. For each market and kind (delta, trade, ticker: one
//! channel each) the truth is taken from the first to the last of its events that the
//! simulator sent to, or withheld from (an injected gap), any connection; the events before and
//! after that window went to nobody and are counted as outside, not checked. Inside the window
//! every event counts, including those no connection was sent (e.g. while every gatherer was
//! disconnected): production must have them unless a coverage gap covers them.
//!
//! **Lifecycle events** (market and event lifecycle) are not in the truth: a gatherer stores
//! each one's whole JSON message, which the truth file does not carry. They are checked against
//! the gatherer databases only, and the report says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kdp_dedup::row::TickerContent;
use kdp_dedup::verify::{EventKey, Kind, Truth, TruthEvent, ticker_key};
use kdp_sim::market::model::{ExchEventKind, Side};
use kdp_sim::market::truth::{DeliveryItem, TruthReader, TruthRecord, uuid_text};

const NS_PER_US: i64 = 1_000;
const NS_PER_MS: i64 = 1_000_000;

/// The kinds the truth file renders exactly as a gatherer stores them.
pub const TRUTH_KINDS: [Kind; 3] = [Kind::Delta, Kind::Trade, Kind::Ticker];

/// A truth file read for verify.
#[derive(Debug)]
pub struct LoadedTruth {
    /// The checked events.
    pub truth: Truth,
    /// Delta, trade and ticker events outside every subscribed window (not checked).
    pub outside: u64,
    /// Lifecycle events in the file (checked against the gatherers only).
    pub lifecycle: u64,
}

/// One data event of the file before the windows are known.
struct Pending {
    exch_seq: u64,
    /// (market id, kind): its window.
    window: (u32, Kind),
    event: TruthEvent,
}

/// Reads the truth file at `path`; errors name the file and what is wrong.
pub fn load(path: &Path) -> Result<LoadedTruth, String> {
    let what = |e: &dyn std::fmt::Display| format!("truth file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut reader = TruthReader::new(file).map_err(|e| what(&e))?;
    let mut markets: Vec<Arc<str>> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut sent: Vec<u64> = Vec::new();
    let mut lifecycle = 0u64;
    while let Some(record) = reader.next() {
        match record.map_err(|e| what(&e))? {
            TruthRecord::Exch(e) => {
                let ev = &e.event;
                let Some(id) = ev.kind.market() else {
                    lifecycle += 1;
                    continue;
                };
                let catalog = &reader.catalog().markets;
                while markets.len() < catalog.len() {
                    markets.push(Arc::from(catalog[markets.len()].as_str()));
                }
                let Some(market) = usize::try_from(id).ok().and_then(|i| markets.get(i)) else {
                    return Err(what(&format!("event {} names unknown market {id}", ev.exch_seq)));
                };
                let market = Arc::clone(market);
                let us = ev.ts_ns.div_euclid(NS_PER_US) * NS_PER_US;
                let (kind, key, ts_exch_ns) = match &ev.kind {
                    ExchEventKind::Delta { side, price_micros, delta_centi, .. } => (
                        Kind::Delta,
                        EventKey::Delta {
                            market: Arc::clone(&market),
                            ts_exch_ns: us,
                            side_yes: *side == Side::Yes,
                            price_micros: *price_micros,
                            delta_centi: *delta_centi,
                        },
                        us,
                    ),
                    ExchEventKind::Trade { trade_id, .. } => (
                        Kind::Trade,
                        EventKey::Trade { trade_id: uuid_text(trade_id).into() },
                        ev.ts_ns.div_euclid(NS_PER_MS) * NS_PER_MS,
                    ),
                    ExchEventKind::Ticker { state: s, .. } => {
                        let content = TickerContent {
                            price_micros: s.last_price_micros,
                            yes_bid_micros: Some(s.yes_bid_micros),
                            yes_ask_micros: Some(s.yes_ask_micros),
                            yes_bid_size_centi: Some(s.yes_bid_size_centi),
                            yes_ask_size_centi: Some(s.yes_ask_size_centi),
                            last_trade_size_centi: Some(s.last_trade_size_centi.unwrap_or(0)),
                            volume_centi: Some(s.volume_centi),
                            open_interest_centi: Some(s.open_interest_centi),
                            dollar_volume: Some(s.dollar_volume),
                            dollar_open_interest: Some(s.dollar_open_interest),
                            clock: None,
                        };
                        (
                            Kind::Ticker,
                            EventKey::Ticker {
                                market: Arc::clone(&market),
                                ts_exch_ns: us,
                                content: ticker_key(&content),
                            },
                            us,
                        )
                    }
                    ExchEventKind::MarketLifecycle { .. } | ExchEventKind::EventCreated { .. } => {
                        lifecycle += 1;
                        continue;
                    }
                };
                pending.push(Pending {
                    exch_seq: ev.exch_seq,
                    window: (id, kind),
                    event: TruthEvent { key, market: Some(market), ts_exch_ns },
                });
            }
            TruthRecord::Delivery(log) => {
                for item in log.items {
                    match item {
                        DeliveryItem::Delivered(s) | DeliveryItem::Duplicate(s) => sent.push(s),
                        DeliveryItem::Gap { first, last } => sent.extend(first..=last),
                    }
                }
            }
            _ => {}
        }
    }
    sent.sort_unstable();
    sent.dedup();
    let mut windows: HashMap<(u32, Kind), (u64, u64)> = HashMap::new();
    for p in &pending {
        if sent.binary_search(&p.exch_seq).is_ok() {
            let w = windows.entry(p.window).or_insert((p.exch_seq, p.exch_seq));
            w.0 = w.0.min(p.exch_seq);
            w.1 = w.1.max(p.exch_seq);
        }
    }
    let mut outside = 0u64;
    let mut events = Vec::with_capacity(pending.len());
    for p in pending {
        match windows.get(&p.window) {
            Some(&(first, last)) if (first..=last).contains(&p.exch_seq) => events.push(p.event),
            _ => outside += 1,
        }
    }
    Ok(LoadedTruth { truth: Truth { events, kinds: TRUTH_KINDS.to_vec() }, outside, lifecycle })
}
