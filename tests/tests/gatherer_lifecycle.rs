//! The dynamic gatherer against the simulator and a real PostgreSQL: the snapshot poller stays
//! within its token budget (counted by the simulator's REST request log) and backs off on 429;
//! the stale timer reconnects a silent connection. Every wait is on an observable condition
//! (simulator counters, gatherer stats, stored rows) with a deadline, never a sleep.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::time::{Duration, Instant};

use gatherer_support::{Sim, wait_for};
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::gatherer::{Gatherer, GathererConfig};
use kdp_sim::market::MarketConfig;

/// Short market lives so a few seconds of virtual time see markets created, opened, closed,
/// determined, settled and replaced. No pauses: a resumed market is re-added like a new one,
/// which the first test does not step through.
fn lively(seed: u64) -> MarketConfig {
    MarketConfig {
        seed,
        markets: 40,
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

fn config(sim: &Sim, db: &TestDatabase, channels: &[&str]) -> GathererConfig {
    let mut c = sim.gatherer_config(db, Vec::new(), channels);
    c.rest_url = sim.handle.rest_url();
    c.metrics_addr = Some("off".into());
    c
}

/// (d) the poller's requests never exceed its token budget (counted by the simulator), and
/// forced 429s are backed off 100 ms, 200 ms, 400 ms.
#[test]
fn the_poller_stays_within_its_budget_and_backs_off_on_429() {
    let seed = 0x11fe_c7c1_e5ee_d003;
    let sim = Sim::start_with(lively(seed), true);
    let db = TestDatabase::new().unwrap();
    let markets = sim.busy_markets(10);
    let mut cfg = config(&sim, &db, &["orderbook_delta"]);
    cfg.markets = markets;
    cfg.rest_rate_per_s = 10;
    cfg.rest_burst = 5;
    cfg.reconcile_interval_ms = 3_600_000;
    let g = Gatherer::start(&cfg).unwrap();
    let faults = sim.handle.rest_faults().clone();
    wait_for("60 REST requests", || faults.request_counts().0 >= 60);
    let log = faults.request_log();
    let (rate, burst) = (10u128, 5u128);
    for i in 0..log.len() {
        for j in i..log.len() {
            let n = (j - i + 1) as u128;
            let dt_ms = log[j].at.duration_since(log[i].at).as_millis();
            // Tokens available over [t_i, t_j]: the burst plus the refill; +1 for arrival jitter
            // (a request may reach the server a little after the next one was allowed).
            assert!(n <= burst + rate * dt_ms / 1_000 + 1, "{n} requests in {dt_ms} ms");
        }
    }
    assert_eq!(faults.request_counts().1, 0, "the server's own limiter never refused");
    let before = faults.request_log().len();
    sim.control("/faults/rest", r#"{"status":429,"count":3}"#);
    wait_for("three 429s and a success after them", || {
        let log = faults.request_log();
        let forced: Vec<usize> = (0..log.len()).filter(|&i| log[i].gate_status == 429).collect();
        forced.len() == 3 && log.len() > forced[2] + 1
    });
    let log = faults.request_log();
    let forced: Vec<usize> = (0..log.len()).filter(|&i| log[i].gate_status == 429).collect();
    assert!(forced[0] >= before.saturating_sub(1));
    assert_eq!(forced, [forced[0], forced[0] + 1, forced[0] + 2], "the retries are back to back");
    let gap = |a: usize| log[a + 1].at.duration_since(log[a].at);
    for (k, want) in [100u64, 200, 400].into_iter().enumerate() {
        assert!(
            gap(forced[k]) >= Duration::from_millis(want),
            "after 429 number {} the client waited {:?}, less than {want} ms",
            k + 1,
            gap(forced[k])
        );
    }
    wait_for("the client to count the 429s", || {
        g.stats().registry.is_some_and(|r| r.rate_limited == 3)
    });
    let stats = g.shutdown().unwrap();
    let r = stats.registry.unwrap();
    let mut client = db.connect().unwrap();
    let rest_rows: i64 = client
        .query_one("SELECT count(*) FROM snapshot WHERE source = 'rest'", &[])
        .unwrap()
        .get(0);
    assert_eq!(rest_rows, r.snapshots as i64, "every REST snapshot is stored: {r:?}");
    assert!(r.snapshots >= 40, "{r:?}");
    println!(
        "poller stats {r:?}; backoff gaps {:?}",
        [gap(forced[0]), gap(forced[1]), gap(forced[2])]
    );
    drop(sim.finish());
}

/// The stale timer (`stale_after_ms`) reconnects a connection the simulator silenced, before
/// the silence ends.
#[test]
fn a_silent_connection_is_reconnected_after_stale_after_ms() {
    let seed = 0x11fe_c7c1_e5ee_d004;
    let sim = Sim::start(seed);
    let db = TestDatabase::new().unwrap();
    let markets = sim.busy_markets(4);
    let mut cfg = sim.gatherer_config(&db, markets, &["orderbook_delta"]);
    cfg.metrics_addr = Some("off".into());
    cfg.stale_after_ms = 300;
    cfg.shard_count = Some(1);
    let g = Gatherer::start(&cfg).unwrap();
    wait_for("the connection", || g.stats().shards[0].connects == 1 && sim.conns().len() == 1);
    let conn = sim.conns()[0];
    let at = Instant::now();
    sim.control("/faults/silence", &format!(r#"{{"conn":{conn},"ms":5000}}"#));
    wait_for("a reconnect", || g.stats().shards[0].connects == 2);
    let took = at.elapsed();
    assert!(took < Duration::from_millis(5_000), "reconnected by the stale timer: {took:?}");
    assert!(took >= Duration::from_millis(300), "not before stale_after_ms: {took:?}");
    assert_eq!(g.stats().shards[0].disconnects, 1);
    g.shutdown().unwrap();
    println!("silence → reconnect in {took:?} (stale_after_ms 300)");
    drop(sim.finish());
}
