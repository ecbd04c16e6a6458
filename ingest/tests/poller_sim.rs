//! The snapshot poller against the simulator's REST server (own tokio runtime, manual hub
//! clock, and a manual clock shared by the server's rate limiter and the client's bucket, so
//! token counts are exact): the budget is never exceeded, 429 bursts are backed off and
//! recovered from, gap-marked markets go first, and a snapshot equals the engine's book.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;

use kdp_engine::event::Level;
use kdp_ingest::poller::Poller;
use kdp_ingest::registry::RegistryChange;
use kdp_ingest::rest::{
    BACKOFF_MS_MIN, Clock, READ_CAPACITY_DEFAULT, READ_REFILL_PER_S_DEFAULT, RestClient, RestConfig,
};
use kdp_ingest::store::{Record, SnapshotSource};
use kdp_sim::market::MarketConfig;
use kdp_sim::transport::hub::Clock as HubClock;
use kdp_sim::transport::rest::{
    ManualClock, RateLimit, RestClock, RestConfig as SimRestConfig, RestFault,
};
use kdp_sim::transport::{SimConfig, SimHandle, Simulator};

const S_NS: i64 = 1_000_000_000;
const MS_NS: i64 = 1_000_000;

/// The client's clock: the shared manual clock; sleeping advances it.
struct TestClock(ManualClock);

impl Clock for TestClock {
    fn now_ns(&self) -> i64 {
        self.0.now_ns()
    }
    fn unix_ns(&self) -> i64 {
        self.0.now_ns()
    }
    fn sleep_ns(&self, ns: i64) {
        self.0.advance_ns(ns);
    }
}

struct Sim {
    rt: tokio::runtime::Runtime,
    sim: Option<SimHandle>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// A simulator whose REST limiter is Kalshi's Basic budget on the shared manual clock.
    fn start(seed: u64, markets: usize) -> Sim {
        println!("simulator market seed {seed}, {markets} markets");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let mut cfg = SimConfig::new(
            MarketConfig { seed, markets, ..MarketConfig::default() },
            dir.path().join("sim.pem"),
        );
        cfg.clock = HubClock::Manual;
        cfg.ws_addr = None;
        cfg.wss_addr = None;
        cfg.control_addr = None;
        cfg.rest = SimRestConfig {
            rate_limit: Some(RateLimit {
                capacity: READ_CAPACITY_DEFAULT,
                refill_per_s: READ_REFILL_PER_S_DEFAULT,
                clock: RestClock::Manual(clock.clone()),
            }),
        };
        let sim = rt.block_on(Simulator::start(cfg)).unwrap();
        rt.block_on(sim.hub().advance(20_000)).unwrap();
        Sim { rt, sim: Some(sim), clock, _dir: dir }
    }

    fn handle(&self) -> &SimHandle {
        self.sim.as_ref().unwrap()
    }

    fn client(&self) -> RestClient {
        let cfg = RestConfig::new(self.handle().rest_url().unwrap());
        RestClient::new(cfg, Arc::new(TestClock(self.clock.clone()))).unwrap()
    }

    /// Every market ticker with its book as the engine holds it now.
    fn books(&self) -> Vec<(Arc<str>, Vec<Level>, Vec<Level>)> {
        let hub = self.handle().hub().clone();
        self.rt
            .block_on(hub.query(|ex| {
                (0..ex.markets().len() as u32)
                    .map(|id| {
                        let b = ex.book(id, None);
                        let conv = |v: &[kdp_sim::market::model::Level]| {
                            v.iter()
                                .map(|l| Level {
                                    price_micros: l.price_micros,
                                    size_centi: l.size_centi,
                                })
                                .collect::<Vec<_>>()
                        };
                        (Arc::from(ex.market(id).ticker.as_str()), conv(&b.yes), conv(&b.no))
                    })
                    .collect()
            }))
            .unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

fn poller_over(tickers: &[Arc<str>]) -> Poller {
    let mut p = Poller::new();
    p.apply(&RegistryChange { add: tickers.to_vec(), remove: vec![] });
    p
}

fn snapshot_market(r: Record) -> (Arc<str>, Vec<Level>, Vec<Level>, i64) {
    match r {
        Record::Snapshot(s) => {
            let SnapshotSource::Rest { ts_recv_ns } = s.source else {
                panic!("not a REST snapshot")
            };
            (s.market, s.yes.into_vec(), s.no.into_vec(), ts_recv_ns)
        }
        other => panic!("not a snapshot: {other:?}"),
    }
}

#[test]
fn polls_stay_within_the_budget_and_snapshots_equal_the_engine_books() {
    let sim = Sim::start(5, 300);
    let books = sim.books();
    let tickers: Vec<Arc<str>> = books.iter().map(|b| b.0.clone()).collect();
    let mut poller = poller_over(&tickers);
    let mut client = sim.client();
    let polls = 300_i64;
    for i in 0..polls {
        let (market, yes, no, _) = snapshot_market(poller.poll_one(&mut client).unwrap().unwrap());
        let expected = &books[i as usize];
        assert_eq!((&market, &yes, &no), (&expected.0, &expected.1, &expected.2));
    }
    let stats = client.stats();
    assert_eq!(stats.rate_limited, 0, "the server never refused: the client kept to its budget");
    assert_eq!(stats.requests, polls as u64);
    // Exactly the time the budget demands: a burst of 40, then 20/s.
    let capacity = i64::from(READ_CAPACITY_DEFAULT);
    let expected_ns = (polls - capacity) * S_NS / i64::from(READ_REFILL_PER_S_DEFAULT);
    assert_eq!(sim.clock.now_ns(), expected_ns);
    assert_eq!(stats.throttled_ns, expected_ns);
    assert_eq!(poller.stats().snapshots, polls as u64);
}

#[test]
fn a_429_burst_is_backed_off_and_recovered() {
    let sim = Sim::start(6, 50);
    let tickers: Vec<Arc<str>> = sim.books().into_iter().map(|b| b.0).collect();
    let mut poller = poller_over(&tickers);
    let mut client = sim.client();
    sim.handle().rest_faults().fail_next(4, RestFault::TooManyRequests);
    sim.handle().rest_faults().fail_next(1, RestFault::ServiceUnavailable);
    let record = poller.poll_one(&mut client).unwrap().unwrap();
    assert_eq!(snapshot_market(record).0, tickers[0]);
    let stats = client.stats();
    assert_eq!((stats.rate_limited, stats.server_errors, stats.requests), (4, 1, 6));
    // 100, 200, 400, 800, 1600 ms.
    let min = i64::try_from(BACKOFF_MS_MIN).unwrap() * MS_NS;
    assert_eq!(stats.backoff_ns, min * (1 + 2 + 4 + 8 + 16));
    // After a 429 the client empties its own bucket; each backoff (≥ 100 ms) refills at
    // least two tokens, so no further wait was needed.
    assert_eq!(stats.throttled_ns, 0);
    for _ in 0..60 {
        poller.poll_one(&mut client).unwrap().unwrap();
    }
    assert_eq!(client.stats().rate_limited, 4, "recovered: no further 429");
}

#[test]
fn gap_marked_markets_are_polled_first_then_round_robin() {
    let sim = Sim::start(8, 20);
    let tickers: Vec<Arc<str>> = sim.books().into_iter().map(|b| b.0).take(5).collect();
    let mut poller = poller_over(&tickers);
    let mut client = sim.client();
    poller.mark_gap(&tickers[3]);
    poller.mark_gap(&tickers[1]);
    poller.mark_gap(&tickers[3]);
    poller.mark_gap("NOT-TRACKED");
    let order: Vec<Arc<str>> =
        (0..7).map(|_| snapshot_market(poller.poll_one(&mut client).unwrap().unwrap()).0).collect();
    let t = |i: usize| tickers[i].clone();
    assert_eq!(order, [t(3), t(1), t(0), t(1), t(2), t(3), t(4)]);
    assert_eq!(poller.stats().gap_snapshots, 2);

    // Removed markets leave the round and the gap queue.
    poller.mark_gap(&tickers[2]);
    poller.apply(&RegistryChange { add: vec![], remove: vec![t(2), t(0)] });
    let order: Vec<Arc<str>> =
        (0..3).map(|_| snapshot_market(poller.poll_one(&mut client).unwrap().unwrap()).0).collect();
    assert_eq!(order, [t(1), t(3), t(4)]);

    // An unknown market is a 404, not retried; a failed gap market stays first.
    poller.apply(&RegistryChange { add: vec![Arc::from("NO-SUCH-MARKET")], remove: vec![] });
    poller.mark_gap("NO-SUCH-MARKET");
    let requests = client.stats().requests;
    assert!(poller.poll_one(&mut client).unwrap_err().is_not_found());
    assert_eq!(client.stats().requests, requests + 1);
    assert_eq!(poller.next_market(), Some((Arc::from("NO-SUCH-MARKET"), true)));
}
