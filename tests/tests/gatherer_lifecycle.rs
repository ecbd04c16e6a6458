//! The dynamic gatherer against the simulator and a real PostgreSQL: the registry discovers
//! markets over REST, follows `market_lifecycle_v2` and tells the shards to add and remove
//! markets (checked against the markets the simulator's subscriptions hold), reconciliation
//! repairs a lifecycle message the simulator dropped, the snapshot poller stays within its token
//! budget and backs off on 429, and the stale timer reconnects a silent connection.
//!
//! The simulator runs on a manual clock and a replica of its seeded exchange, moved in lockstep
//! with it, tells the test which exchange position holds each lifecycle event. `Sim::advance`
//! stops at the end of the engine's current action (a settlement that lists a new event emits
//! `settled`, `event_lifecycle` and every `created` as one action), so the tests always move to
//! the position it returns. Every wait is on an observable condition (stored rows, simulator
//! counters and subscriptions, gatherer stats) with a deadline, never a sleep.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod gatherer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gatherer_support::{Row, Sim, wait_for};
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::gatherer::{Gatherer, GathererConfig, GathererHandle};
use kdp_sim::market::model::{ExchEvent, ExchEventKind, LifecycleKind, MarketStatus};
use kdp_sim::market::{Exchange, MarketConfig};

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

fn ws_snapshot_markets(db: &TestDatabase) -> BTreeSet<String> {
    let mut client = db.connect().unwrap();
    // Before the writer's migrations ran there is no table yet: nothing stored.
    client
        .query("SELECT DISTINCT market FROM snapshot WHERE source = 'ws'", &[])
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// The markets the gatherer's `channel` subscriptions hold, as the simulator sees them (after
/// the last command each connection handled). A market held twice fails the test.
fn sim_markets(sim: &Sim, channel: &str) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (conn, subs) in sim.handle.registry().subscribed_markets() {
        for m in subs.iter().filter(|s| s.channel == channel).flat_map(|s| s.markets.iter()) {
            assert!(all.insert(m.to_string()), "{m} held twice ({channel}, connection {conn})");
        }
    }
    all
}

/// The simulator's connection carrying `market_lifecycle_v2`, with its data frames sent.
fn lifecycle_conn(sim: &Sim) -> Option<(u64, u64)> {
    sim.handle.registry().connections().iter().find_map(|c| {
        c.subscriptions
            .iter()
            .any(|s| s.channel == "market_lifecycle_v2")
            .then_some((c.conn, c.frames_sent))
    })
}

fn wait_discovered(g: &GathererHandle) {
    wait_for("the registry's first listing", || {
        g.stats().registry.is_some_and(|r| r.listings >= 1)
    });
}

fn stored_data_rows(db: &TestDatabase) -> BTreeMap<String, Vec<Row>> {
    let mut client = db.connect().unwrap();
    gatherer_support::stored_rows(&mut client)
        .into_iter()
        .map(|(m, rows)| (m, rows.into_iter().map(|(_, r)| r).collect()))
        .collect()
}

fn count(db: &TestDatabase, sql: &str, market: &str) -> i64 {
    db.connect().unwrap().query_one(sql, &[&market]).unwrap().get(0)
}

/// The simulator and a replica of its exchange at the same position (the end of an action):
/// the replica's catalog and statuses are the simulator's.
struct Lockstep<'s> {
    sim: &'s Sim,
    replica: Exchange,
    /// Looks ahead of the simulator to find where events are.
    scout: Exchange,
    position: u64,
}

impl<'s> Lockstep<'s> {
    fn new(sim: &'s Sim, market: &MarketConfig) -> Lockstep<'s> {
        Lockstep {
            sim,
            replica: Exchange::new(market.clone()),
            scout: Exchange::new(market.clone()),
            position: 0,
        }
    }

    /// The next event after `after` matching `want` (looking ahead; nothing moves).
    fn find(
        &mut self,
        after: u64,
        mut want: impl FnMut(&Exchange, &ExchEvent) -> bool,
    ) -> ExchEvent {
        for _ in 0..1_000_000 {
            let e = self.scout.next_event();
            if e.exch_seq > after && want(&self.scout, &e) {
                return e;
            }
        }
        panic!("no such event within a million events");
    }

    /// Advances the simulator to the end of the action holding `target` and the replica with
    /// it; returns the events in between.
    fn advance_to(&mut self, target: u64) -> Vec<ExchEvent> {
        assert!(target > self.position, "{target} is not ahead of {}", self.position);
        let at = self.sim.advance(target - self.position);
        assert!(at >= target, "the simulator stopped at {at}, before {target}");
        let mut events = Vec::new();
        while self.position < at {
            let e = self.replica.next_event();
            self.position = e.exch_seq;
            events.push(e);
        }
        assert_eq!(self.position, at, "the replica's stream is the simulator's");
        events
    }

    fn ticker(&self, market: u32) -> String {
        self.replica.markets()[usize::try_from(market).unwrap()].ticker.clone()
    }
}

/// The rows of `market` the exchange produced on `kinds` ("delta", "trade", "ticker"), in
/// order.
fn truth_rows<'t>(
    truth: &'t gatherer_support::Truth,
    market: &str,
    kinds: &[&str],
) -> Vec<&'t Row> {
    truth
        .all_events
        .get(market)
        .into_iter()
        .flatten()
        .map(|(_, r)| r)
        .filter(|r| kinds.iter().any(|k| r.split(' ').next() == Some(*k)))
        .collect()
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// (a) markets created during the run are captured from their first delta; (b) determined and
/// settled markets leave the gatherer's subscriptions (the simulator holds exactly the markets
/// the lifecycle stream leaves wanted, on every channel).
#[test]
fn new_markets_are_captured_from_their_first_delta_and_settled_ones_unsubscribed() {
    let seed = 0x11fe_c7c1_e5ee_d001;
    let channels = ["orderbook_delta", "trade"];
    let market = lively(seed);
    let sim = Sim::start_with(market.clone(), true);
    let db = TestDatabase::new().unwrap();
    let mut cfg = config(&sim, &db, &channels);
    cfg.snapshot_poller = false;
    // No periodic reconciliation during the run: membership follows lifecycle events only, so
    // the wanted set below is exact (a listing would also drop markets closed without an event).
    cfg.reconcile_interval_ms = 3_600_000;
    let g = Gatherer::start(&cfg).unwrap();
    wait_discovered(&g);

    let mut step = Lockstep::new(&sim, &market);
    // The registry's rule, mirrored: unopened and open markets are wanted; `created` and
    // `activated` add, `deactivated`, `determined` and `settled` remove.
    let mut wanted: BTreeSet<String> = step
        .replica
        .markets()
        .iter()
        .filter(|m| matches!(m.status, MarketStatus::Initialized | MarketStatus::Active))
        .map(|m| m.ticker.clone())
        .collect();
    wait_for("the discovery's markets to be counted", || {
        g.stats().registry.is_some_and(|r| r.markets == wanted.len() as u64)
    });
    let held_exactly =
        |wanted: &BTreeSet<String>| channels.iter().all(|c| sim_markets(&sim, c) == *wanted);
    wait_for("the simulator to hold every discovered market", || held_exactly(&wanted));
    wait_for("every discovered market's first snapshot", || {
        ws_snapshot_markets(&db).is_superset(&wanted)
    });
    let mut ever_wanted = wanted.clone();

    // Step the simulator to each action that creates markets and, before the exchange moves
    // on, wait until the simulator holds exactly the wanted markets: a new market cannot trade
    // before it opens (a second or more of virtual time later), so everything it ever does is
    // sent to the gatherer.
    let mut created: Vec<String> = Vec::new();
    let mut removed = 0usize;
    let mut to_subscribed: Vec<Duration> = Vec::new();
    let mut to_snapshot: Vec<Duration> = Vec::new();
    let (mut lifecycle_events, mut event_lifecycle_events) = (0i64, 0i64);
    let mut apply = |events: &[ExchEvent],
                     step: &Lockstep<'_>,
                     wanted: &mut BTreeSet<String>,
                     removed: &mut usize|
     -> Vec<String> {
        let mut new = Vec::new();
        for e in events {
            match e.kind {
                ExchEventKind::MarketLifecycle { market, kind } => {
                    lifecycle_events += 1;
                    let t = step.ticker(market);
                    match kind {
                        LifecycleKind::Created | LifecycleKind::Activated => {
                            if wanted.insert(t.clone()) {
                                new.push(t);
                            }
                        }
                        LifecycleKind::Deactivated
                        | LifecycleKind::Determined
                        | LifecycleKind::Settled => {
                            if wanted.remove(&t) {
                                *removed += 1;
                            }
                        }
                        LifecycleKind::CloseDateUpdated => {}
                    }
                }
                ExchEventKind::EventCreated { .. } => event_lifecycle_events += 1,
                _ => {}
            }
        }
        new
    };
    // Once 12 markets were created, run 4,000 more events, still stopping at every creation.
    let mut goal: Option<u64> = None;
    let mut next_created: Option<u64> = None;
    loop {
        if goal.is_some_and(|g| step.position >= g) {
            break;
        }
        let at = step.position;
        let next = match next_created {
            Some(n) if n > at => n,
            _ => {
                let n = step
                    .find(at, |_, e| {
                        matches!(
                            e.kind,
                            ExchEventKind::MarketLifecycle { kind: LifecycleKind::Created, .. }
                        )
                    })
                    .exch_seq;
                next_created = Some(n);
                n
            }
        };
        let target = goal.map_or(next, |g| g.min(next));
        let events = step.advance_to(target);
        let t0 = Instant::now();
        let new = apply(&events, &step, &mut wanted, &mut removed);
        if !new.is_empty() {
            let new_set: BTreeSet<String> = new.iter().cloned().collect();
            wait_for("the simulator to hold the created markets", || {
                sim_markets(&sim, "orderbook_delta").is_superset(&new_set)
            });
            to_subscribed.push(t0.elapsed());
            wait_for("the created markets' first snapshots", || {
                ws_snapshot_markets(&db).is_superset(&new_set)
            });
            to_snapshot.push(t0.elapsed());
        }
        wait_for("the simulator to hold exactly the wanted markets", || held_exactly(&wanted));
        ever_wanted.extend(new.iter().cloned());
        created.extend(new);
        if created.len() >= 12 && goal.is_none() {
            goal = Some(step.position + 4_000);
        }
    }
    wait_for("the simulator to hold exactly the wanted markets at the end", || {
        held_exactly(&wanted)
    });
    assert!(removed >= 8, "markets determined or settled while held: {removed}");
    // The wanted set is the replica's own view: unopened, open, or closed (no event announces a
    // close) but not yet determined.
    let by_status: BTreeSet<String> = step
        .replica
        .markets()
        .iter()
        .filter(|m| {
            matches!(
                m.status,
                MarketStatus::Initialized | MarketStatus::Active | MarketStatus::Closed
            ) && ever_wanted.contains(&m.ticker)
        })
        .map(|m| m.ticker.clone())
        .collect();
    assert_eq!(wanted, by_status);
    // The registry publishes its counters just after it sends a change to the shards.
    wait_for("the registry's counters", || {
        g.stats().registry.is_some_and(|r| r.markets == wanted.len() as u64)
    });
    let r = g.stats().registry.unwrap();
    assert_eq!(r.removed, removed as u64, "{r:?}");
    assert_eq!(r.markets, wanted.len() as u64, "{r:?}");
    assert_eq!(r.listings, 1, "only the discovery listed markets: {r:?}");

    // (a): every data event of every market ever wanted — those created during the run
    // included — is stored, in order, from the first one; nothing else is (so no row of a
    // removed market follows its removal either, though the simulator's markets stop trading
    // at their close, before `determined`: what proves the unsubscription is the simulator's
    // subscriptions above).
    let mut replica = Exchange::new(market.clone());
    let mut data_events = 0u64;
    let mut traded: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..step.position {
        let e = replica.next_event();
        if let ExchEventKind::Delta { market, .. } | ExchEventKind::Trade { market, .. } = e.kind {
            let t = &replica.markets()[usize::try_from(market).unwrap()].ticker;
            assert!(ever_wanted.contains(t), "{t} traded without being wanted");
            data_events += 1;
            *traded.entry(t.clone()).or_default() += 1;
        }
    }
    wait_for("every data event to be committed", || {
        let rows = g.stats().writer.rows;
        rows.delta + rows.trade == data_events
    });
    let stats = g.shutdown().unwrap();
    let truth = sim.finish();
    let stored = stored_data_rows(&db);
    assert!(stored.keys().all(|m| ever_wanted.contains(m)), "only wanted markets are stored");
    for m in &ever_wanted {
        let want = truth_rows(&truth, m, &["delta", "trade"]);
        let got: Vec<&Row> = stored.get(m).map(|v| v.iter().collect()).unwrap_or_default();
        assert_eq!(got, want, "market {m}: stored rows = every event the exchange produced");
    }
    let created_traded: usize = created.iter().map(|m| traded.get(m).copied().unwrap_or(0)).sum();
    let created_that_traded = created.iter().filter(|m| traded.contains_key(*m)).count();
    assert!(created_that_traded >= 8, "created markets that traded: {traded:?}");
    // Every lifecycle frame the simulator sent is stored.
    let mut client = db.connect().unwrap();
    let mut n = |sql: &str| -> i64 { client.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(n("SELECT count(*) FROM market_lifecycle"), lifecycle_events);
    assert_eq!(n("SELECT count(*) FROM event_lifecycle"), event_lifecycle_events);
    println!(
        "{} markets created in {} actions ({created_that_traded} traded, {created_traded} \
         events stored from their first); {removed} removed; {data_events} data events",
        created.len(),
        to_subscribed.len()
    );
    println!(
        "created frame → add_markets applied at the simulator: median {:?}, max {:?}, all {:?}",
        median(&to_subscribed),
        to_subscribed.iter().max(),
        to_subscribed
    );
    println!(
        "created frame → first snapshot committed: median {:?}, max {:?}",
        median(&to_snapshot),
        to_snapshot.iter().max()
    );
    println!("registry {:?}", stats.registry);
}

/// (c) a `created` lifecycle message the simulator drops on the registry's connection is
/// repaired by the reconciliation the seq gap forces (the periodic one is an hour away): the
/// market is subscribed although no lifecycle frame named it, and every delta it then makes is
/// stored.
#[test]
fn reconciliation_repairs_a_dropped_lifecycle_message() {
    let seed = 0x11fe_c7c1_e5ee_d002;
    let market = lively(seed);
    let sim = Sim::start_with(market.clone(), true);
    let db = TestDatabase::new().unwrap();
    let mut cfg = config(&sim, &db, &["orderbook_delta"]);
    cfg.snapshot_poller = false;
    cfg.reconcile_interval_ms = 3_600_000;
    let g = Gatherer::start(&cfg).unwrap();
    wait_discovered(&g);
    wait_for("the lifecycle session", || lifecycle_conn(&sim).is_some());
    let mut step = Lockstep::new(&sim, &market);

    // The first settlement that lists a new event of at least two markets: one action of
    // `settled` (s), `event_lifecycle` (s + 1) and `created` (s + 2, s + 3, ...).
    let is_lifecycle = |e: &ExchEvent| {
        matches!(e.kind, ExchEventKind::MarketLifecycle { .. } | ExchEventKind::EventCreated { .. })
    };
    let mut lifecycle_before = 0u64;
    let spawn = loop {
        let mut action = Vec::new();
        step.scout.next_batch(&mut action);
        let spawns =
            matches!(
                action.first().map(|e| &e.kind),
                Some(ExchEventKind::MarketLifecycle { kind: LifecycleKind::Settled, .. })
            ) && matches!(action.get(1).map(|e| &e.kind), Some(ExchEventKind::EventCreated { .. }));
        if spawns && action.len() >= 4 {
            break action;
        }
        lifecycle_before += action.iter().filter(|e| is_lifecycle(e)).count() as u64;
    };
    let created_ids: Vec<u32> = spawn[2..]
        .iter()
        .map(|e| match e.kind {
            ExchEventKind::MarketLifecycle { market, kind: LifecycleKind::Created } => market,
            ref other => {
                panic!("a spawn action holds only created events after the event: {other:?}")
            }
        })
        .collect();
    let s = spawn[0].exch_seq;
    step.advance_to(s - 1);
    assert_eq!(step.position, s - 1, "the action before the settlement ends at {}", s - 1);
    wait_for("the lifecycle frames before the settlement to be sent", || {
        lifecycle_conn(&sim).map(|(_, sent)| sent) == Some(lifecycle_before)
    });
    // Drop `settled`, `event_lifecycle` and the first `created`; the second `created` arrives
    // and shows the registry's session a seq gap.
    let (conn, _) = lifecycle_conn(&sim).unwrap();
    sim.control("/faults/drop_next", &format!(r#"{{"conn":{conn},"frames":3}}"#));
    let listings = g.stats().registry.unwrap().listings;
    assert_eq!(listings, 1);
    let action = step.advance_to(s);
    assert_eq!(action, spawn, "the simulator emitted the spawn action as one");
    let t0 = Instant::now();
    let settled_market = match spawn[0].kind {
        ExchEventKind::MarketLifecycle { market, .. } => step.ticker(market),
        _ => unreachable!(),
    };
    let event_ticker = match spawn[1].kind {
        ExchEventKind::EventCreated { event } => {
            step.replica.events()[usize::try_from(event).unwrap()].ticker.clone()
        }
        _ => unreachable!(),
    };
    let created: Vec<String> = created_ids.iter().map(|&m| step.ticker(m)).collect();
    let dropped = created[0].clone();
    let all_created: BTreeSet<String> = created.iter().cloned().collect();
    wait_for("the simulator to hold every created market", || {
        sim_markets(&sim, "orderbook_delta").is_superset(&all_created)
    });
    let repaired_in = t0.elapsed();
    wait_for("the created markets' first snapshots", || {
        ws_snapshot_markets(&db).is_superset(&all_created)
    });
    assert_eq!(sim.frames_dropped(), 3, "the three frames were dropped");
    wait_for("the reconciliation to be counted", || {
        g.stats().registry.is_some_and(|r| r.listings >= 2)
    });
    let r = g.stats().registry.unwrap();
    assert_eq!(r.lifecycle_losses, 1, "the seq gap was seen: {r:?}");
    assert_eq!(r.listings, 2, "one reconciliation, forced by the gap: {r:?}");
    let mut client = db.connect().unwrap();
    let gaps = gatherer_support::gap_rows(&mut client);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].expected_seq, gaps[0].got_seq, gaps[0].markets.is_empty()),
        (
            i64::try_from(lifecycle_before).unwrap() + 1,
            Some(i64::try_from(lifecycle_before).unwrap() + 4),
            true
        ),
        "{gaps:?}"
    );
    let mut lifecycle_rows = |market: &str, kind: &str| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM market_lifecycle WHERE market = $1 AND kind = $2",
                &[&market, &kind],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(lifecycle_rows(&dropped, "created"), 0, "the gatherer never saw it created");
    assert_eq!(lifecycle_rows(&settled_market, "settled"), 0);
    for m in &created[1..] {
        assert_eq!(lifecycle_rows(m, "created"), 1, "{m} came through the lifecycle stream");
    }
    let event_rows: i64 = client
        .query_one("SELECT count(*) FROM event_lifecycle WHERE event_ticker = $1", &[&event_ticker])
        .unwrap()
        .get(0);
    assert_eq!(event_rows, 0);

    // The repaired market opens, trades and is determined: every delta it made is stored.
    let dropped_id = created_ids[0];
    let determined = step
        .find(s, |_, e| {
            e.kind
                == ExchEventKind::MarketLifecycle {
                    market: dropped_id,
                    kind: LifecycleKind::Determined,
                }
        })
        .exch_seq;
    let events = step.advance_to(determined);
    let deltas = events
        .iter()
        .filter(|e| matches!(e.kind, ExchEventKind::Delta { market, .. } if market == dropped_id))
        .count();
    assert!(deltas > 10, "the repaired market traded: {deltas} deltas");
    wait_for("the repaired market's deltas to be committed", || {
        count(&db, "SELECT count(*) FROM delta WHERE market = $1", &dropped)
            == i64::try_from(deltas).unwrap()
    });
    g.shutdown().unwrap();
    let truth = sim.finish();
    let stored = stored_data_rows(&db);
    for m in &created {
        let want = truth_rows(&truth, m, &["delta"]);
        let got: Vec<&Row> = stored.get(m).map(|v| v.iter().collect()).unwrap_or_default();
        assert_eq!(got, want, "market {m}: stored rows = every event the exchange produced");
    }
    println!(
        "dropped: settled {settled_market}, event {event_ticker}, created {dropped}; created \
         frames → every created market held at the simulator (the dropped one through the \
         forced reconciliation) in {repaired_in:?}; {deltas} deltas of {dropped} stored"
    );
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
