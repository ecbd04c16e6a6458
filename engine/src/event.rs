//! The normalized event model: what every stage after the parser sees.
//!
//! `ingest` turns Kalshi frames into these types; the gatherer writer stores them; the
//! deduplicator merges them. Nothing here knows JSON or the wire shapes.
//!
//! Units are fixed and exact, never floating point:
//! - prices in integer **micro-dollars** (`price_micros`: `"0.4200"` → `420_000`; $1 = 1,000,000),
//! - sizes and counts in integer **hundredths of a contract** (`*_centi`: `"136.00"` → `13_600`),
//! - exchange times in **nanoseconds** since the Unix epoch (`ts_exch_ns`), at the full precision
//!   the exchange sent (RFC3339 fractions up to ns, else milliseconds, else whole seconds).
//!
//! Market and trade identifiers are borrowed (`&'a str`) from the frame buffer the parser owns,
//! so parsing allocates nothing per frame; a stage that keeps an event longer than the frame
//! interns or copies the ticker.

/// One dollar in micro-dollars: the top of every Kalshi price range.
pub const DOLLAR_MICROS: u32 = 1_000_000;

/// The side of the book a level, delta or taker belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The YES leg.
    Yes,
    /// The NO leg.
    No,
}

impl Side {
    /// The wire spelling (`"yes"` / `"no"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Yes => "yes",
            Side::No => "no",
        }
    }
}

/// Which side of the order book a taker hit (`taker_book_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookSide {
    /// The taker bought: it lifted the ask.
    Ask,
    /// The taker sold: it hit the bid.
    Bid,
}

impl BookSide {
    /// The wire spelling (`"ask"` / `"bid"`).
    pub fn as_str(self) -> &'static str {
        match self {
            BookSide::Ask => "ask",
            BookSide::Bid => "bid",
        }
    }
}

/// One resting price level of a book: bids only (Kalshi books are two bid ladders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Level {
    /// Price in micro-dollars, on the side's own leg (NO levels in NO prices).
    pub price_micros: u32,
    /// Resting size in hundredths of a contract.
    pub size_centi: i64,
}

/// A full order-book state for one market (`orderbook_snapshot`, or a REST order book).
/// Levels are in the order the exchange sent them: ascending price, best bid last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookSnapshot<'a> {
    /// Market ticker.
    pub market: &'a str,
    /// YES bid ladder.
    pub yes: &'a [Level],
    /// NO bid ladder.
    pub no: &'a [Level],
}

/// A signed change to the resting size at one (side, price) of one market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BookDelta<'a> {
    /// Market ticker.
    pub market: &'a str,
    /// Book side of the changed level.
    pub side: Side,
    /// Price of the changed level in micro-dollars.
    pub price_micros: u32,
    /// Signed change of the resting size in hundredths of a contract.
    pub delta_centi: i64,
    /// Exchange time in ns since the epoch, at the precision the exchange sent.
    pub ts_exch_ns: i64,
    /// Present only on deltas caused by the connected user's own orders (account-specific:
    /// never part of an identity key).
    pub client_order_id: Option<&'a str>,
}

/// One executed trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trade<'a> {
    /// Exchange-wide unique trade id (UUID text).
    pub trade_id: &'a str,
    /// Market ticker.
    pub market: &'a str,
    /// YES price in micro-dollars.
    pub yes_price_micros: u32,
    /// NO price in micro-dollars (`DOLLAR_MICROS - yes_price_micros` on every trade seen).
    pub no_price_micros: u32,
    /// Contracts traded, in hundredths.
    pub count_centi: i64,
    /// The outcome the taker bought (`taker_outcome_side`, else the deprecated `taker_side`).
    pub taker_side: Option<Side>,
    /// The book side the taker hit (`taker_book_side`), when sent.
    pub taker_book_side: Option<BookSide>,
    /// Whether this was a block trade, when sent.
    pub is_block_trade: Option<bool>,
    /// Exchange time in ns since the epoch.
    pub ts_exch_ns: i64,
}

/// A ticker update: top of book, last price, volume and open interest of one market.
/// Every field but the market and time is optional: the exchange sends what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ticker<'a> {
    /// Market ticker.
    pub market: &'a str,
    /// Last trade price (`None` when there has been no trade: the wire sends `""`).
    pub price_micros: Option<u32>,
    /// Best YES bid.
    pub yes_bid_micros: Option<u32>,
    /// Best YES ask.
    pub yes_ask_micros: Option<u32>,
    /// Size at the best YES bid, in hundredths.
    pub yes_bid_size_centi: Option<i64>,
    /// Size at the best YES ask, in hundredths.
    pub yes_ask_size_centi: Option<i64>,
    /// Size of the last trade, in hundredths.
    pub last_trade_size_centi: Option<i64>,
    /// Contracts traded, in hundredths.
    pub volume_centi: Option<i64>,
    /// Open interest, in hundredths of a contract.
    pub open_interest_centi: Option<i64>,
    /// Traded notional in whole dollars (signed, as sent).
    pub dollar_volume: Option<i64>,
    /// Open interest notional in whole dollars (signed, as sent).
    pub dollar_open_interest: Option<i64>,
    /// The undocumented engine counter (`Clock`) some captures carry.
    pub clock: Option<u64>,
    /// Exchange time in ns since the epoch.
    pub ts_exch_ns: i64,
}

/// The kind of a market lifecycle event (`event_type` of `market_lifecycle_v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleKind<'a> {
    /// The market was created.
    Created,
    /// Trading was enabled.
    Activated,
    /// Trading was paused.
    Deactivated,
    /// The close date moved.
    CloseDateUpdated,
    /// The outcome is known.
    Determined,
    /// The market settled.
    Settled,
    /// The tick grid changed.
    PriceLevelStructureUpdated,
    /// Descriptive metadata changed.
    MetadataUpdated,
    /// A kind this build does not know, kept verbatim.
    Other(&'a str),
}

/// A lifecycle change of one market (`market_lifecycle_v2`, `multivariate_market_lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MarketLifecycle<'a> {
    /// Market ticker.
    pub market: &'a str,
    /// What happened.
    pub kind: LifecycleKind<'a>,
    /// Sent on the multivariate channel (KXMVE markets).
    pub multivariate: bool,
    /// Open time in Unix seconds, when sent.
    pub open_ts_s: Option<i64>,
    /// Close time in Unix seconds, when sent.
    pub close_ts_s: Option<i64>,
    /// Determination time in Unix seconds, when sent.
    pub determination_ts_s: Option<i64>,
    /// Settlement time in Unix seconds, when sent.
    pub settled_ts_s: Option<i64>,
    /// Result (`yes`, `no`, `scalar`, ...), when sent.
    pub result: Option<&'a str>,
    /// Settlement value in micro-dollars, when sent.
    pub settlement_value_micros: Option<u32>,
    /// Tick grid name, when sent.
    pub price_level_structure: Option<&'a str>,
    /// The whole `msg` object as compact JSON, so nothing the exchange said is lost.
    pub payload: String,
}

/// A lifecycle change of one event (`event_lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventLifecycle<'a> {
    /// Event ticker.
    pub event_ticker: &'a str,
    /// The whole `msg` object as compact JSON.
    pub payload: String,
}

/// A normalized market-data event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Full book state of one market.
    Snapshot(BookSnapshot<'a>),
    /// One change to one level.
    Delta(BookDelta<'a>),
    /// One execution.
    Trade(Trade<'a>),
    /// One ticker update.
    Ticker(Ticker<'a>),
    /// One market lifecycle change.
    MarketLifecycle(MarketLifecycle<'a>),
    /// One event lifecycle change.
    EventLifecycle(EventLifecycle<'a>),
}
