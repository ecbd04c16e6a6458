//! The market registry against the simulator's REST server (on its own tokio runtime in
//! background threads) and as pure logic: discovery pages through 10,000 markets exactly,
//! reconciliation repairs a lifecycle change that was never delivered, exchange-status pause
//! and resume, lifecycle rules and the listing-lag guard. Time is a manual clock throughout.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kdp_engine::event::{LifecycleKind, MarketLifecycle};
use kdp_ingest::registry::{
    LIFECYCLE_TRUST_NS, Listing, Registry, RegistryChange, RegistryConfig, RegistryUpdate,
};
use kdp_ingest::rest::{ListStatus, MarketSummary};
use kdp_sim::market::model::MarketStatus;
use kdp_sim::transport::rest::{ExchangeStatusFlags, ManualClock, RestConfig as SimRestConfig};

mod rest_sim_support;
use rest_sim_support::Sim;

const S_NS: i64 = 1_000_000_000;
/// Exchange events per `advance` step while waiting for a market to leave `open`.
const ADVANCE_EVENTS: u64 = 50_000;
/// Bound on those steps: 400 × 10 s of virtual time covers the longest default lifetime.
const ADVANCE_STEPS_MAX: usize = 400;

/// Tickers the engine lists as `open` or `unopened`, with how many markets it holds.
fn engine_wanted(sim: &Sim) -> BTreeSet<Arc<str>> {
    let hub = sim.handle().hub().clone();
    sim.rt
        .block_on(hub.query(|ex| {
            ex.markets()
                .iter()
                .filter(|m| matches!(m.status, MarketStatus::Active | MarketStatus::Initialized))
                .map(|m| Arc::from(m.ticker.as_str()))
                .collect::<BTreeSet<Arc<str>>>()
        }))
        .unwrap()
}

fn changes(updates: Vec<RegistryUpdate>) -> Vec<RegistryChange> {
    updates
        .into_iter()
        .filter_map(|u| match u {
            RegistryUpdate::Change(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn discovery_pages_through_ten_thousand_markets_exactly() {
    let sim = Sim::start(7, 10_000, SimRestConfig { rate_limit: None }, 0);
    let clock = ManualClock::new();
    let mut client = sim.client(&clock);
    let expected = engine_wanted(&sim);
    let total = sim.rt.block_on(sim.handle().hub().query(|ex| ex.markets().len())).unwrap();
    assert!(
        total >= 10_000 && expected.len() > 5_000,
        "{total} markets, {} wanted",
        expected.len()
    );

    // Raw pages: every open/unopened market exactly once, in pages of at most 1000.
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut pages = 0;
    for status in [ListStatus::Open, ListStatus::Unopened] {
        client
            .for_each_market(Some(status), |page: Vec<MarketSummary>| {
                assert!(page.len() <= 1000);
                pages += 1;
                for m in page {
                    *counts.entry(m.ticker).or_default() += 1;
                }
            })
            .unwrap();
    }
    assert!(counts.values().all(|&n| n == 1), "a market was listed twice");
    let listed: BTreeSet<Arc<str>> = counts.keys().map(|t| Arc::from(t.as_str())).collect();
    assert_eq!(listed, expected);
    assert_eq!(client.stats().requests, pages);

    // The registry's first poll: status check, then discovery = add everything.
    let mut registry = Registry::new(RegistryConfig::default());
    let updates = registry.poll(&mut client, clock.now_ns()).unwrap();
    let added = changes(updates);
    assert_eq!(added.len(), 1);
    assert!(added[0].remove.is_empty());
    assert_eq!(added[0].add, expected.iter().cloned().collect::<Vec<_>>());
    assert_eq!(registry.markets(), added[0].add);
    // Nothing is due until the status interval passes.
    assert_eq!(registry.poll(&mut client, clock.now_ns()).unwrap(), []);
}

#[test]
fn reconciliation_repairs_a_missed_lifecycle_change() {
    let sim = Sim::start(21, 2_000, SimRestConfig { rate_limit: None }, 0);
    let clock = ManualClock::new();
    let mut client = sim.client(&clock);
    let mut registry = Registry::new(RegistryConfig::default());
    let first = changes(registry.poll(&mut client, clock.now_ns()).unwrap());
    let before: BTreeSet<Arc<str>> = registry.markets().into_iter().collect();
    assert_eq!(first[0].add.len(), before.len());

    // The open market closing first: advance the exchange past its close (no lifecycle event
    // is fed to the registry), bounded.
    let hub = sim.handle().hub().clone();
    let target: String = sim
        .rt
        .block_on(hub.query(|ex| {
            ex.markets()
                .iter()
                .filter(|m| m.status == MarketStatus::Active)
                .min_by_key(|m| m.close_ts_ns)
                .map(|m| m.ticker.clone())
                .unwrap()
        }))
        .unwrap();
    let mut steps = 0;
    loop {
        let t = target.clone();
        let status = sim
            .rt
            .block_on(hub.query(move |ex| ex.market(ex.market_id(&t).unwrap()).status))
            .unwrap();
        if !matches!(status, MarketStatus::Active | MarketStatus::Initialized) {
            println!("{target} is {status:?} after {steps} steps of {ADVANCE_EVENTS} events");
            break;
        }
        steps += 1;
        assert!(steps <= ADVANCE_STEPS_MAX, "{target} never left open");
        sim.rt.block_on(hub.advance(ADVANCE_EVENTS)).unwrap();
    }
    assert!(registry.contains(&target), "the registry still believes {target} is open");

    // Not due yet; forced, the reconciliation repairs exactly the difference.
    clock.advance_ns(S_NS);
    registry.reconcile_now();
    let after = engine_wanted(&sim);
    let repaired = changes(registry.poll(&mut client, clock.now_ns()).unwrap());
    assert_eq!(repaired.len(), 1);
    let change = &repaired[0];
    assert!(change.remove.iter().any(|t| **t == *target));
    assert_eq!(change.remove, before.difference(&after).cloned().collect::<Vec<_>>());
    assert_eq!(change.add, after.difference(&before).cloned().collect::<Vec<_>>());
    assert_eq!(registry.markets(), after.into_iter().collect::<Vec<_>>());
}

#[test]
fn exchange_pause_stops_reconciliation_until_resumed() {
    let sim = Sim::start(3, 500, SimRestConfig { rate_limit: None }, 0);
    let clock = ManualClock::new();
    let mut client = sim.client(&clock);
    let mut registry = Registry::new(RegistryConfig::default());
    registry.poll(&mut client, clock.now_ns()).unwrap();
    let n = registry.len();

    sim.handle().rest_faults().set_exchange_status(ExchangeStatusFlags {
        exchange_active: false,
        trading_active: false,
        estimated_resume_ns: Some(1_795_960_800 * S_NS),
    });
    clock.advance_ns(RegistryConfig::default().reconcile_interval_ns);
    let requests = client.stats().requests;
    let updates = registry.poll(&mut client, clock.now_ns()).unwrap();
    assert_eq!(
        updates,
        [RegistryUpdate::Paused { estimated_resume_time: Some("2026-11-29T14:00:00Z".into()) }]
    );
    assert!(registry.is_paused());
    assert_eq!(client.stats().requests, requests + 1, "only the status check while paused");

    sim.handle().rest_faults().set_exchange_status(ExchangeStatusFlags::default());
    clock.advance_ns(RegistryConfig::default().status_interval_ns);
    let updates = registry.poll(&mut client, clock.now_ns()).unwrap();
    assert_eq!(updates.first(), Some(&RegistryUpdate::Resumed));
    assert!(!registry.is_paused());
    assert_eq!(registry.len(), n, "the exchange did not move: nothing to repair");
}

fn lifecycle<'a>(market: &'a str, kind: LifecycleKind<'static>) -> MarketLifecycle<'a> {
    MarketLifecycle {
        market,
        kind,
        multivariate: false,
        open_ts_s: None,
        close_ts_s: None,
        determination_ts_s: None,
        settled_ts_s: None,
        result: None,
        settlement_value_micros: None,
        price_level_structure: None,
        payload: String::new(),
    }
}

fn summary(ticker: &str, status: &str) -> MarketSummary {
    MarketSummary { ticker: ticker.into(), event_ticker: "E".into(), status: status.into() }
}

fn tickers(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|&n| Arc::from(n)).collect()
}

#[test]
fn lifecycle_moves_membership_by_status() {
    let mut r = Registry::new(RegistryConfig::default());
    let add = |names: &[&str]| Some(RegistryChange { add: tickers(names), remove: vec![] });
    let remove = |names: &[&str]| Some(RegistryChange { add: vec![], remove: tickers(names) });
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::Created), 1), add(&["A"]));
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::Activated), 2), None);
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::CloseDateUpdated), 3), None);
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::Deactivated), 4), remove(&["A"]));
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::Activated), 5), add(&["A"]));
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::Determined), 6), remove(&["A"]));
    assert_eq!(r.on_lifecycle(&lifecycle("A", LifecycleKind::Settled), 7), None);
    assert_eq!(r.on_lifecycle(&lifecycle("B", LifecycleKind::Activated), 8), add(&["B"]));
    assert_eq!(r.on_lifecycle(&lifecycle("B", LifecycleKind::Settled), 9), remove(&["B"]));

    // Tracking only `open`: a created market is still taken (it opens without an event).
    let mut open_only = Registry::new(RegistryConfig {
        statuses: vec![ListStatus::Open],
        ..RegistryConfig::default()
    });
    assert_eq!(open_only.on_lifecycle(&lifecycle("C", LifecycleKind::Created), 1), add(&["C"]));
    // Tracking `paused` too: a deactivated market stays.
    let mut with_paused = Registry::new(RegistryConfig {
        statuses: vec![ListStatus::Open, ListStatus::Paused],
        ..RegistryConfig::default()
    });
    assert_eq!(with_paused.on_lifecycle(&lifecycle("D", LifecycleKind::Activated), 1), add(&["D"]));
    assert_eq!(with_paused.on_lifecycle(&lifecycle("D", LifecycleKind::Deactivated), 2), None);
}

#[test]
fn a_lagging_listing_neither_revives_settled_markets_nor_drops_fresh_ones() {
    let mut r = Registry::new(RegistryConfig::default());
    let mut first = Listing::new(0);
    first.extend([summary("A", "active"), summary("B", "active"), summary("C", "initialized")]);
    first.extend([summary("X", "finalized"), summary("Y", "closed")]);
    assert_eq!(r.apply_listing(first).add, tickers(&["A", "B", "C"]));

    let t = 1_000 * S_NS;
    r.on_lifecycle(&lifecycle("A", LifecycleKind::Settled), t);
    r.on_lifecycle(&lifecycle("N", LifecycleKind::Created), t + 1);
    // Listing started just after: it still shows A open (Kalshi's lag), does not yet show N,
    // and B closed without any event.
    let mut lagging = Listing::new(t + 2);
    lagging.extend([summary("A", "active"), summary("B", "closed"), summary("C", "active")]);
    let change = r.apply_listing(lagging);
    assert_eq!(change, RegistryChange { add: vec![], remove: tickers(&["B"]) });
    assert_eq!(r.markets(), tickers(&["C", "N"]));

    // Long after: A settled (terminal) and still listed open is still not revived; N, now
    // trusted to the listing, goes because the listing lacks it.
    let mut later = Listing::new(t + LIFECYCLE_TRUST_NS + 10);
    later.extend([summary("A", "active"), summary("C", "active")]);
    assert_eq!(r.apply_listing(later), RegistryChange { add: vec![], remove: tickers(&["N"]) });
    // Once A leaves the listing its tombstone is dropped; a listing never re-adds it until then.
    let mut done = Listing::new(t + 2 * LIFECYCLE_TRUST_NS);
    done.extend([summary("C", "active")]);
    assert!(r.apply_listing(done).is_empty());
    assert_eq!(r.markets(), tickers(&["C"]));
}
