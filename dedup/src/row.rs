//! What the merge core reads: one owned row of a gatherer table, as a reader hands it over.
//!
//! A reader streams a gatherer database's tables `WHERE gseq > cursor ORDER BY gseq` and turns
//! each row into a [`Row`] with its `gseq`. Units are those of the gatherer schema (DESIGN §5):
//! prices in micro-dollars, sizes in hundredths, times in ns since the epoch. Connection-local
//! positions (`conn_id`, `sid`, `seq`) are carried only where they mean something downstream:
//! a WebSocket snapshot's anchor and a gap marker. Raw (unparsed) frames are not merged: a
//! reader skips them (they stay in the gatherer database for operators).

use std::sync::Arc;

use kdp_engine::event::{BookSide, Level, Side};

/// One order-book change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Market ticker.
    pub market: Arc<str>,
    /// Book side.
    pub side: Side,
    /// Level price, micro-dollars.
    pub price_micros: u32,
    /// Signed size change, hundredths.
    pub delta_centi: i64,
    /// Exchange time, ns.
    pub ts_exch_ns: i64,
    /// Receive time at the gatherer that delivered it, ns.
    pub ts_recv_ns: i64,
    /// Account-specific: kept from the first delivery, never part of the identity.
    pub client_order_id: Option<Box<str>>,
}

/// One execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    /// Exchange-wide trade id.
    pub trade_id: Box<str>,
    /// Market ticker.
    pub market: Arc<str>,
    /// YES price, micro-dollars.
    pub yes_price_micros: u32,
    /// NO price, micro-dollars.
    pub no_price_micros: u32,
    /// Contracts, hundredths.
    pub count_centi: i64,
    /// Outcome the taker bought.
    pub taker_side: Option<Side>,
    /// Book side the taker hit.
    pub taker_book_side: Option<BookSide>,
    /// Block trade flag, when sent.
    pub is_block_trade: Option<bool>,
    /// Exchange time, ns.
    pub ts_exch_ns: i64,
    /// Receive time, ns.
    pub ts_recv_ns: i64,
}

/// Everything a ticker update says besides its market and time: its identity is all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(missing_docs)]
pub struct TickerContent {
    pub price_micros: Option<u32>,
    pub yes_bid_micros: Option<u32>,
    pub yes_ask_micros: Option<u32>,
    pub yes_bid_size_centi: Option<i64>,
    pub yes_ask_size_centi: Option<i64>,
    pub last_trade_size_centi: Option<i64>,
    pub volume_centi: Option<i64>,
    pub open_interest_centi: Option<i64>,
    pub dollar_volume: Option<i64>,
    pub dollar_open_interest: Option<i64>,
    pub clock: Option<u64>,
}

/// One ticker update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker {
    /// Market ticker.
    pub market: Arc<str>,
    /// What it says.
    pub content: TickerContent,
    /// Exchange time, ns.
    pub ts_exch_ns: i64,
    /// Receive time, ns.
    pub ts_recv_ns: i64,
}

/// A market lifecycle change; the fields as in the gatherer's `market_lifecycle` table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MarketLifecycle {
    pub market: Arc<str>,
    pub kind: Box<str>,
    pub multivariate: bool,
    pub open_ts_s: Option<i64>,
    pub close_ts_s: Option<i64>,
    pub determination_ts_s: Option<i64>,
    pub settled_ts_s: Option<i64>,
    pub result: Option<Box<str>>,
    pub settlement_value_micros: Option<u32>,
    pub price_level_structure: Option<Box<str>>,
    /// The whole message as compact JSON: its times are in here.
    pub payload: Box<str>,
    pub ts_recv_ns: i64,
}

/// An event lifecycle change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLifecycle {
    /// Event ticker.
    pub event_ticker: Box<str>,
    /// The whole message as compact JSON.
    pub payload: Box<str>,
    /// Receive time, ns.
    pub ts_recv_ns: i64,
}

/// Where a snapshot applies in its gatherer's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAnchor {
    /// An `orderbook_snapshot` frame: it applies just before the deltas that follow it on its
    /// (conn_id, sid), those with a greater seq.
    Ws {
        /// The gatherer's connection number.
        conn_id: u64,
        /// The subscription.
        sid: u64,
        /// The frame's seq.
        seq: u64,
    },
    /// A REST order book: it applies just before the market's deltas with a greater gseq in
    /// the same gatherer.
    Rest,
}

/// A book state kept with its source gatherer (never merged across gatherers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Market ticker.
    pub market: Arc<str>,
    /// WebSocket position or REST.
    pub anchor: SnapshotAnchor,
    /// YES bid ladder.
    pub yes: Box<[Level]>,
    /// NO bid ladder.
    pub no: Box<[Level]>,
    /// Receive time, ns.
    pub ts_recv_ns: i64,
}

/// A gatherer's gap marker, kept with its gatherer for the coverage ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Gap {
    pub conn_id: u64,
    pub sid: u64,
    pub expected_seq: u64,
    pub got_seq: Option<u64>,
    pub ts_recv_last_good_ns: Option<i64>,
    pub markets: Box<[Arc<str>]>,
    pub ts_recv_ns: i64,
}

/// One gatherer row. Rare, large kinds are boxed so the common ones keep ring slots small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// An order-book change.
    Delta(Delta),
    /// An execution.
    Trade(Box<Trade>),
    /// A ticker update.
    Ticker(Box<Ticker>),
    /// A market lifecycle change.
    MarketLifecycle(Box<MarketLifecycle>),
    /// An event lifecycle change.
    EventLifecycle(Box<EventLifecycle>),
    /// A book state.
    Snapshot(Box<Snapshot>),
    /// A gap marker.
    Gap(Box<Gap>),
}
