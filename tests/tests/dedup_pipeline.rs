//! The deduplicator end to end (issue 5 items 1 and 6): the simulator, three in-process
//! gatherers (each with its own database) with different faults, and `kdp dedup`'s service
//! merging them into a production database.
//!
//! What is proven, against the gatherer databases and the simulator's truth:
//! - production's deltas, trades and tickers are exactly the union by maximum multiplicity of the
//!   three gatherer databases (computed here from the databases, independently of the merge
//!   core), with every delta key's occurrence ordinals 0..n and nothing duplicated;
//! - every event the truth says a gatherer was sent is in production at least as many times as
//!   that gatherer was sent it, and nothing is in production more often than the exchange sent it;
//! - every snapshot and gap marker of every gatherer is in production with its source;
//! - a gatherer database that is down when the dedup starts does not hold the others back, and
//!   its rows are consumed when it returns, still without duplicates;
//! - the coverage ledger written with the batches: per gatherer, the events it delivered over
//!   every minute are exactly its stored events (its repeated tickers once); the events merged
//!   over every minute are production's events (plus rows the sink found already there); every
//!   gap marker of every gatherer has its uncovered interval; the coverage gaps are exactly the
//!   intersection over the gatherers of their uncovered intervals, and there are none when a
//!   gatherer had full coverage.
//!
//! Every wait polls an observable condition with a deadline; seeds are printed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod dedup_support;
mod gatherer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::time::Instant;

use dedup_support::{
    CHANNELS, Multiset, NAMES, Stepped, allow_connections, assert_kept_rows, assert_truth,
    assert_union, batch_head, cursors, cut_dedup_connections, dedup_toml, gatherer_events,
    production_events, start_gatherer, total, wait_cursors,
};
use gatherer_support::{MARKETS, Replica, Sim, Truth, wait_for};
use kdp_dedup::ledger::{GapInterval, Uncovered, intersect_all};
use kdp_dedup::service::{Dedup, DedupHandle, DedupStats};
use kdp_engine::pg::testing::TestDatabase;
use kdp_ingest::gatherer::GathererHandle;

struct Pipeline {
    /// `None` once stopped (its truth read).
    sim: Option<Sim>,
    replica: Replica,
    dbs: Vec<TestDatabase>,
    gatherers: Vec<GathererHandle>,
    /// Simulator connections of each gatherer (new ones are added after a reconnect).
    conns: Vec<BTreeSet<u64>>,
    prod: TestDatabase,
}

impl Pipeline {
    fn start(seed: u64) -> Pipeline {
        println!("pipeline seed {seed:#x}");
        let sim = Sim::start(seed);
        let markets = sim.busy_markets(MARKETS);
        assert_eq!(markets.len(), MARKETS);
        let mut dbs = Vec::new();
        let mut gatherers: Vec<GathererHandle> = Vec::new();
        let mut conns = Vec::new();
        for _ in NAMES {
            let db = TestDatabase::new().unwrap();
            let (g, opened) = start_gatherer(&sim, &db, &markets);
            conns.push(opened);
            dbs.push(db);
            gatherers.push(g);
        }
        let replica = Replica::new(seed, &markets, CHANNELS);
        let prod = TestDatabase::new().unwrap();
        Pipeline { sim: Some(sim), replica, dbs, gatherers, conns, prod }
    }

    /// Order-book markets on a live simulator connection.
    fn book_markets(&self, conn: u64) -> usize {
        let info = self.sim().handle.registry().connections();
        let c = info.iter().find(|c| c.conn == conn).unwrap();
        c.subscriptions
            .iter()
            .filter(|s| s.channel == "orderbook_delta")
            .map(|s| s.markets.unwrap_or(0))
            .sum()
    }

    fn dedup_config(&self) -> kdp_dedup::config::Checked {
        let text = dedup_toml("", self.prod.url(), "127.0.0.1:0", &self.dbs);
        kdp_dedup::config::DedupConfig::from_toml(&text).unwrap().check().unwrap()
    }

    /// Stops the gatherers (every row they received is committed) and the simulator; returns
    /// each gatherer's last committed gseq and the truth.
    fn stop_gatherers(&mut self) -> (Vec<i64>, Truth) {
        let mut heads = Vec::new();
        for (g, db) in self.gatherers.drain(..).zip(&self.dbs) {
            let stats = g.shutdown().unwrap();
            assert_eq!(stats.fatal(), None);
            heads.push(batch_head(&mut db.connect().unwrap()));
        }
        (heads, self.sim.take().unwrap().finish())
    }
}

impl Stepped for Pipeline {
    fn sim(&self) -> &Sim {
        self.sim.as_ref().unwrap()
    }

    /// Every gatherer committed every frame it was sent (stored + withheld by faults = 3 × the
    /// replica's count; no gatherer can exceed its own share, so the sum is exact).
    fn caught_up(&mut self, exch_seq: u64) {
        self.replica.run_to(exch_seq);
        let expected = 3 * self.replica.expected();
        wait_for("every gatherer to commit every frame sent", || {
            let stored: u64 = self
                .gatherers
                .iter()
                .map(|g| {
                    let r = g.stats().writer.rows;
                    r.delta + r.trade + r.ticker
                })
                .sum();
            stored + self.sim().frames_dropped() == expected
        });
    }
}

/// The coverage ledger the service wrote in the batches' transactions; returns the coverage
/// gaps by market ('' = every market).
fn assert_ledger(
    prod: &mut postgres::Client,
    dbs: &[TestDatabase],
    per: &[Multiset],
    stats: &DedupStats,
) -> BTreeMap<String, Vec<GapInterval>> {
    // Delivered: each gatherer's stored events, counted once each (its repeats are not).
    let sums: BTreeMap<i16, (i64, i64)> = prod
        .query(
            "SELECT gatherer, sum(delivered)::bigint, sum(merged)::bigint FROM coverage_minute \
             GROUP BY gatherer",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let delivered: Vec<u64> =
        (0..3).map(|g| sums.get(&g).map_or(0, |s| u64::try_from(s.0).unwrap())).collect();
    assert_eq!(delivered, per.iter().map(total).collect::<Vec<_>>(), "delivered per gatherer");
    // Merged: production's event rows, plus rows the sink found already in production.
    let merged: u64 = sums.values().map(|s| u64::try_from(s.1).unwrap()).sum();
    let events: i64 = prod
        .query_one(
            "SELECT (SELECT count(*) FROM delta) + (SELECT count(*) FROM trade) \
             + (SELECT count(*) FROM ticker) + (SELECT count(*) FROM market_lifecycle)",
            &[],
        )
        .unwrap()
        .get(0);
    let events = u64::try_from(events).unwrap();
    let conflicts = stats.sink.rows_conflicted;
    println!("ledger: delivered {delivered:?}, merged {merged}, production events {events}");
    if conflicts == 0 {
        assert_eq!(merged, events, "merged over every minute = production's events");
    } else {
        assert!(
            (events..=events + conflicts).contains(&merged),
            "merged {merged} = production's {events} events + at most {conflicts} conflicts"
        );
    }
    // Every gap marker has its uncovered interval(s).
    let uncovered = kdp_dedup::inspect::uncovered(prod, None, i64::MIN).unwrap();
    for (id, db) in dbs.iter().enumerate() {
        let markers: BTreeSet<i64> = db
            .connect()
            .unwrap()
            .query("SELECT gseq FROM gap", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let recorded: BTreeSet<i64> = uncovered
            .iter()
            .filter(|u| usize::from(u.gatherer) == id)
            .map(|u| u.gap_gseq)
            .collect();
        assert_eq!(recorded, markers, "gatherer {id}: every gap marker is in the ledger");
    }
    // Coverage gaps = intersection over the gatherers of their uncovered intervals.
    let key = |u: &Uncovered| u.market.as_deref().unwrap_or("").to_owned();
    let markets: BTreeSet<String> = uncovered.iter().map(key).collect();
    let mut want: BTreeMap<String, Vec<GapInterval>> = BTreeMap::new();
    for m in &markets {
        // A market's own row of a marker replaces that marker's every-market row.
        let own: BTreeSet<(u8, i64)> = uncovered
            .iter()
            .filter(|u| !m.is_empty() && key(u) == *m)
            .map(|u| (u.gatherer, u.gap_gseq))
            .collect();
        let mut per_gatherer = vec![Vec::new(); 3];
        for u in &uncovered {
            let applies =
                key(u) == *m || (u.market.is_none() && !own.contains(&(u.gatherer, u.gap_gseq)));
            if applies {
                per_gatherer[usize::from(u.gatherer)]
                    .push(GapInterval { from_ns: u.from_ns, to_ns: u.to_ns });
            }
        }
        let gaps = intersect_all(&per_gatherer);
        if !gaps.is_empty() {
            want.insert(m.clone(), gaps);
        }
    }
    let mut got: BTreeMap<String, Vec<GapInterval>> = BTreeMap::new();
    for g in kdp_dedup::inspect::coverage_gaps(prod, None).unwrap() {
        got.entry(g.market.as_deref().unwrap_or("").to_owned()).or_default().push(g.interval);
    }
    assert_eq!(got, want, "coverage gaps = the intersection of the gatherers' uncovered intervals");
    println!("ledger: {} uncovered intervals, coverage gaps {got:?}", uncovered.len());
    got
}

/// GET `path` on the dedup's telemetry server: (status line, body).
fn http_get(handle: &DedupHandle, path: &str) -> (String, String) {
    let addr = handle.metrics_addr().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn finish(handle: DedupHandle) -> DedupStats {
    let stats = handle.shutdown().unwrap();
    println!("dedup stats {stats:#?}");
    assert_eq!(
        stats.sink.rows_written + stats.sink.rows_conflicted,
        stats.merge.emitted + stats.merge.kept,
        "every emitted or kept row was written or found in production"
    );
    stats
}

#[test]
fn three_faulty_gatherers_merge_into_the_exact_union() {
    let mut p = Pipeline::start(0x6465_6475_7000_0001);
    let dedup = Dedup::start(p.dedup_config()).unwrap();
    let t0 = Instant::now();
    p.flow(3, 1_000);
    // a: frames dropped on two connections (sequenced channels then show gaps and resync).
    for conn in p.conns[0].iter().take(2) {
        p.sim().control("/faults/drop_next", &format!("{{\"conn\":{conn},\"frames\":7}}"));
    }
    p.flow(2, 1_000);
    // b: a server close; the exchange waits until it resubscribed (so b misses nothing).
    let conn = *p.conns[1].iter().next().unwrap();
    let books = p.book_markets(conn) as u64;
    assert!(books > 0);
    let before = p.gatherers[1].stats().writer.rows;
    let live: BTreeSet<u64> = p.sim().conns().into_iter().collect();
    p.sim().control("/faults/close", &format!("{{\"conn\":{conn},\"code\":1011}}"));
    wait_for("b's disconnect gap and its resubscription snapshots", || {
        let rows = p.gatherers[1].stats().writer.rows;
        rows.gap > before.gap && rows.snapshot >= before.snapshot + books
    });
    let now: BTreeSet<u64> = p.sim().conns().into_iter().collect();
    p.conns[1].extend(now.difference(&live).copied());
    // c: frames dropped on its last connection; and its reader's connection is cut.
    let conn = *p.conns[2].iter().last().unwrap();
    p.sim().control("/faults/drop_next", &format!("{{\"conn\":{conn},\"frames\":11}}"));
    let mut admin = p.prod.connect().unwrap();
    let c_db = p.dbs[2].name().to_owned();
    wait_for("the dedup to read from c", || dedup.health().gatherers[2].connected);
    let cut = cut_dedup_connections(&mut admin, &c_db);
    assert_eq!(cut, 1, "c's reader had one connection");
    p.flow(3, 1_000);
    let (heads, truth) = p.stop_gatherers();
    let waited = wait_cursors(&p.prod.config(), &[(0, heads[0]), (1, heads[1]), (2, heads[2])]);
    let elapsed = t0.elapsed();
    let health = dedup.health();
    println!("health {health:?}");
    let (status, body) = http_get(&dedup, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for series in ["kdp_dedup_rows_merged_total", "kdp_dedup_commit_latency_us_count"] {
        assert!(body.contains(series), "{series} in /metrics");
    }
    let stats = finish(dedup);
    assert!(stats.readers[2].1.connects >= 2, "c's reader reconnected: {:?}", stats.readers[2]);
    let mut prod = p.prod.connect().unwrap();
    let (got, per) = assert_union(&mut prod, &p.dbs);
    assert!(per.iter().any(|g| g != &got), "the faults made the gatherers differ");
    assert_kept_rows(&mut prod, &p.dbs);
    assert_ledger(&mut prod, &p.dbs, &per, &stats);
    assert_truth(&mut prod, &truth, &p.conns);
    let read: u64 = stats.readers.iter().map(|(_, r)| r.rows_read).sum();
    println!(
        "moved {read} gatherer rows into {} production rows in {elapsed:?} (run paced by the \
         simulator; dedup caught up {waited:?} after the gatherers stopped)",
        stats.sink.rows_written
    );
}

#[test]
fn a_gatherer_database_down_at_start_is_consumed_when_it_returns() {
    let mut p = Pipeline::start(0x6465_6475_7000_0002);
    let b_db = p.dbs[1].name().to_owned();
    let mut admin = p.prod.connect().unwrap();
    // b's database refuses new connections (its gatherer's writer keeps the one it has).
    allow_connections(&mut admin, &b_db, false);
    let dedup = Dedup::start(p.dedup_config()).unwrap();
    p.flow(4, 1_000);
    let heads: Vec<i64> = p
        .dbs
        .iter()
        .map(|db| {
            db.connect()
                .map(|mut c| c.query_one("SELECT max(last_gseq) FROM batch", &[]).unwrap().get(0))
                .unwrap_or(0)
        })
        .collect();
    let a_head = heads[0];
    let c_head = heads[2];
    wait_cursors(&p.prod.config(), &[(0, a_head), (2, c_head)]);
    let health = dedup.health();
    assert_eq!(
        health.gatherers.iter().map(|g| g.connected).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert!(health.production.connected);
    let (status, body) = http_get(&dedup, "/health");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"name\":\"b\",\"id\":1,\"connected\":false"), "{body}");
    let (_, metrics) = http_get(&dedup, "/metrics");
    wait_for("the connected gauges to be published", || {
        let (_, m) = http_get(&dedup, "/metrics");
        m.contains("kdp_dedup_gatherer_connected{shard=\"merge\",gatherer=\"a\"} 1")
    });
    assert!(
        metrics.contains("kdp_dedup_gatherer_connected{shard=\"merge\",gatherer=\"b\"} 0"),
        "{metrics}"
    );
    let mut prod = p.prod.connect().unwrap();
    assert_eq!(cursors(&mut prod).get(&1), None, "nothing of b was read");
    // a and c are complete (no faults): production already holds everything.
    let a = gatherer_events(&mut p.dbs[0].connect().unwrap());
    assert_eq!(production_events(&mut prod), a, "a and c carried production alone");
    // b comes back.
    allow_connections(&mut admin, &b_db, true);
    let back = Instant::now();
    p.flow(2, 1_000);
    let (heads, truth) = p.stop_gatherers();
    wait_cursors(&p.prod.config(), &[(0, heads[0]), (1, heads[1]), (2, heads[2])]);
    let caught_up = back.elapsed();
    let stats = finish(dedup);
    let (got, per) = assert_union(&mut prod, &p.dbs);
    assert_eq!(got, gatherer_events(&mut p.dbs[1].connect().unwrap()), "b is complete too");
    assert_kept_rows(&mut prod, &p.dbs);
    // a and c had full coverage (no gap marker): no coverage gap anywhere.
    for id in [0, 2] {
        let mut c = p.dbs[id].connect().unwrap();
        assert_eq!(c.query_one("SELECT count(*) FROM gap", &[]).unwrap().get::<_, i64>(0), 0);
    }
    assert_eq!(assert_ledger(&mut prod, &p.dbs, &per, &stats), BTreeMap::new());
    assert_truth(&mut prod, &truth, &p.conns);
    let b = &stats.readers[1].1;
    assert_eq!(b.read_gseq, heads[1]);
    println!(
        "b: {} rows read after its database returned; all caught up {caught_up:?} later; \
         {} staged batches, {} rows already in production",
        b.rows_read, stats.sink.batches_staged, stats.sink.rows_conflicted
    );
}

#[test]
fn production_down_mid_run_pauses_the_merge_and_loses_nothing() {
    let mut p = Pipeline::start(0x6465_6475_7000_0003);
    let dedup = Dedup::start(p.dedup_config()).unwrap();
    p.flow(2, 1_000);
    let prod_db = p.prod.name().to_owned();
    // Administer from a gatherer database: production refuses connections while it is down.
    let mut admin = p.dbs[0].connect().unwrap();
    wait_for("the first production commit", || dedup.health().production.batches_committed > 0);
    allow_connections(&mut admin, &prod_db, false);
    cut_dedup_connections(&mut admin, &prod_db);
    // The gatherers keep buffering while production is down.
    p.flow(3, 1_000);
    wait_for("/health to report production down (503)", || {
        let (status, _) = http_get(&dedup, "/health");
        status == "HTTP/1.1 503 Service Unavailable" && !dedup.health().production.connected
    });
    let committed = dedup.health().production.batches_committed;
    allow_connections(&mut admin, &prod_db, true);
    p.flow(1, 1_000);
    let (heads, truth) = p.stop_gatherers();
    wait_cursors(&p.prod.config(), &[(0, heads[0]), (1, heads[1]), (2, heads[2])]);
    assert!(dedup.health().production.connected);
    assert!(dedup.health().production.batches_committed > committed);
    let stats = finish(dedup);
    assert!(stats.sink.failures > 0, "writes failed while production was down");
    let mut prod = p.prod.connect().unwrap();
    let (_, per) = assert_union(&mut prod, &p.dbs);
    assert_kept_rows(&mut prod, &p.dbs);
    assert_ledger(&mut prod, &p.dbs, &per, &stats);
    assert_truth(&mut prod, &truth, &p.conns);
}
