//! The REST server as the simulator mounts it (`Simulator::start`): over the real hub task
//! and a seeded engine, what HTTP lists is what the exchange holds, read through
//! `HubHandle`'s `ExchangeQuery`; the simulator's `RestFaults` reach the REST answers.

#![allow(clippy::unwrap_used)]

mod rest_support;

use kdp_sim::market::MarketConfig;
use kdp_sim::transport::hub::Clock;
use kdp_sim::transport::rest::{self, RestConfig, RestFault};
use kdp_sim::transport::{SimConfig, Simulator};
use rest_support::api;

#[tokio::test]
async fn rest_lists_what_the_hub_exchange_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(
        MarketConfig { seed: 11, markets: 2_500, ..MarketConfig::default() },
        dir.path().join("sim.pem"),
    );
    cfg.clock = Clock::Manual;
    cfg.ws_addr = None;
    cfg.wss_addr = None;
    cfg.control_addr = None;
    cfg.rest = RestConfig { rate_limit: None };
    let sim = Simulator::start(cfg).await.unwrap();
    let handle = sim.hub().clone();
    handle.advance(40_000).await.unwrap();
    let addr = sim.rest_addr().unwrap();

    // The catalog, page by page, in id order.
    let expected: Vec<String> =
        handle.query(|ex| ex.markets().iter().map(|m| m.ticker.clone()).collect()).await.unwrap();
    assert!(expected.len() >= 2_500);
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api(addr, &format!("/markets?limit=1000&cursor={cursor}")).await.json();
        seen.extend(
            page["markets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["ticker"].as_str().unwrap().to_owned()),
        );
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen, expected);

    // One market and its book, as the engine holds them.
    let (ticker, status, book) = handle
        .query(|ex| {
            let id = (0..ex.markets().len() as u32)
                .find(|&id| !ex.book(id, None).yes.is_empty())
                .unwrap();
            let m = ex.market(id);
            (m.ticker.clone(), rest::status_str(m.status), ex.book(id, None))
        })
        .await
        .unwrap();
    let market = api(addr, &format!("/markets/{ticker}")).await.json();
    assert_eq!(market["market"]["status"], status);
    let ob = api(addr, &format!("/markets/{ticker}/orderbook")).await.json();
    let yes: Vec<(String, String)> =
        book.yes.iter().map(|l| (rest::dollars(l.price_micros), rest::fp(l.size_centi))).collect();
    let listed: Vec<(String, String)> = ob["orderbook_fp"]["yes_dollars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l[0].as_str().unwrap().to_owned(), l[1].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(listed, yes);

    // Every trade so far, newest first, each once.
    let traded = handle.query(|ex| ex.stats().trades).await.unwrap();
    assert!(traded > 0);
    let mut ids = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let page = api(addr, &format!("/markets/trades?limit=1000&cursor={cursor}")).await.json();
        for t in page["trades"].as_array().unwrap() {
            assert!(ids.insert(t["trade_id"].as_str().unwrap().to_owned()), "trade listed twice");
        }
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(ids.len() as u64, traded);

    // The simulator's fault switches reach the REST answers.
    sim.rest_faults().fail_next(1, RestFault::ServiceUnavailable);
    assert_eq!(api(addr, "/exchange/status").await.status, 503);
    assert_eq!(api(addr, "/exchange/status").await.status, 200);

    sim.shutdown().await;
}
