//! The naive baselines: the idiomatic way a typical Kalshi client parses the feed with serde.
//!
//! One `#[derive(Deserialize)] #[serde(tag = "type")]` enum over the four timed message types,
//! each variant carrying the envelope fields (`sid`, `seq`, `id`, `sending_ts_ms`) and its `msg`
//! struct; wire structs with owned `String` fields and `Option`s for what may be absent; no
//! borrowing, no hand-written visitor. Read by serde_json ([`SerdeJsonNaiveParser`]) or sonic-rs
//! ([`SonicNaiveParser`]), then normalized by exactly the code the tuned baselines use, so all
//! parsers produce identical [`Frame`]s.
//!
//! The wire structs model the same fields as the tuned ones (no more: `market_id` is skipped
//! like there), so the difference between naive and tuned is the idiom alone: serde's internally
//! tagged enum buffers the whole frame into its generic `Content` tree before it picks the
//! variant, and every string is copied into its own allocation.
//!
//! A [`Frame`] borrows its strings, so each parser keeps the last message it read and the frame
//! borrows from it (the next parse drops it). A `type` other than the four is refused by serde
//! ("unknown variant"), as such a client would.

use kdp_engine::event::{BookSnapshot, Event, Level};
use kdp_ingest::wire::{Envelope, Frame, Message};
use serde::Deserialize;

use super::{
    BaselineError, WireBookSide, WireDelta, WireSide, WireTicker, WireTrade, delta, read_levels,
    ticker, trade,
};

/// Naive: serde_json `from_slice` into the tagged enum of owned structs, then normalization.
#[derive(Debug, Default)]
pub struct SerdeJsonNaiveParser {
    last: Option<WsMessage>,
    levels: Vec<Level>,
}

impl SerdeJsonNaiveParser {
    /// Parses one frame; the result borrows this parser (its last message and level buffer).
    pub fn parse(&mut self, frame: &[u8]) -> Result<Frame<'_>, BaselineError> {
        let msg: WsMessage =
            serde_json::from_slice(frame).map_err(|e| BaselineError::Json(e.to_string()))?;
        normalize(self.last.insert(msg), &mut self.levels)
    }
}

/// Naive: sonic-rs `from_slice` into the same tagged enum, then normalization.
#[derive(Debug, Default)]
pub struct SonicNaiveParser {
    last: Option<WsMessage>,
    levels: Vec<Level>,
}

impl SonicNaiveParser {
    /// Parses one frame; the result borrows this parser (its last message and level buffer).
    pub fn parse(&mut self, frame: &[u8]) -> Result<Frame<'_>, BaselineError> {
        let msg: WsMessage =
            sonic_rs::from_slice(frame).map_err(|e| BaselineError::Json(e.to_string()))?;
        normalize(self.last.insert(msg), &mut self.levels)
    }
}

/// A server message, chosen by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WsMessage {
    OrderbookDelta {
        sid: Option<u64>,
        seq: Option<u64>,
        id: Option<u64>,
        sending_ts_ms: Option<i64>,
        msg: OrderbookDelta,
    },
    OrderbookSnapshot {
        sid: Option<u64>,
        seq: Option<u64>,
        id: Option<u64>,
        sending_ts_ms: Option<i64>,
        msg: OrderbookSnapshot,
    },
    Trade {
        sid: Option<u64>,
        seq: Option<u64>,
        id: Option<u64>,
        sending_ts_ms: Option<i64>,
        msg: TradeMsg,
    },
    Ticker {
        sid: Option<u64>,
        seq: Option<u64>,
        id: Option<u64>,
        sending_ts_ms: Option<i64>,
        msg: TickerMsg,
    },
}

#[derive(Debug, Deserialize)]
struct OrderbookDelta {
    market_ticker: String,
    price_dollars: String,
    delta_fp: String,
    side: WireSide,
    ts: Option<String>,
    ts_ms: Option<i64>,
    client_order_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OrderbookSnapshot {
    market_ticker: String,
    #[serde(default)]
    yes_dollars_fp: Vec<(String, String)>,
    #[serde(default)]
    no_dollars_fp: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
struct TradeMsg {
    trade_id: String,
    market_ticker: String,
    yes_price_dollars: String,
    no_price_dollars: Option<String>,
    count_fp: String,
    taker_side: Option<WireSide>,
    taker_outcome_side: Option<WireSide>,
    taker_book_side: Option<WireBookSide>,
    is_block_trade: Option<bool>,
    ts: Option<i64>,
    ts_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct TickerMsg {
    market_ticker: String,
    price_dollars: Option<String>,
    yes_bid_dollars: Option<String>,
    yes_ask_dollars: Option<String>,
    volume_fp: Option<String>,
    open_interest_fp: Option<String>,
    yes_bid_size_fp: Option<String>,
    yes_ask_size_fp: Option<String>,
    last_trade_size_fp: Option<String>,
    dollar_volume: Option<i64>,
    dollar_open_interest: Option<i64>,
    #[serde(rename = "Clock")]
    clock: Option<u64>,
    ts: Option<i64>,
    ts_ms: Option<i64>,
    time: Option<String>,
}

/// The same normalization as the tuned baselines: a borrowed view of the owned struct goes
/// through the tuned module's `delta`/`trade`/`ticker`/`read_levels`.
fn normalize<'a>(
    wire: &'a WsMessage,
    levels: &'a mut Vec<Level>,
) -> Result<Frame<'a>, BaselineError> {
    let envelope = |id: &Option<u64>, sid: &Option<u64>, seq: &Option<u64>, s: &Option<i64>| {
        Envelope { id: *id, sid: *sid, seq: *seq, sending_ts_ms: *s }
    };
    let (envelope, event) = match wire {
        WsMessage::OrderbookDelta { sid, seq, id, sending_ts_ms, msg: d } => {
            let view = WireDelta {
                market_ticker: &d.market_ticker,
                price_dollars: &d.price_dollars,
                delta_fp: &d.delta_fp,
                side: d.side,
                ts: d.ts.as_deref(),
                ts_ms: d.ts_ms,
                client_order_id: d.client_order_id.as_deref(),
            };
            (envelope(id, sid, seq, sending_ts_ms), Event::Delta(delta(&view)?))
        }
        WsMessage::Trade { sid, seq, id, sending_ts_ms, msg: t } => {
            let view = WireTrade {
                trade_id: &t.trade_id,
                market_ticker: &t.market_ticker,
                yes_price_dollars: &t.yes_price_dollars,
                no_price_dollars: t.no_price_dollars.as_deref(),
                count_fp: &t.count_fp,
                taker_side: t.taker_side,
                taker_outcome_side: t.taker_outcome_side,
                taker_book_side: t.taker_book_side,
                is_block_trade: t.is_block_trade,
                ts: t.ts,
                ts_ms: t.ts_ms,
            };
            (envelope(id, sid, seq, sending_ts_ms), Event::Trade(trade(&view)?))
        }
        WsMessage::Ticker { sid, seq, id, sending_ts_ms, msg: t } => {
            let view = WireTicker {
                market_ticker: &t.market_ticker,
                price_dollars: t.price_dollars.as_deref(),
                yes_bid_dollars: t.yes_bid_dollars.as_deref(),
                yes_ask_dollars: t.yes_ask_dollars.as_deref(),
                volume_fp: t.volume_fp.as_deref(),
                open_interest_fp: t.open_interest_fp.as_deref(),
                yes_bid_size_fp: t.yes_bid_size_fp.as_deref(),
                yes_ask_size_fp: t.yes_ask_size_fp.as_deref(),
                last_trade_size_fp: t.last_trade_size_fp.as_deref(),
                dollar_volume: t.dollar_volume,
                dollar_open_interest: t.dollar_open_interest,
                clock: t.clock,
                ts: t.ts,
                ts_ms: t.ts_ms,
                time: t.time.as_deref(),
            };
            (envelope(id, sid, seq, sending_ts_ms), Event::Ticker(ticker(&view)?))
        }
        WsMessage::OrderbookSnapshot { sid, seq, id, sending_ts_ms, msg: s } => {
            levels.clear();
            read_levels(&s.yes_dollars_fp, levels, "yes_dollars_fp")?;
            let yes_len = levels.len();
            read_levels(&s.no_dollars_fp, levels, "no_dollars_fp")?;
            let levels: &'a [Level] = levels;
            let (yes, no) = levels.split_at(yes_len);
            let snapshot = BookSnapshot { market: &s.market_ticker, yes, no };
            (envelope(id, sid, seq, sending_ts_ms), Event::Snapshot(snapshot))
        }
    };
    Ok(Frame { envelope, message: Message::Event(event) })
}
