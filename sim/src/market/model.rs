//! The simulator's own data model: what the market engine produces and the protocol layer
//! encodes. Deliberately independent of `kdp_engine::event` and `kdp_ingest::wire`.
//!
//! Units: prices in integer micro-dollars (`$1 = 1_000_000`), sizes in integer hundredths of a
//! contract, times in ns since the Unix epoch (exchange times carry µs precision, or whole
//! seconds in the legacy-times mode).

/// Index of a market in the catalog (dense, stable for a run: markets are only ever appended).
pub type MarketId = u32;
/// Index of an event in the catalog.
pub type EventId = u32;
/// Index of a series in the catalog.
pub type SeriesId = u32;

/// One dollar in micro-dollars.
pub const DOLLAR_MICROS: u32 = 1_000_000;

/// A book side / outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The YES leg.
    Yes,
    /// The NO leg.
    No,
}

impl Side {
    /// Kalshi's spelling (`"yes"` / `"no"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Yes => "yes",
            Side::No => "no",
        }
    }
}

/// The side of the book a taker hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookSide {
    /// The taker lifted the ask (bought the outcome it names).
    Ask,
    /// The taker hit the bid.
    Bid,
}

impl BookSide {
    /// Kalshi's spelling (`"ask"` / `"bid"`).
    pub fn as_str(self) -> &'static str {
        match self {
            BookSide::Ask => "ask",
            BookSide::Bid => "bid",
        }
    }
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`): the one calendar conversion of the simulator.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A market's tick grid (`price_level_structure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriceGrid {
    /// $0.01 everywhere.
    LinearCent,
    /// $0.001 everywhere.
    DeciCent,
    /// $0.001 below $0.10 and above $0.90, $0.01 between.
    TaperedDeciCent,
}

/// A market's status, in Kalshi's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketStatus {
    /// Created, not yet open (`unopened` filter).
    Initialized,
    /// Open for trading (`open` filter).
    Active,
    /// Trading paused (`paused` filter).
    Inactive,
    /// Past its close time (`closed` filter).
    Closed,
    /// Outcome known (`closed` filter).
    Determined,
    /// Settled (`settled` filter).
    Finalized,
}

/// One resting price level: bids only (a Kalshi book is two bid ladders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Level {
    /// Price in micro-dollars on the side's own leg.
    pub price_micros: u32,
    /// Resting size in hundredths of a contract (always > 0 for a listed level).
    pub size_centi: i64,
}

/// Both ladders of one market, ascending by price (best bid last), as Kalshi lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookLevels {
    /// YES bids.
    pub yes: Vec<Level>,
    /// NO bids.
    pub no: Vec<Level>,
}

/// The ticker state of a market (what a `ticker` message and REST market fields report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TickerState {
    /// Last trade price; `None` before the first trade.
    pub last_price_micros: Option<u32>,
    /// Best YES bid (`0` when the YES ladder is empty).
    pub yes_bid_micros: u32,
    /// Best YES ask = $1 − best NO bid (`DOLLAR_MICROS` when the NO ladder is empty).
    pub yes_ask_micros: u32,
    /// Size at the best YES bid.
    pub yes_bid_size_centi: i64,
    /// Size at the best YES ask.
    pub yes_ask_size_centi: i64,
    /// Size of the last trade, if any.
    pub last_trade_size_centi: Option<i64>,
    /// Contracts traded.
    pub volume_centi: i64,
    /// Open interest in contracts.
    pub open_interest_centi: i64,
    /// Traded notional in whole dollars.
    pub dollar_volume: i64,
    /// Open-interest notional in whole dollars.
    pub dollar_open_interest: i64,
}

/// A market lifecycle change (`market_lifecycle_v2` `event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleKind {
    /// The market was created (carries its open/close times and grid).
    Created,
    /// Trading enabled.
    Activated,
    /// Trading paused.
    Deactivated,
    /// Close time moved.
    CloseDateUpdated,
    /// Outcome known.
    Determined,
    /// Settled.
    Settled,
}

/// What happened on the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchEventKind {
    /// A signed change to the resting size at one level.
    Delta {
        /// Market.
        market: MarketId,
        /// Ladder.
        side: Side,
        /// Level price.
        price_micros: u32,
        /// Signed size change (never 0).
        delta_centi: i64,
    },
    /// An execution.
    Trade {
        /// Market.
        market: MarketId,
        /// Exchange-wide unique id (rendered as a UUID).
        trade_id: [u8; 16],
        /// YES price; the NO price is `DOLLAR_MICROS - yes_price_micros`.
        yes_price_micros: u32,
        /// Contracts, > 0.
        count_centi: i64,
        /// The outcome the taker bought.
        taker_side: Side,
        /// The book side the taker hit.
        taker_book_side: BookSide,
    },
    /// The market's ticker state changed (top of book, last price, volume or open interest).
    Ticker {
        /// Market.
        market: MarketId,
        /// The new state.
        state: TickerState,
    },
    /// A market lifecycle change.
    MarketLifecycle {
        /// Market.
        market: MarketId,
        /// What happened.
        kind: LifecycleKind,
    },
    /// A new event was created (`event_lifecycle`).
    EventCreated {
        /// Event.
        event: EventId,
    },
}

impl ExchEventKind {
    /// The market this event concerns, if any.
    pub fn market(&self) -> Option<MarketId> {
        match *self {
            ExchEventKind::Delta { market, .. }
            | ExchEventKind::Trade { market, .. }
            | ExchEventKind::Ticker { market, .. }
            | ExchEventKind::MarketLifecycle { market, .. } => Some(market),
            ExchEventKind::EventCreated { .. } => None,
        }
    }
}

/// One exchange event with its global position and exchange time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchEvent {
    /// Global exchange sequence number: 1, 2, 3, ... over the whole run.
    pub exch_seq: u64,
    /// Exchange time in ns since the epoch (µs precision, or whole seconds in legacy mode).
    pub ts_ns: i64,
    /// What happened.
    pub kind: ExchEventKind,
}

/// A series in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    /// Series ticker, e.g. `KXHIGHNY`.
    pub ticker: String,
    /// Title.
    pub title: String,
    /// Category, e.g. `Climate and Weather`.
    pub category: String,
    /// Frequency, e.g. `daily`.
    pub frequency: String,
}

/// An event in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// Event ticker, e.g. `KXHIGHNY-26NOV29`.
    pub ticker: String,
    /// Its series.
    pub series: SeriesId,
    /// Title.
    pub title: String,
    /// Sub-title.
    pub sub_title: String,
    /// Whether its markets are mutually exclusive.
    pub mutually_exclusive: bool,
}

/// A market in the catalog, with its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketInfo {
    /// Market ticker, e.g. `KXHIGHNY-26NOV29-T54`.
    pub ticker: String,
    /// Its event.
    pub event: EventId,
    /// Tick grid.
    pub grid: PriceGrid,
    /// Whether sizes may be fractional (hundredths) on this market.
    pub fractional: bool,
    /// Current status.
    pub status: MarketStatus,
    /// Creation time (ns).
    pub created_ts_ns: i64,
    /// Open time (ns).
    pub open_ts_ns: i64,
    /// Close time (ns).
    pub close_ts_ns: i64,
    /// Determination time (ns), once determined.
    pub determined_ts_ns: Option<i64>,
    /// Settlement time (ns), once settled.
    pub settled_ts_ns: Option<i64>,
    /// Result, once determined.
    pub result: Option<Side>,
    /// Current ticker state.
    pub ticker_state: TickerState,
    /// Yes/no sub-titles.
    pub yes_sub_title: String,
}

/// The fields a `market_lifecycle_v2` message carries besides its kind, as of that event
/// (see `Exchange::lifecycle_fields`). Times in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LifecycleFields {
    /// Open time (whole seconds).
    pub open_ts_ns: i64,
    /// Close time (whole seconds; moved by `CloseDateUpdated`).
    pub close_ts_ns: i64,
    /// Determination time, once determined.
    pub determined_ts_ns: Option<i64>,
    /// Settlement time, once settled.
    pub settled_ts_ns: Option<i64>,
    /// Result, once determined.
    pub result: Option<Side>,
    /// Settlement value of a YES contract (`DOLLAR_MICROS` or 0), once determined.
    pub settlement_value_micros: Option<u32>,
    /// Whether trading is paused (`is_deactivated`).
    pub is_deactivated: bool,
}
