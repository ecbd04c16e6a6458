//! REST endpoints over real HTTP on loopback: paging, filters, single objects, errors.

#![allow(clippy::unwrap_used)]

mod rest_support;

use std::collections::HashSet;

use kdp_sim::market::model::MarketStatus;
use kdp_sim::transport::rest::{RestConfig, RestFaults};
use rest_support::{Fixture, FixtureHub, STATUS_CYCLE, api, serve};
use serde_json::{Value, json};

fn tickers(page: &Value) -> Vec<String> {
    page["markets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ticker"].as_str().unwrap().to_owned())
        .collect()
}

fn unlimited() -> RestConfig {
    RestConfig { rate_limit: None }
}

#[tokio::test]
async fn paging_ten_thousand_markets_returns_each_once_in_catalog_order() {
    // 10 series × 20 events × 50 markets = 10,000.
    let fx = Fixture::catalog(10, 20, 50);
    let expected: Vec<String> = fx.markets.iter().map(|m| m.ticker.clone()).collect();
    assert_eq!(expected.len(), 10_000);
    let hub = FixtureHub::new(fx);
    let addr = serve(hub.clone(), unlimited(), RestFaults::new()).await;

    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let path = if cursor.is_empty() {
            "/markets?limit=1000".to_owned()
        } else {
            format!("/markets?limit=1000&cursor={cursor}")
        };
        let answer = api(addr, &path).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let page = answer.json();
        seen.extend(tickers(&page));
        pages += 1;
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(pages, 10);
    assert_eq!(seen, expected);

    // Stable: a second pass is identical, and a market appended mid-way shows up once, last.
    let first = api(addr, "/markets?limit=1000").await.json();
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let added = {
        let mut fx = hub.fixture.lock().unwrap();
        let id = fx.push_market(3);
        fx.markets[id as usize].ticker.clone()
    };
    let mut rest = tickers(&first);
    let mut cursor = cursor;
    while !cursor.is_empty() {
        let page = api(addr, &format!("/markets?limit=1000&cursor={cursor}")).await.json();
        rest.extend(tickers(&page));
        cursor = page["cursor"].as_str().unwrap().to_owned();
    }
    let mut expected_after = expected.clone();
    expected_after.push(added);
    assert_eq!(rest, expected_after);
}

#[tokio::test]
async fn markets_limit_default_bounds_and_bad_cursor() {
    let addr =
        serve(FixtureHub::new(Fixture::catalog(2, 3, 40)), unlimited(), RestFaults::new()).await;
    // 240 markets: default page 100, limit=0 = default.
    let page = api(addr, "/markets").await.json();
    assert_eq!(tickers(&page).len(), 100);
    assert_ne!(page["cursor"], "");
    assert_eq!(tickers(&api(addr, "/markets?limit=0").await.json()).len(), 100);
    assert_eq!(tickers(&api(addr, "/markets?limit=1").await.json()).len(), 1);
    let all = api(addr, "/markets?limit=240").await.json();
    assert_eq!(tickers(&all).len(), 240);
    assert_eq!(all["cursor"], "", "a page that ends the catalog has an empty cursor");

    for bad in
        ["limit=1001", "limit=-1", "limit=abc", "cursor=nonsense", "status=active", "status=OPEN"]
    {
        let answer = api(addr, &format!("/markets?{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}");
        let body = answer.json();
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
        assert!(body["error"]["message"].is_string(), "{bad}");
    }
    // A cursor from another listing is refused.
    let events = api(addr, "/events?limit=1").await.json();
    let ev_cursor = events["cursor"].as_str().unwrap();
    assert_eq!(api(addr, &format!("/markets?cursor={ev_cursor}")).await.status, 400);
}

#[tokio::test]
async fn markets_status_filters_map_to_kalshi_statuses() {
    let fx = Fixture::catalog(2, 2, 30);
    let statuses: Vec<MarketStatus> = fx.markets.iter().map(|m| m.status).collect();
    let addr = serve(FixtureHub::new(fx), unlimited(), RestFaults::new()).await;
    let cases: [(&str, &[&str]); 5] = [
        ("unopened", &["initialized"]),
        ("open", &["active"]),
        ("paused", &["inactive"]),
        ("closed", &["closed", "determined"]),
        ("settled", &["finalized"]),
    ];
    for (filter, wire) in cases {
        let page = api(addr, &format!("/markets?status={filter}&limit=1000")).await.json();
        let markets = page["markets"].as_array().unwrap();
        let per_status = statuses.len() / STATUS_CYCLE.len();
        assert_eq!(markets.len(), per_status * wire.len(), "{filter}");
        for m in markets {
            assert!(wire.contains(&m["status"].as_str().unwrap()), "{filter}: {}", m["status"]);
        }
    }
    // Filtered paging: 10 per page over the 40 `closed` (closed + determined) markets, each once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page =
            api(addr, &format!("/markets?status=closed&limit=10&cursor={cursor}")).await.json();
        seen.extend(tickers(&page));
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 40);

    // Timestamp windows (Unix s, inclusive): settled 30 min before NOW, close 24 h after.
    let now_s = rest_support::NOW_NS / 1_000_000_000;
    let count = |body: Value| body["markets"].as_array().unwrap().len();
    let settled_at = now_s - 1_800;
    assert_eq!(count(api(addr, &format!("/markets?min_settled_ts={settled_at}")).await.json()), 20);
    assert_eq!(
        count(
            api(addr, &format!("/markets?status=settled&max_settled_ts={settled_at}")).await.json()
        ),
        20
    );
    assert_eq!(
        count(api(addr, &format!("/markets?min_settled_ts={}", settled_at + 1)).await.json()),
        0
    );
    assert_eq!(
        count(
            api(addr, &format!("/markets?status=open&min_created_ts={}", now_s - 48 * 3600))
                .await
                .json()
        ),
        20
    );
    assert_eq!(count(api(addr, &format!("/markets?max_close_ts={now_s}")).await.json()), 0);
    assert_eq!(count(api(addr, "/markets?mve_filter=only").await.json()), 0);
    assert_eq!(count(api(addr, "/markets?mve_filter=exclude&limit=1000").await.json()), 120);
    for bad in [
        "status=closed&min_created_ts=1",
        "status=open&min_close_ts=1",
        "min_close_ts=1&min_settled_ts=1",
        "mve_filter=all",
    ] {
        let answer = api(addr, &format!("/markets?{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert_eq!(answer.json()["error"]["code"], "bad_request", "{bad}");
    }
}

#[tokio::test]
async fn markets_event_series_and_tickers_filters() {
    let fx = Fixture::catalog(3, 2, 5);
    let addr = serve(FixtureHub::new(fx), unlimited(), RestFaults::new()).await;
    let page = api(addr, "/markets?event_ticker=KXS001-26NOV001").await.json();
    assert_eq!(
        tickers(&page),
        (15..20).map(|i| format!("KXS001-26NOV001-M{i:05}")).collect::<Vec<_>>()
    );
    let page = api(addr, "/markets?series_ticker=KXS002&limit=1000").await.json();
    assert_eq!(tickers(&page).len(), 10);
    assert!(tickers(&page).iter().all(|t| t.starts_with("KXS002-")));
    // Order follows the catalog, not the request; unknown and duplicate tickers drop out.
    let page = api(
        addr,
        "/markets?tickers=KXS002-26NOV000-M00020,KXS000-26NOV000-M00001,NOPE,KXS000-26NOV000-M00001",
    )
    .await
    .json();
    assert_eq!(tickers(&page), ["KXS000-26NOV000-M00001", "KXS002-26NOV000-M00020"]);
    let page = api(addr, "/markets?tickers=KXS002-26NOV000-M00020,KXS000-26NOV000-M00001&limit=1")
        .await
        .json();
    assert_eq!(tickers(&page), ["KXS000-26NOV000-M00001"]);
    let next = page["cursor"].as_str().unwrap();
    let page2 = api(
        addr,
        &format!(
            "/markets?tickers=KXS002-26NOV000-M00020,KXS000-26NOV000-M00001&limit=1&cursor={next}"
        ),
    )
    .await
    .json();
    assert_eq!(tickers(&page2), ["KXS002-26NOV000-M00020"]);
    assert_eq!(page2["cursor"], "");
    // Filters combine; an unknown event is an empty page, not an error.
    let page = api(addr, "/markets?series_ticker=KXS000&status=open").await.json();
    assert_eq!(tickers(&page), ["KXS000-26NOV000-M00001", "KXS000-26NOV001-M00007"]);
    let page = api(addr, "/markets?event_ticker=NOPE").await.json();
    assert_eq!(page, json!({"markets": [], "cursor": ""}));
}

#[tokio::test]
async fn single_market_and_404() {
    let addr =
        serve(FixtureHub::new(Fixture::catalog(1, 1, 6)), unlimited(), RestFaults::new()).await;
    let answer = api(addr, "/markets/KXS000-26NOV000-M00004").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let m = &answer.json()["market"];
    // Market 4: determined (cycle), grid 4 % 3 = 1 deci_cent, 4 levels a side, result yes.
    assert_eq!(m["ticker"], "KXS000-26NOV000-M00004");
    assert_eq!(m["event_ticker"], "KXS000-26NOV000");
    assert_eq!(m["status"], "determined");
    assert_eq!(m["result"], "yes");
    assert_eq!(m["settlement_value_dollars"], "1.0000");
    assert!(m.get("settlement_ts").is_none(), "settlement_ts only once finalized");
    assert_eq!(m["price_level_structure"], "deci_cent");
    assert_eq!(m["price_ranges"], json!([{"start": "0.0000", "end": "1.0000", "step": "0.0010"}]));
    assert_eq!(m["yes_bid_dollars"], "0.1300");
    assert_eq!(m["yes_bid_size_fp"], "10.03");
    assert_eq!(m["yes_ask_dollars"], "0.4700");
    assert_eq!(m["yes_ask_size_fp"], "2.53");
    assert_eq!(m["no_bid_dollars"], "0.5300");
    assert_eq!(m["no_ask_dollars"], "0.8700");
    assert_eq!(m["last_price_dollars"], "0.4200");
    assert_eq!(m["volume_fp"], "123.45");
    assert_eq!(m["open_interest_fp"], "6.78");
    assert_eq!(m["notional_value_dollars"], "1.0000");
    assert_eq!(m["created_time"], "2026-11-27T12:00:00Z");
    assert_eq!(m["close_time"], "2026-11-30T12:00:00.0005Z");
    assert_eq!(m["market_type"], "binary");
    assert_eq!(m["exchange_index"], 0);

    let finalized = api(addr, "/markets/KXS000-26NOV000-M00005").await.json();
    assert_eq!(finalized["market"]["status"], "finalized");
    assert_eq!(finalized["market"]["result"], "no");
    assert_eq!(finalized["market"]["settlement_value_dollars"], "0.0000");
    assert_eq!(finalized["market"]["settlement_ts"], "2026-11-29T11:30:00Z");
    assert_eq!(finalized["market"]["settlement_timer_seconds"], 1800);

    let missing = api(addr, "/markets/KXNOPE-1").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    assert_eq!(missing.json()["error"]["message"], "market KXNOPE-1 not found");
    assert_eq!(api(addr, "/nope").await.status, 404);
}

#[tokio::test]
async fn orderbook_depth() {
    let addr =
        serve(FixtureHub::new(Fixture::catalog(1, 1, 6)), unlimited(), RestFaults::new()).await;
    let t = "KXS000-26NOV000-M00004"; // 4 levels a side
    let full = json!({"orderbook_fp": {
        "yes_dollars": [["0.1000","10.00"],["0.1100","10.01"],["0.1200","10.02"],["0.1300","10.03"]],
        "no_dollars": [["0.5000","2.50"],["0.5100","2.51"],["0.5200","2.52"],["0.5300","2.53"]],
    }});
    assert_eq!(api(addr, &format!("/markets/{t}/orderbook")).await.json(), full);
    assert_eq!(api(addr, &format!("/markets/{t}/orderbook?depth=0")).await.json(), full);
    assert_eq!(api(addr, &format!("/markets/{t}/orderbook?depth=100")).await.json(), full);
    assert_eq!(
        api(addr, &format!("/markets/{t}/orderbook?depth=2")).await.json(),
        json!({"orderbook_fp": {
            "yes_dollars": [["0.1200","10.02"],["0.1300","10.03"]],
            "no_dollars": [["0.5200","2.52"],["0.5300","2.53"]],
        }})
    );
    assert_eq!(
        api(addr, "/markets/KXS000-26NOV000-M00000/orderbook").await.json(),
        json!({"orderbook_fp": {"yes_dollars": [], "no_dollars": []}})
    );
    for bad in ["depth=101", "depth=-1", "depth=x"] {
        assert_eq!(api(addr, &format!("/markets/{t}/orderbook?{bad}")).await.status, 400, "{bad}");
    }
    assert_eq!(api(addr, "/markets/KXNOPE/orderbook").await.status, 404);
}

#[tokio::test]
async fn trades_paging_newest_first_and_filters() {
    let mut fx = Fixture::catalog(1, 1, 3);
    fx.push_trades(50, 3);
    let hub = FixtureHub::new(fx);
    let addr = serve(hub.clone(), unlimited(), RestFaults::new()).await;

    let first = api(addr, "/markets/trades").await.json();
    assert_eq!(first["trades"].as_array().unwrap().len(), 50);
    assert_eq!(first["cursor"], "");
    assert_eq!(
        first["trades"][0],
        json!({
            "trade_id": "00000000-0000-0000-0000-0000000001f4",
            "ticker": "KXS000-26NOV000-M00001",
            "count_fp": "136.49",
            "yes_price_dollars": "0.4500",
            "no_price_dollars": "0.5500",
            "taker_side": "yes",
            "taker_outcome_side": "yes",
            "taker_book_side": "bid",
            "is_block_trade": false,
            "created_time": "2026-11-29T11:00:50.000123Z",
        })
    );

    // Pages of 7, newest first, each trade once; a trade arriving mid-paging does not shift pages.
    let mut ids = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = api(addr, &format!("/markets/trades?limit=7&cursor={cursor}")).await.json();
        ids.extend(
            page["trades"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["trade_id"].as_str().unwrap().to_owned()),
        );
        if pages == 0 {
            hub.fixture.lock().unwrap().push_trades(1, 3);
        }
        pages += 1;
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 8);
    let expected: Vec<String> = first["trades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trade_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected);

    // ticker filter, time window (Unix s, inclusive), block-trade filter.
    let page = api(addr, "/markets/trades?ticker=KXS000-26NOV000-M00002&limit=1000").await.json();
    let trades = page["trades"].as_array().unwrap();
    assert_eq!(trades.len(), 16);
    assert!(trades.iter().all(|t| t["ticker"] == "KXS000-26NOV000-M00002"));
    // Trade n (1-based) at NOW − 1 h + n s: n = 10..=20 lie in [t0+10, t0+20].
    let t0 = rest_support::NOW_NS / 1_000_000_000 - 3600;
    let page =
        api(addr, &format!("/markets/trades?min_ts={}&max_ts={}", t0 + 10, t0 + 20)).await.json();
    assert_eq!(page["trades"].as_array().unwrap().len(), 11);
    assert_eq!(page["trades"][0]["created_time"], "2026-11-29T11:00:20.000123Z");
    assert_eq!(
        api(addr, "/markets/trades?is_block_trade=true").await.json(),
        json!({"trades": [], "cursor": ""})
    );
    assert_eq!(
        api(addr, "/markets/trades?ticker=NOPE").await.json(),
        json!({"trades": [], "cursor": ""})
    );
    for bad in ["limit=1001", "min_ts=x", "cursor=bm9wZQ", "is_block_trade=1"] {
        assert_eq!(api(addr, &format!("/markets/trades?{bad}")).await.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn events_and_series() {
    // 3 series × 150 events × 2 markets: 450 events, default page 200.
    let addr =
        serve(FixtureHub::new(Fixture::catalog(3, 150, 2)), unlimited(), RestFaults::new()).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api(addr, &format!("/events?cursor={cursor}")).await.json();
        assert_eq!(page["milestones"], json!([]));
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 200);
        assert!(events.iter().all(|e| e.get("markets").is_none()));
        seen.extend(events.iter().map(|e| e["event_ticker"].as_str().unwrap().to_owned()));
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 450);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 450);
    assert_eq!(seen[0], "KXS000-26NOV000");

    let page =
        api(addr, "/events?series_ticker=KXS001&limit=2&with_nested_markets=true").await.json();
    let e = &page["events"][0];
    assert_eq!(e["event_ticker"], "KXS001-26NOV000");
    assert_eq!(e["series_ticker"], "KXS001");
    assert_eq!(e["mutually_exclusive"], true);
    assert_eq!(e["collateral_return_type"], "MECNET");
    assert_eq!(e["category"], "Economics");
    let nested: Vec<&str> =
        e["markets"].as_array().unwrap().iter().map(|m| m["ticker"].as_str().unwrap()).collect();
    assert_eq!(nested, ["KXS001-26NOV000-M00300", "KXS001-26NOV000-M00301"]);
    assert_ne!(page["cursor"], "");

    // Event status matches any child market: markets 2k, 2k+1 have statuses (2k % 6, 2k+1 % 6);
    // `settled` (finalized = 5) hits events whose second market is 5 mod 6, i.e. k ≡ 2 mod 3.
    let page = api(addr, "/events?status=settled").await.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 150);
    for bad in ["status=paused", "limit=201", "limit=0", "with_nested_markets=yes"] {
        assert_eq!(api(addr, &format!("/events?{bad}")).await.status, 400, "{bad}");
    }

    let series = api(addr, "/series").await.json();
    assert_eq!(series["series"].as_array().unwrap().len(), 3);
    assert!(series.get("cursor").is_none());
    let econ = api(addr, "/series?category=Economics").await.json();
    assert_eq!(econ["series"].as_array().unwrap().len(), 1);
    assert_eq!(econ["series"][0]["ticker"], "KXS001");
    let one = api(addr, "/series/KXS002").await.json();
    assert_eq!(one["series"]["ticker"], "KXS002");
    assert_eq!(one["series"]["frequency"], "daily");
    assert_eq!(one["series"]["category"], "Climate and Weather");
    let missing = api(addr, "/series/NOPE").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
}

#[tokio::test]
async fn hub_gone_is_503() {
    let mut hub = FixtureHub::new(Fixture::catalog(1, 1, 1));
    hub.closed = true;
    let addr = serve(hub, unlimited(), RestFaults::new()).await;
    let answer = api(addr, "/markets").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"]["code"], "service_unavailable");
}
