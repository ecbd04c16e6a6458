//! The snapshot poller against the simulator's REST server (own tokio runtime, manual hub
//! clock, and a manual clock shared by the server's rate limiter and the client's bucket, so
//! token counts are exact): the budget is never exceeded, 429 bursts are backed off and
//! recovered from, gap-marked markets go first, and a snapshot equals the engine's book.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;

use kdp_engine::event::Level;
use kdp_ingest::poller::Poller;
use kdp_ingest::registry::RegistryChange;
use kdp_ingest::rest::{BACKOFF_MS_MIN, READ_CAPACITY_DEFAULT, READ_REFILL_PER_S_DEFAULT};
use kdp_ingest::store::{Record, SnapshotSource};
use kdp_sim::transport::rest::{
    ManualClock, RateLimit, RestClock, RestConfig as SimRestConfig, RestFault,
};

mod rest_sim_support;
use rest_sim_support::Sim;

const S_NS: i64 = 1_000_000_000;
const MS_NS: i64 = 1_000_000;

/// A simulator whose REST limiter is Kalshi's Basic budget on a manual clock shared with the
/// client, and that clock.
fn start(seed: u64, markets: usize) -> (Sim, ManualClock) {
    let clock = ManualClock::new();
    let rest = SimRestConfig {
        rate_limit: Some(RateLimit {
            capacity: READ_CAPACITY_DEFAULT,
            refill_per_s: READ_REFILL_PER_S_DEFAULT,
            clock: RestClock::Manual(clock.clone()),
        }),
    };
    (Sim::start(seed, markets, rest, 20_000), clock)
}

/// Every market ticker with its book as the engine holds it now.
fn books(sim: &Sim) -> Vec<(Arc<str>, Vec<Level>, Vec<Level>)> {
    let hub = sim.handle().hub().clone();
    sim.rt
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
    let (sim, clock) = start(5, 300);
    let books = books(&sim);
    let tickers: Vec<Arc<str>> = books.iter().map(|b| b.0.clone()).collect();
    let mut poller = poller_over(&tickers);
    let mut client = sim.client(&clock);
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
    assert_eq!(clock.now_ns(), expected_ns);
    assert_eq!(stats.throttled_ns, expected_ns);
    assert_eq!(poller.stats().snapshots, polls as u64);
}

#[test]
fn a_429_burst_is_backed_off_and_recovered() {
    let (sim, clock) = start(6, 50);
    let tickers: Vec<Arc<str>> = books(&sim).into_iter().map(|b| b.0).collect();
    let mut poller = poller_over(&tickers);
    let mut client = sim.client(&clock);
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
    let (sim, clock) = start(8, 20);
    let tickers: Vec<Arc<str>> = books(&sim).into_iter().map(|b| b.0).take(5).collect();
    let mut poller = poller_over(&tickers);
    let mut client = sim.client(&clock);
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
