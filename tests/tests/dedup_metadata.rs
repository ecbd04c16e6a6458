//! The deduplicator's metadata sync (issue 5 item 5) against the simulator's REST server and a
//! real PostgreSQL:
//! - after a sync, production's `markets` table is exactly the simulator's market list (tickers
//!   and statuses), `events` and `series` exactly its catalog, every market carries its event's
//!   series; paging is exact (requests = 1 + event pages + market pages);
//! - after lifecycle changes (the exchange advanced: markets closed, settled, created) the next
//!   sync updates every status (latest wins) and adds the new markets; a sync over an unchanged
//!   exchange changes no row;
//! - the requests stay within the configured token budget (the simulator's request log), and
//!   forced 429s are retried;
//! - run by the service (`rest_url` in the config) on its interval, stopped cleanly by
//!   `DedupHandle::shutdown`.
//!
//! The simulator runs on its manual clock, so its catalog changes only when the test advances
//! it. Seeds are printed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gatherer_support::{Sim, wait_for};
use kdp_dedup::metadata::{
    EVENTS_PAGE_LIMIT, MARKETS_PAGE_LIMIT, MetadataSettings, MetadataSync, SyncStats,
};
use kdp_dedup::service::Dedup;
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::rest::RateBudget;
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::rest::{RestFault, status_str};

/// Markets whose lives end within a few seconds of exchange time, so advancing the exchange
/// changes statuses and creates markets; enough of them for several pages of each listing.
fn lively(seed: u64, markets: usize) -> MarketConfig {
    MarketConfig {
        seed,
        markets,
        rate_msgs_per_s: 2_000,
        lifetime_s_min: 2,
        lifetime_s_max: 4,
        open_delay_s_max: 1,
        determine_delay_s_max: 1,
        settle_delay_s_max: 1,
        pause_ppm: 0,
        close_update_ppm: 0,
        ..MarketConfig::default()
    }
}

/// The simulator's catalog: market ticker → (status, series), event ticker → series, series.
struct Catalog {
    markets: BTreeMap<String, (String, String)>,
    events: BTreeMap<String, String>,
    series: Vec<String>,
}

fn catalog(sim: &Sim) -> Catalog {
    sim.rt
        .block_on(sim.handle.hub().query(|ex| {
            let series: Vec<String> = ex.series().iter().map(|s| s.ticker.clone()).collect();
            let event_series = |e: &kdp_sim::market::model::EventInfo| {
                series.get(usize::try_from(e.series).unwrap()).cloned().unwrap()
            };
            let events: BTreeMap<String, String> =
                ex.events().iter().map(|e| (e.ticker.clone(), event_series(e))).collect();
            let markets = ex
                .markets()
                .iter()
                .map(|m| {
                    let e = &ex.events()[usize::try_from(m.event).unwrap()];
                    (m.ticker.clone(), (status_str(m.status).to_owned(), event_series(e)))
                })
                .collect();
            Catalog { markets, events, series }
        }))
        .unwrap()
}

/// Production's markets: ticker → (status, series).
fn production_markets(c: &mut postgres::Client) -> BTreeMap<String, (String, String)> {
    c.query("SELECT ticker, status, coalesce(series_ticker, '-') FROM markets", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

fn assert_mirrors(c: &mut postgres::Client, want: &Catalog) {
    assert_eq!(production_markets(c), want.markets, "markets = the simulator's market list");
    let events: BTreeMap<String, String> = c
        .query("SELECT event_ticker, series_ticker FROM events", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(events, want.events);
    let mut series: Vec<String> =
        c.query("SELECT ticker FROM series", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    series.sort();
    let mut want_series = want.series.clone();
    want_series.sort();
    assert_eq!(series, want_series);
    // The full JSON is kept and agrees with the key columns.
    let disagree: i64 = c
        .query_one(
            "SELECT count(*) FROM markets WHERE body->>'ticker' <> ticker \
             OR body->>'status' <> status OR body->>'event_ticker' <> event_ticker \
             OR open_time_ns IS NULL OR close_time_ns IS NULL OR kalshi_updated_ns IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(disagree, 0);
}

/// Requests of a full sync: `/series` once, then the pages of each listing (a last page
/// exactly full is followed by no cursor, so ⌈n / limit⌉, at least 1).
fn pages(n: usize, limit: u32) -> u64 {
    (n.div_ceil(limit as usize)).max(1) as u64
}

fn expected_requests(c: &Catalog) -> u64 {
    1 + pages(c.events.len(), EVENTS_PAGE_LIMIT) + pages(c.markets.len(), MARKETS_PAGE_LIMIT)
}

/// Every window of the simulator's request log holds at most the burst plus the refill
/// (+1 for arrival jitter, as in gatherer_lifecycle).
fn assert_within_budget(sim: &Sim, budget: RateBudget) {
    let log = sim.handle.rest_faults().request_log();
    let (rate, burst) = (u128::from(budget.refill_per_s), u128::from(budget.capacity));
    for i in 0..log.len() {
        for j in i..log.len() {
            let n = (j - i + 1) as u128;
            let dt_ms = log[j].at.duration_since(log[i].at).as_millis();
            assert!(n <= burst + rate * dt_ms / 1_000 + 1, "{n} requests in {dt_ms} ms");
        }
    }
}

#[test]
fn syncs_mirror_the_simulator_and_later_syncs_follow_lifecycle_changes() {
    let seed = 0x6d65_7461_0000_0001;
    println!("seed {seed:#x}");
    let sim = Sim::start_with(lively(seed, 2_500), true);
    let prod = TestDatabase::new().unwrap();
    let budget = RateBudget { capacity: 2, refill_per_s: 5 };
    let mut settings = MetadataSettings::new(sim.handle.rest_url().unwrap());
    settings.budget = budget;
    let mut sync = MetadataSync::new(&settings, prod.config()).unwrap();
    let stop = AtomicBool::new(false);
    let mut c = prod.connect().unwrap();

    // 1. A first sync over a fresh production: everything inserted.
    let first = catalog(&sim);
    let s1 = sync.sync_once(&stop).unwrap();
    assert_mirrors(&mut c, &first);
    let inserted = (first.series.len() + first.events.len() + first.markets.len()) as u64;
    assert_eq!(
        s1,
        SyncStats {
            series: first.series.len() as u64,
            events: first.events.len() as u64,
            markets: first.markets.len() as u64,
            rows_changed: inserted,
            skipped: 0,
            requests: expected_requests(&first),
            rate_limited: 0,
            throttled_ns: s1.throttled_ns,
        }
    );
    assert!(s1.requests >= 5, "several pages of each listing: {s1:?}");
    println!(
        "first sync: {} series, {} events, {} markets in {} requests",
        s1.series, s1.events, s1.markets, s1.requests
    );

    // 2. Nothing changed on the exchange: nothing changes in production.
    let s2 = sync.sync_once(&stop).unwrap();
    assert_eq!((s2.markets, s2.rows_changed), (first.markets.len() as u64, 0));
    assert_mirrors(&mut c, &first);

    // 3. Lifecycle changes: ~10 s of exchange time closes, settles and creates markets.
    sim.advance(20_000);
    let second = catalog(&sim);
    let changed_status = first
        .markets
        .iter()
        .filter(|(t, (status, _))| second.markets.get(*t).is_some_and(|(s, _)| s != status))
        .count();
    let created = second.markets.len() - first.markets.len();
    assert!(changed_status >= 100 && created >= 10, "{changed_status} changed, {created} new");
    let s3 = sync.sync_once(&stop).unwrap();
    assert_mirrors(&mut c, &second);
    assert!(s3.rows_changed >= (changed_status + created) as u64, "{s3:?}");
    assert_eq!(s3.requests, expected_requests(&second));
    println!(
        "after advancing: {changed_status} statuses changed, {created} markets created: {s3:?}"
    );

    // 4. Forced 429s: the bucket is emptied, the request retried with backoff.
    sim.handle.rest_faults().fail_next(2, RestFault::TooManyRequests);
    let s4 = sync.sync_once(&stop).unwrap();
    assert_eq!((s4.rate_limited, s4.requests), (2, expected_requests(&second) + 2));
    assert_mirrors(&mut c, &second);

    assert_eq!(
        sim.handle.rest_faults().request_counts().1,
        0,
        "the server's limiter never refused"
    );
    assert_within_budget(&sim, budget);
    drop(sim.finish());
}

#[test]
fn the_service_syncs_on_its_interval_and_stops_cleanly() {
    let seed = 0x6d65_7461_0000_0002;
    println!("seed {seed:#x}");
    let sim = Sim::start_with(lively(seed, 300), true);
    let prod = TestDatabase::new().unwrap();
    // An empty gatherer database: the merge side idles; only the metadata thread works.
    let gatherer = TestDatabase::new().unwrap();
    let text = format!(
        "production_database_url = {:?}\nmetrics_addr = \"off\"\nrest_url = {:?}\n\
         metadata_interval_ms = 300\nrest_rate_per_s = 20\nrest_burst = 4\n\
         [[gatherers]]\nname = \"a\"\nid = 0\ndatabase_url = {:?}\n",
        prod.url(),
        sim.handle.rest_url().unwrap(),
        gatherer.url()
    );
    let config = kdp_dedup::config::DedupConfig::from_toml(&text).unwrap().check().unwrap();
    let dedup = Dedup::start(config).unwrap();
    let mut c = prod.connect().unwrap();
    let mirrored = |c: &mut postgres::Client, want: &Catalog| {
        // Before the migration ran there is no table: not mirrored yet.
        c.query("SELECT 1 FROM markets LIMIT 0", &[]).is_ok()
            && production_markets(c) == want.markets
    };
    let first = catalog(&sim);
    wait_for("the first scheduled sync", || mirrored(&mut c, &first));
    sim.advance(20_000);
    let second = catalog(&sim);
    assert_ne!(first.markets, second.markets);
    wait_for("a later scheduled sync to follow the lifecycle", || mirrored(&mut c, &second));
    assert_mirrors(&mut c, &second);
    let t0 = Instant::now();
    let stats = dedup.shutdown();
    let took = t0.elapsed();
    assert!(stats.is_ok(), "{stats:?}");
    println!("shutdown with the metadata thread took {took:?}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let requests_at_stop = sim.handle.rest_faults().request_counts().0;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        sim.handle.rest_faults().request_counts().0,
        requests_at_stop,
        "no request after the stop"
    );
    assert_within_budget(&sim, RateBudget { capacity: 4, refill_per_s: 20 });
    drop(sim.finish());
}
