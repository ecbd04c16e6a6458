//! The read rate limit (token bucket on a manual clock, so counts are exact) and the fault
//! hooks, over real HTTP on loopback.

#![allow(clippy::unwrap_used)]

mod rest_support;

use kdp_sim::transport::rest::{
    self, ExchangeStatusFlags, ManualClock, RateLimit, RestClock, RestConfig, RestFault, RestFaults,
};
use rest_support::{Fixture, FixtureHub, api, serve};
use serde_json::json;

const MS_NS: i64 = 1_000_000;

/// Fires `n` requests concurrently and returns how many got 200 and how many 429; every 429
/// must carry exactly Kalshi's body and no retry hints.
async fn burst(addr: std::net::SocketAddr, n: usize) -> (usize, usize) {
    let answers = futures_join(addr, n).await;
    let mut ok = 0;
    let mut limited = 0;
    for a in answers {
        match a.status {
            200 => ok += 1,
            429 => {
                assert_eq!(a.body, r#"{"error":"too many requests"}"#);
                assert_eq!(a.body, rest::TOO_MANY_REQUESTS_BODY);
                assert!(a.header("retry-after").is_none());
                assert!(a.headers.iter().all(|(k, _)| !k.starts_with("x-ratelimit")));
                limited += 1;
            }
            other => panic!("unexpected status {other}: {}", a.body),
        }
    }
    (ok, limited)
}

async fn futures_join(addr: std::net::SocketAddr, n: usize) -> Vec<rest_support::Answer> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let path = if i % 2 == 0 { "/markets?limit=5" } else { "/exchange/status" };
            tokio::spawn(async move { api(addr, path).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn token_bucket_counts_are_exact_on_a_manual_clock() {
    let clock = ManualClock::new();
    let cfg = RestConfig {
        rate_limit: Some(RateLimit {
            capacity: rest::READ_CAPACITY_DEFAULT,
            refill_per_s: rest::READ_REFILL_PER_S_DEFAULT,
            clock: RestClock::Manual(clock.clone()),
        }),
    };
    assert_eq!(rest::READ_CAPACITY_DEFAULT, 40, "Basic: 20 req/s with 2 s of burst");
    let addr = serve(FixtureHub::new(Fixture::catalog(1, 2, 10)), cfg, RestFaults::new()).await;

    // Full bucket: 40 pass, the other 35 are refused (clock frozen, so no refill).
    assert_eq!(burst(addr, 75).await, (40, 35));
    // Refused requests take nothing: still empty, still refused.
    assert_eq!(burst(addr, 3).await, (0, 3));
    // 20 req/s: 149 ms refill 2.98 requests → exactly 2 pass.
    clock.advance_ns(149 * MS_NS);
    assert_eq!(burst(addr, 5).await, (2, 3));
    // The 0.98 left over plus 1 ms (0.02) makes a whole request.
    clock.advance_ns(MS_NS);
    assert_eq!(burst(addr, 2).await, (1, 1));
    // Refill stops at capacity: an hour later the burst is 40 again, not 72,000.
    clock.advance_ns(3_600_000 * MS_NS);
    assert_eq!(burst(addr, 50).await, (40, 10));
    // Every endpoint, including unknown paths, sits behind the limiter.
    assert_eq!(api(addr, "/nope").await.status, 429);
    assert_eq!(api(addr, "/series/KXS000").await.status, 429);
}

#[tokio::test]
async fn fault_bursts_answer_in_queue_order_then_recover() {
    let faults = RestFaults::new();
    let addr =
        serve(FixtureHub::new(Fixture::catalog(1, 1, 1)), RestConfig::default(), faults.clone())
            .await;
    faults.fail_next(2, RestFault::ServiceUnavailable);
    faults.fail_next(1, RestFault::InternalError);
    faults.fail_next(1, RestFault::TooManyRequests);
    assert_eq!(faults.pending(), 4);

    let mut statuses = Vec::new();
    for _ in 0..6 {
        let a = api(addr, "/markets").await;
        match a.status {
            503 => assert_eq!(
                a.json(),
                json!({"error": {"code": "service_unavailable", "message": "injected fault"}})
            ),
            500 => assert_eq!(
                a.json(),
                json!({"error": {"code": "internal_server_error", "message": "injected fault"}})
            ),
            429 => assert_eq!(a.body, rest::TOO_MANY_REQUESTS_BODY),
            _ => {}
        }
        statuses.push(a.status);
    }
    assert_eq!(statuses, [503, 503, 500, 429, 200, 200]);
    assert_eq!(faults.pending(), 0);

    faults.fail_next(5, RestFault::InternalError);
    faults.clear();
    assert_eq!(api(addr, "/markets").await.status, 200);
}

#[tokio::test]
async fn exchange_status_follows_the_switches() {
    let faults = RestFaults::new();
    let addr =
        serve(FixtureHub::new(Fixture::catalog(1, 1, 1)), RestConfig::default(), faults.clone())
            .await;
    let shard = |active: bool, trading: bool| {
        json!([{"exchange_index": 0, "description": "Default", "exchange_active": active,
                "trading_active": trading, "intra_exchange_transfers_active": active}])
    };
    assert_eq!(
        api(addr, "/exchange/status").await.json(),
        json!({"exchange_active": true, "trading_active": true, "exchange_estimated_resume_time": null,
               "intra_exchange_transfers_active": true, "exchange_index_statuses": shard(true, true)})
    );
    faults.set_exchange_status(ExchangeStatusFlags {
        exchange_active: false,
        trading_active: false,
        estimated_resume_ns: Some(rest_support::NOW_NS + 7_200_000_000_000),
    });
    assert_eq!(
        api(addr, "/exchange/status").await.json(),
        json!({"exchange_active": false, "trading_active": false,
               "exchange_estimated_resume_time": "2026-11-29T14:00:00Z",
               "intra_exchange_transfers_active": false, "exchange_index_statuses": shard(false, false)})
    );
}
