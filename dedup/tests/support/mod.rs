//! Row builders shared by the dedup tests.
#![allow(dead_code)]

use std::sync::Arc;

use kdp_dedup::row::{Delta, EventLifecycle, MarketLifecycle, Row, Ticker, TickerContent, Trade};
use kdp_engine::event::Side;

pub fn delta(
    market: &str,
    ts_exch_ns: i64,
    side: Side,
    price_micros: u32,
    delta_centi: i64,
) -> Row {
    Row::Delta(Delta {
        market: Arc::from(market),
        side,
        price_micros,
        delta_centi,
        ts_exch_ns,
        ts_recv_ns: ts_exch_ns + 1_000,
        client_order_id: None,
    })
}

pub fn content(yes_bid_micros: u32) -> TickerContent {
    TickerContent {
        yes_bid_micros: Some(yes_bid_micros),
        yes_ask_micros: Some(yes_bid_micros + 10_000),
        volume_centi: Some(100),
        ..TickerContent::default()
    }
}

pub fn ticker(market: &str, ts_exch_ns: i64, yes_bid_micros: u32) -> Row {
    Row::Ticker(Box::new(Ticker {
        market: Arc::from(market),
        content: content(yes_bid_micros),
        ts_exch_ns,
        ts_recv_ns: ts_exch_ns + 1_000,
    }))
}

pub fn trade(trade_id: &str, ts_exch_ns: i64) -> Row {
    Row::Trade(Box::new(Trade {
        trade_id: trade_id.into(),
        market: Arc::from("KXA-1"),
        yes_price_micros: 420_000,
        no_price_micros: 580_000,
        count_centi: 1_000,
        taker_side: Some(Side::Yes),
        taker_book_side: None,
        is_block_trade: None,
        ts_exch_ns,
        ts_recv_ns: ts_exch_ns + 1_000,
    }))
}

pub fn market_lifecycle(market: &str, kind: &str, payload: &str, ts_recv_ns: i64) -> Row {
    Row::MarketLifecycle(Box::new(MarketLifecycle {
        market: Arc::from(market),
        kind: kind.into(),
        multivariate: false,
        open_ts_s: None,
        close_ts_s: None,
        determination_ts_s: Some(1_700_000_000),
        settled_ts_s: None,
        result: Some("yes".into()),
        settlement_value_micros: Some(1_000_000),
        price_level_structure: None,
        payload: payload.into(),
        ts_recv_ns,
    }))
}

pub fn event_lifecycle(event_ticker: &str, payload: &str, ts_recv_ns: i64) -> Row {
    Row::EventLifecycle(Box::new(EventLifecycle {
        event_ticker: event_ticker.into(),
        payload: payload.into(),
        ts_recv_ns,
    }))
}
