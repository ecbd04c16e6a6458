//! What a shard hands the gatherer writer: owned records, one per row of the gatherer buffer.
//!
//! A parsed [`Event`] borrows from the parser's frame buffer, so a shard copies it into a
//! [`Record`] before pushing it onto its ring. Market tickers are `Arc<str>`: a shard already
//! holds one `Arc<str>` per market it owns (the intern function passed to
//! [`Record::from_event`] returns it), so pushing a delta, trade or ticker costs a reference
//! count increment instead of an allocation; a `Box<str>` would allocate per record. Values that
//! are unique per record (trade ids, lifecycle payloads, raw frames) are owned boxes.
//!
//! Every record carries its receive time (`ts_recv_ns`) and, when it arrived over WebSocket,
//! where it sat in its connection's stream ([`Origin`]).

use std::sync::Arc;

use kdp_engine::event::{BookSide, Event, Level, LifecycleKind, Side};

/// Where and when a record was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Receive time, ns since the Unix epoch.
    pub ts_recv_ns: i64,
    /// The gatherer's number for the WebSocket connection.
    pub conn_id: u64,
    /// The frame's subscription id, when it had one.
    pub sid: Option<u64>,
    /// The frame's per-sid sequence number, when it had one.
    pub seq: Option<u64>,
}

/// One order-book change (`delta` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRecord {
    /// Where and when it was received.
    pub origin: Origin,
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
    /// Set on deltas caused by the connected user's own orders.
    pub client_order_id: Option<Box<str>>,
}

/// One execution (`trade` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRecord {
    /// Where and when it was received.
    pub origin: Origin,
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
}

/// One ticker update (`ticker` table); fields as in [`kdp_engine::event::Ticker`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TickerRecord {
    pub origin: Origin,
    pub market: Arc<str>,
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
    pub ts_exch_ns: i64,
}

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// An `orderbook_snapshot` frame: anchored at its (conn_id, sid, seq).
    Ws(Origin),
    /// A REST order book, received at `ts_recv_ns`: anchored at its gseq.
    Rest {
        /// Receive time of the response, ns.
        ts_recv_ns: i64,
    },
}

impl SnapshotSource {
    /// The receive time.
    pub fn ts_recv_ns(&self) -> i64 {
        match self {
            Self::Ws(origin) => origin.ts_recv_ns,
            Self::Rest { ts_recv_ns } => *ts_recv_ns,
        }
    }
}

/// A full book state of one market (`snapshot` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// WebSocket (with its stream position) or REST.
    pub source: SnapshotSource,
    /// Market ticker.
    pub market: Arc<str>,
    /// YES bid ladder as sent.
    pub yes: Box<[Level]>,
    /// NO bid ladder as sent.
    pub no: Box<[Level]>,
}

/// A market lifecycle change (`market_lifecycle` table); fields as in
/// [`kdp_engine::event::MarketLifecycle`], the kind spelled as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MarketLifecycleRecord {
    pub origin: Origin,
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
    pub payload: Box<str>,
}

/// An event lifecycle change (`event_lifecycle` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLifecycleRecord {
    /// Where and when it was received.
    pub origin: Origin,
    /// Event ticker.
    pub event_ticker: Box<str>,
    /// The whole `msg` as compact JSON.
    pub payload: Box<str>,
}

/// A sequence gap on one sid (`gap` table): some market on it may have lost something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapMarker {
    /// When the gap was seen, ns.
    pub ts_recv_ns: i64,
    /// The connection.
    pub conn_id: u64,
    /// The subscription whose seq jumped.
    pub sid: u64,
    /// The seq that should have come next.
    pub expected_seq: u64,
    /// The seq that came instead; `None` if the stream ended first.
    pub got_seq: Option<u64>,
    /// Receive time of the last frame in sequence, if any: coverage is unknown from here.
    pub ts_recv_last_good_ns: Option<i64>,
    /// Every market on the sid.
    pub markets: Box<[Arc<str>]>,
}

/// What a gap row records (the `gap.kind` column, schema version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapKind {
    /// The sid's seq jumped, or its stream ended before the expected seq arrived.
    Seq,
    /// The server dropped the subscription (error 10/25).
    SubscriptionLost,
    /// The connection dropped.
    Disconnect,
    /// The gatherer was stopped cleanly and started again (written by the writer, never pushed).
    Restart,
    /// The gatherer's previous run ended without a clean stop (written by the writer).
    Crash,
}

impl GapKind {
    /// The column's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Seq => "seq",
            GapKind::SubscriptionLost => "subscription_lost",
            GapKind::Disconnect => "disconnect",
            GapKind::Restart => "restart",
            GapKind::Crash => "crash",
        }
    }
}

impl GapMarker {
    /// The kind of a connection's gap, read from its documented shape: a disconnect has no sid
    /// (`sid = 0`); a dropped subscription has `expected_seq = 0` and no `got_seq` (seqs start
    /// at 1); anything else is a sequence gap.
    pub fn kind(&self) -> GapKind {
        if self.sid == 0 {
            GapKind::Disconnect
        } else if self.expected_seq == 0 && self.got_seq.is_none() {
            GapKind::SubscriptionLost
        } else {
            GapKind::Seq
        }
    }
}

/// Why a frame is kept raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawReason {
    /// It parsed, but its message type is unknown to this build (the type as sent).
    Unknown(Box<str>),
    /// It did not parse (the parse error's message).
    Malformed(Box<str>),
}

/// A frame kept byte for byte (`raw_frame` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// When it was received, ns.
    pub ts_recv_ns: i64,
    /// The connection.
    pub conn_id: u64,
    /// Unknown type or malformed.
    pub reason: RawReason,
    /// The frame as received.
    pub frame: Box<[u8]>,
}

/// One row for the gatherer buffer: what a shard pushes onto its ring. Rare, large kinds are
/// boxed so the common ones keep ring slots small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An order-book change.
    Delta(DeltaRecord),
    /// An execution.
    Trade(TradeRecord),
    /// A ticker update.
    Ticker(Box<TickerRecord>),
    /// A book state (WebSocket or REST).
    Snapshot(Box<SnapshotRecord>),
    /// A market lifecycle change.
    MarketLifecycle(Box<MarketLifecycleRecord>),
    /// An event lifecycle change.
    EventLifecycle(Box<EventLifecycleRecord>),
    /// A sequence gap.
    Gap(Box<GapMarker>),
    /// An unknown or malformed frame.
    Raw(Box<RawFrame>),
}

impl Record {
    /// Copies a parsed WebSocket event into an owned record. `intern` maps a market ticker to
    /// the shard's shared `Arc<str>` for it.
    pub fn from_event(
        event: &Event<'_>,
        origin: Origin,
        mut intern: impl FnMut(&str) -> Arc<str>,
    ) -> Record {
        match event {
            Event::Delta(d) => Record::Delta(DeltaRecord {
                origin,
                market: intern(d.market),
                side: d.side,
                price_micros: d.price_micros,
                delta_centi: d.delta_centi,
                ts_exch_ns: d.ts_exch_ns,
                client_order_id: d.client_order_id.map(Box::from),
            }),
            Event::Trade(t) => Record::Trade(TradeRecord {
                origin,
                trade_id: t.trade_id.into(),
                market: intern(t.market),
                yes_price_micros: t.yes_price_micros,
                no_price_micros: t.no_price_micros,
                count_centi: t.count_centi,
                taker_side: t.taker_side,
                taker_book_side: t.taker_book_side,
                is_block_trade: t.is_block_trade,
                ts_exch_ns: t.ts_exch_ns,
            }),
            Event::Ticker(t) => Record::Ticker(Box::new(TickerRecord {
                origin,
                market: intern(t.market),
                price_micros: t.price_micros,
                yes_bid_micros: t.yes_bid_micros,
                yes_ask_micros: t.yes_ask_micros,
                yes_bid_size_centi: t.yes_bid_size_centi,
                yes_ask_size_centi: t.yes_ask_size_centi,
                last_trade_size_centi: t.last_trade_size_centi,
                volume_centi: t.volume_centi,
                open_interest_centi: t.open_interest_centi,
                dollar_volume: t.dollar_volume,
                dollar_open_interest: t.dollar_open_interest,
                clock: t.clock,
                ts_exch_ns: t.ts_exch_ns,
            })),
            Event::Snapshot(s) => Record::Snapshot(Box::new(SnapshotRecord {
                source: SnapshotSource::Ws(origin),
                market: intern(s.market),
                yes: s.yes.into(),
                no: s.no.into(),
            })),
            Event::MarketLifecycle(m) => Record::MarketLifecycle(Box::new(MarketLifecycleRecord {
                origin,
                market: intern(m.market),
                kind: lifecycle_kind_str(&m.kind).into(),
                multivariate: m.multivariate,
                open_ts_s: m.open_ts_s,
                close_ts_s: m.close_ts_s,
                determination_ts_s: m.determination_ts_s,
                settled_ts_s: m.settled_ts_s,
                result: m.result.map(Box::from),
                settlement_value_micros: m.settlement_value_micros,
                price_level_structure: m.price_level_structure.map(Box::from),
                payload: m.payload.as_str().into(),
            })),
            Event::EventLifecycle(e) => Record::EventLifecycle(Box::new(EventLifecycleRecord {
                origin,
                event_ticker: e.event_ticker.into(),
                payload: e.payload.as_str().into(),
            })),
        }
    }

    /// The gatherer connection the record came from (`None`: a REST snapshot).
    pub fn conn_id(&self) -> Option<u64> {
        match self {
            Record::Delta(r) => Some(r.origin.conn_id),
            Record::Trade(r) => Some(r.origin.conn_id),
            Record::Ticker(r) => Some(r.origin.conn_id),
            Record::Snapshot(r) => match r.source {
                SnapshotSource::Ws(origin) => Some(origin.conn_id),
                SnapshotSource::Rest { .. } => None,
            },
            Record::MarketLifecycle(r) => Some(r.origin.conn_id),
            Record::EventLifecycle(r) => Some(r.origin.conn_id),
            Record::Gap(r) => Some(r.conn_id),
            Record::Raw(r) => Some(r.conn_id),
        }
    }

    /// The receive time of the record.
    pub fn ts_recv_ns(&self) -> i64 {
        match self {
            Record::Delta(r) => r.origin.ts_recv_ns,
            Record::Trade(r) => r.origin.ts_recv_ns,
            Record::Ticker(r) => r.origin.ts_recv_ns,
            Record::Snapshot(r) => r.source.ts_recv_ns(),
            Record::MarketLifecycle(r) => r.origin.ts_recv_ns,
            Record::EventLifecycle(r) => r.origin.ts_recv_ns,
            Record::Gap(r) => r.ts_recv_ns,
            Record::Raw(r) => r.ts_recv_ns,
        }
    }
}

/// The wire spelling of a market lifecycle kind (`event_type` of `market_lifecycle_v2`).
pub fn lifecycle_kind_str<'a>(kind: &LifecycleKind<'a>) -> &'a str {
    match kind {
        LifecycleKind::Created => "created",
        LifecycleKind::Activated => "activated",
        LifecycleKind::Deactivated => "deactivated",
        LifecycleKind::CloseDateUpdated => "close_date_updated",
        LifecycleKind::Determined => "determined",
        LifecycleKind::Settled => "settled",
        LifecycleKind::PriceLevelStructureUpdated => "price_level_structure_updated",
        LifecycleKind::MetadataUpdated => "metadata_updated",
        LifecycleKind::Other(other) => other,
    }
}
