//! Conformance of every endpoint's JSON to the field names and JSON types of Kalshi's current
//! REST shapes (protocol note §8/§9, OpenAPI `Market`, `EventData`, `Series`, `Trade`,
//! `OrderbookCountFp`, `ExchangeStatus`), checked from one table. Formats are cross-checked
//! with kdp-ingest's own decimal and RFC 3339 parsers, written independently of the simulator.

#![allow(clippy::unwrap_used)]

mod rest_support;

use kdp_sim::transport::rest::{RestConfig, RestFaults};
use rest_support::{Fixture, FixtureHub, api, serve};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    /// `*_dollars`: 4-dp decimal string in [0, 1].
    Dollars,
    /// `*_fp`: 2-dp decimal string.
    Fp,
    /// RFC 3339 UTC string.
    Time,
    /// RFC 3339 string or null.
    TimeOrNull,
    Bool,
    Int,
    Num,
    NumOrNull,
    ObjOrNull,
    Arr,
    Obj,
    OneOf(&'static [&'static str]),
    /// `[price_dollars, count_fp]`.
    Level,
}

use Kind::*;

const MARKET_STATUS: &[&str] = &[
    "initialized",
    "inactive",
    "active",
    "closed",
    "determined",
    "disputed",
    "amended",
    "finalized",
];

/// The Market object: required fields and the optional ones the simulator always sends.
const MARKET: &[(&str, Kind)] = &[
    ("ticker", Str),
    ("event_ticker", Str),
    ("market_type", OneOf(&["binary", "scalar"])),
    ("title", Str),
    ("subtitle", Str),
    ("yes_sub_title", Str),
    ("no_sub_title", Str),
    ("created_time", Time),
    ("updated_time", Time),
    ("open_time", Time),
    ("close_time", Time),
    ("expected_expiration_time", TimeOrNull),
    ("latest_expiration_time", Time),
    ("settlement_timer_seconds", Int),
    ("status", OneOf(MARKET_STATUS)),
    ("yes_bid_dollars", Dollars),
    ("yes_bid_size_fp", Fp),
    ("yes_ask_dollars", Dollars),
    ("yes_ask_size_fp", Fp),
    ("no_bid_dollars", Dollars),
    ("no_ask_dollars", Dollars),
    ("last_price_dollars", Dollars),
    ("previous_yes_bid_dollars", Dollars),
    ("previous_yes_ask_dollars", Dollars),
    ("previous_price_dollars", Dollars),
    ("volume_fp", Fp),
    ("volume_24h_fp", Fp),
    ("open_interest_fp", Fp),
    ("notional_value_dollars", Dollars),
    ("result", OneOf(&["yes", "no", "scalar", ""])),
    ("can_close_early", Bool),
    ("expiration_value", Str),
    ("floor_strike", NumOrNull),
    ("cap_strike", NumOrNull),
    ("custom_strike", ObjOrNull),
    ("rules_primary", Str),
    ("rules_secondary", Str),
    ("price_level_structure", OneOf(&["linear_cent", "deci_cent", "tapered_deci_cent"])),
    ("price_ranges", Arr),
    ("price_ranges/*/start", Dollars),
    ("price_ranges/*/end", Dollars),
    ("price_ranges/*/step", Dollars),
    ("is_provisional", Bool),
    ("exchange_index", Int),
    ("occurrence_datetime", TimeOrNull),
];

/// Fields removed on 2026-03-12 (legacy cents/counts) or dropped from Market since: must not
/// appear anywhere in a Market.
const MARKET_REMOVED: &[&str] = &[
    "yes_bid",
    "yes_ask",
    "no_bid",
    "no_ask",
    "last_price",
    "previous_yes_bid",
    "previous_yes_ask",
    "previous_price",
    "volume",
    "volume_24h",
    "open_interest",
    "liquidity",
    "notional_value",
    "liquidity_dollars",
    "tick_size",
    "fractional_trading_enabled",
    "response_price_units",
];

const EVENT: &[(&str, Kind)] = &[
    ("event_ticker", Str),
    ("series_ticker", Str),
    ("title", Str),
    ("sub_title", Str),
    ("collateral_return_type", OneOf(&["MECNET", "DIRECNET", ""])),
    ("mutually_exclusive", Bool),
    ("available_on_brokers", Bool),
    ("category", Str),
    ("exchange_index", Int),
];

const SERIES: &[(&str, Kind)] = &[
    ("ticker", Str),
    ("frequency", Str),
    ("title", Str),
    ("category", Str),
    ("tags", Arr),
    ("settlement_sources", Arr),
    ("contract_url", Str),
    ("contract_terms_url", Str),
    ("fee_type", OneOf(&["quadratic", "quadratic_with_maker_fees", "flat"])),
    ("fee_multiplier", Num),
    ("additional_prohibitions", Arr),
];

const TRADE: &[(&str, Kind)] = &[
    ("trade_id", Str),
    ("ticker", Str),
    ("count_fp", Fp),
    ("yes_price_dollars", Dollars),
    ("no_price_dollars", Dollars),
    ("taker_side", OneOf(&["yes", "no"])),
    ("taker_outcome_side", OneOf(&["yes", "no"])),
    ("taker_book_side", OneOf(&["bid", "ask"])),
    ("is_block_trade", Bool),
    ("created_time", Time),
];

/// (endpoint, path prefix, field table): the top-level shape of every endpoint.
fn table() -> Vec<(&'static str, String, Kind)> {
    let mut rows: Vec<(&'static str, String, Kind)> = vec![
        ("/exchange/status", "exchange_active".into(), Bool),
        ("/exchange/status", "trading_active".into(), Bool),
        ("/exchange/status", "exchange_estimated_resume_time".into(), TimeOrNull),
        ("/exchange/status", "intra_exchange_transfers_active".into(), Bool),
        ("/exchange/status", "exchange_index_statuses".into(), Arr),
        ("/exchange/status", "exchange_index_statuses/*/exchange_index".into(), Int),
        ("/exchange/status", "exchange_index_statuses/*/description".into(), Str),
        ("/exchange/status", "exchange_index_statuses/*/exchange_active".into(), Bool),
        ("/exchange/status", "exchange_index_statuses/*/trading_active".into(), Bool),
        ("/markets?limit=1000", "markets".into(), Arr),
        ("/markets?limit=1000", "cursor".into(), Str),
        ("/markets/KXS000-26NOV000-M00005", "market".into(), Obj),
        ("/markets/KXS000-26NOV000-M00005", "market/settlement_value_dollars".into(), Dollars),
        ("/markets/KXS000-26NOV000-M00005", "market/settlement_ts".into(), Time),
        ("/markets/KXS000-26NOV000-M00004/orderbook", "orderbook_fp".into(), Obj),
        ("/markets/KXS000-26NOV000-M00004/orderbook", "orderbook_fp/yes_dollars".into(), Arr),
        ("/markets/KXS000-26NOV000-M00004/orderbook", "orderbook_fp/no_dollars".into(), Arr),
        ("/markets/KXS000-26NOV000-M00004/orderbook", "orderbook_fp/yes_dollars/*".into(), Level),
        ("/markets/KXS000-26NOV000-M00004/orderbook", "orderbook_fp/no_dollars/*".into(), Level),
        ("/markets/trades?limit=5", "trades".into(), Arr),
        ("/markets/trades?limit=5", "cursor".into(), Str),
        ("/events?with_nested_markets=true", "events".into(), Arr),
        ("/events?with_nested_markets=true", "cursor".into(), Str),
        ("/events?with_nested_markets=true", "milestones".into(), Arr),
        ("/events?with_nested_markets=true", "events/*/markets".into(), Arr),
        ("/events", "events".into(), Arr),
        ("/series", "series".into(), Arr),
        ("/series/KXS001", "series".into(), Obj),
    ];
    let mut nest = |endpoint: &'static str, prefix: &str, fields: &[(&str, Kind)]| {
        for &(f, k) in fields {
            rows.push((endpoint, format!("{prefix}{f}"), k));
        }
    };
    nest("/markets?limit=1000", "markets/*/", MARKET);
    nest("/markets/KXS000-26NOV000-M00005", "market/", MARKET);
    nest("/events?with_nested_markets=true", "events/*/markets/*/", MARKET);
    nest("/events?with_nested_markets=true", "events/*/", EVENT);
    nest("/events", "events/*/", EVENT);
    nest("/markets/trades?limit=5", "trades/*/", TRADE);
    nest("/series", "series/*/", SERIES);
    nest("/series/KXS001", "series/", SERIES);
    rows
}

/// Every value at `path` (`*` = each array element); panics when a step is missing.
fn resolve<'a>(v: &'a Value, path: &str, at: &str) -> Vec<&'a Value> {
    let (head, tail) = match path.split_once('/') {
        Some((h, t)) => (h, Some(t)),
        None => (path, None),
    };
    let here: Vec<&Value> = if head == "*" {
        v.as_array().unwrap_or_else(|| panic!("{at}: not an array")).iter().collect()
    } else {
        vec![v.get(head).unwrap_or_else(|| panic!("{at}: missing field {head:?}"))]
    };
    match tail {
        None => here,
        Some(t) => here.into_iter().flat_map(|x| resolve(x, t, at)).collect(),
    }
}

fn decimal_with(text: &str, dp: usize) -> bool {
    let Some((whole, frac)) = text.split_once('.') else {
        return false;
    };
    let whole = whole.strip_prefix('-').unwrap_or(whole);
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.len() == dp
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn check(kind: Kind, v: &Value, at: &str) {
    let ok = match kind {
        Str => v.is_string(),
        Dollars => v.as_str().is_some_and(|s| {
            decimal_with(s, 4)
                && kdp_ingest::wire::parse_scaled(s.as_bytes(), 6)
                    .is_ok_and(|m| (0..=1_000_000).contains(&m))
        }),
        Fp => v.as_str().is_some_and(|s| {
            decimal_with(s, 2)
                && kdp_ingest::wire::parse_scaled(s.as_bytes(), 2).is_ok_and(|c| c >= 0)
        }),
        Time => v.as_str().is_some_and(|s| {
            s.ends_with('Z') && kdp_ingest::wire::parse_rfc3339_ns(s.as_bytes()).is_ok()
        }),
        TimeOrNull => {
            v.is_null() || {
                check(Time, v, at);
                true
            }
        }
        Bool => v.is_boolean(),
        Int => v.is_i64() || v.is_u64(),
        Num => v.is_number(),
        NumOrNull => v.is_number() || v.is_null(),
        ObjOrNull => v.is_object() || v.is_null(),
        Arr => v.is_array(),
        Obj => v.is_object(),
        OneOf(set) => v.as_str().is_some_and(|s| set.contains(&s)),
        Level => v.as_array().is_some_and(|pair| {
            pair.len() == 2 && {
                check(Dollars, &pair[0], at);
                check(Fp, &pair[1], at);
                true
            }
        }),
    };
    assert!(ok, "{at}: expected {kind:?}, got {v}");
}

#[tokio::test]
async fn every_endpoint_matches_the_field_table() {
    let mut fx = Fixture::catalog(2, 2, 6);
    fx.push_trades(12, 6);
    let addr = serve(FixtureHub::new(fx), RestConfig { rate_limit: None }, RestFaults::new()).await;

    let mut endpoints: Vec<&str> = table().iter().map(|r| r.0).collect();
    endpoints.dedup();
    let mut checked = 0;
    for endpoint in endpoints {
        let answer = api(addr, endpoint).await;
        assert_eq!(answer.status, 200, "{endpoint}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/json"), "{endpoint}");
        let body = answer.json();
        for (_, path, kind) in table().into_iter().filter(|r| r.0 == endpoint) {
            let at = format!("{endpoint} {path}");
            let values = resolve(&body, &path, &at);
            assert!(!values.is_empty(), "{at}: no values to check (empty array in the fixture?)");
            for v in values {
                check(kind, v, &at);
                checked += 1;
            }
        }
    }
    assert!(checked > 3_000, "only {checked} values checked");
}

#[tokio::test]
async fn markets_carry_no_removed_legacy_fields() {
    let addr = serve(
        FixtureHub::new(Fixture::catalog(1, 1, 6)),
        RestConfig { rate_limit: None },
        RestFaults::new(),
    )
    .await;
    let page = api(addr, "/markets").await.json();
    for m in page["markets"].as_array().unwrap() {
        for removed in MARKET_REMOVED {
            assert!(m.get(*removed).is_none(), "{}: legacy field {removed}", m["ticker"]);
        }
        // Settlement fields appear only once the outcome is known.
        let known = matches!(m["status"].as_str().unwrap(), "determined" | "finalized");
        assert_eq!(m.get("settlement_value_dollars").is_some(), known, "{}", m["ticker"]);
        assert_eq!(m.get("settlement_ts").is_some(), m["status"] == "finalized", "{}", m["ticker"]);
    }
}
