//! The comparison parsers: typed serde structs read by serde_json or sonic-rs, then normalized
//! with the same exact helpers kdp uses (`parse_scaled`, `parse_rfc3339`). Two designs, each read
//! by both libraries:
//!
//! - **tuned** (this module: [`SerdeJsonTunedParser`], [`SonicTunedParser`]): how a careful
//!   engineer would write the parser without a tape: one pass over the frame into
//!   `#[derive(Deserialize)]` wire structs that borrow every string (Kalshi tickers, ids,
//!   decimals and times never contain escapes), the message struct chosen by `type` as soon as
//!   `msg` is reached by a hand-written map visitor (Kalshi writes `type` first; a `msg` before
//!   `type` is refused rather than buffered), unknown fields skipped.
//! - **naive** ([`naive`]): the idiomatic way a typical Kalshi client writes it: a
//!   `#[serde(tag = "type")]` enum over the message types, wire structs with owned `String`s, no
//!   custom visitor. The same normalization afterwards.
//!
//! Both read the current wire shape of the four timed message types only, and the same fields;
//! kdp's parser also reads every legacy shape and the control messages, so the baselines match
//! fewer field names than kdp does.
//!
//! The normalization rules (price ranges, the finest-time-wins pick, `""` as "no price") are
//! those of `kdp_ingest::wire`, so all five parsers produce identical [`Frame`]s; the
//! tests check that on every generated frame.

pub mod naive;

use std::fmt;

use kdp_engine::event::{
    BookDelta, BookSide, BookSnapshot, DOLLAR_MICROS, Event, Level, Side, Ticker, Trade,
};
use kdp_ingest::wire::{Envelope, Frame, Message, parse_rfc3339, parse_scaled};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Decimals kept for prices (micro-dollars) and sizes (hundredths).
const PRICE_SCALE: u32 = 6;
const SIZE_SCALE: u32 = 2;
const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// Why a baseline parser refused a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineError {
    /// The JSON reader refused the frame (syntax, wrong type, missing field).
    Json(String),
    /// A field's value is malformed or out of range.
    Field(&'static str),
    /// The message has no exchange time.
    NoTime,
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineError::Json(e) => write!(f, "frame refused by the JSON reader: {e}"),
            BaselineError::Field(field) => write!(f, "`{field}` is malformed or out of range"),
            BaselineError::NoTime => f.write_str("message has no `ts`/`ts_ms`/`time`"),
        }
    }
}

/// Tuned: serde_json `from_slice` into the borrowing wire structs, then normalization.
#[derive(Debug, Default)]
pub struct SerdeJsonTunedParser {
    levels: Vec<Level>,
}

impl SerdeJsonTunedParser {
    /// Parses one frame; the result borrows the frame and this parser's level buffer.
    pub fn parse<'a>(&'a mut self, frame: &'a [u8]) -> Result<Frame<'a>, BaselineError> {
        let wire: WireFrame<'a> =
            serde_json::from_slice(frame).map_err(|e| BaselineError::Json(e.to_string()))?;
        normalize(wire, &mut self.levels)
    }
}

/// Tuned: sonic-rs `from_slice` into the same borrowing wire structs, then normalization.
#[derive(Debug, Default)]
pub struct SonicTunedParser {
    levels: Vec<Level>,
}

impl SonicTunedParser {
    /// Parses one frame; the result borrows the frame and this parser's level buffer.
    pub fn parse<'a>(&'a mut self, frame: &'a [u8]) -> Result<Frame<'a>, BaselineError> {
        let wire: WireFrame<'a> =
            sonic_rs::from_slice(frame).map_err(|e| BaselineError::Json(e.to_string()))?;
        normalize(wire, &mut self.levels)
    }
}

/// A frame: envelope plus the message struct its `type` selects.
struct WireFrame<'a> {
    envelope: Envelope,
    msg: WireMsg<'a>,
}

enum WireMsg<'a> {
    Delta(WireDelta<'a>),
    Trade(WireTrade<'a>),
    Ticker(WireTicker<'a>),
    Snapshot(WireSnapshot<'a>),
    /// A `type` the baselines do not model (or no `msg`).
    Other(&'a str),
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum WireSide {
    Yes,
    No,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum WireBookSide {
    Ask,
    Bid,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    market_ticker: &'a str,
    price_dollars: &'a str,
    delta_fp: &'a str,
    side: WireSide,
    #[serde(borrow)]
    ts: Option<&'a str>,
    ts_ms: Option<i64>,
    #[serde(borrow)]
    client_order_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireTrade<'a> {
    trade_id: &'a str,
    market_ticker: &'a str,
    yes_price_dollars: &'a str,
    #[serde(borrow)]
    no_price_dollars: Option<&'a str>,
    count_fp: &'a str,
    taker_side: Option<WireSide>,
    taker_outcome_side: Option<WireSide>,
    taker_book_side: Option<WireBookSide>,
    is_block_trade: Option<bool>,
    ts: Option<i64>,
    ts_ms: Option<i64>,
}

#[derive(Deserialize)]
struct WireTicker<'a> {
    market_ticker: &'a str,
    #[serde(borrow)]
    price_dollars: Option<&'a str>,
    #[serde(borrow)]
    yes_bid_dollars: Option<&'a str>,
    #[serde(borrow)]
    yes_ask_dollars: Option<&'a str>,
    #[serde(borrow)]
    volume_fp: Option<&'a str>,
    #[serde(borrow)]
    open_interest_fp: Option<&'a str>,
    #[serde(borrow)]
    yes_bid_size_fp: Option<&'a str>,
    #[serde(borrow)]
    yes_ask_size_fp: Option<&'a str>,
    #[serde(borrow)]
    last_trade_size_fp: Option<&'a str>,
    dollar_volume: Option<i64>,
    dollar_open_interest: Option<i64>,
    #[serde(rename = "Clock")]
    clock: Option<u64>,
    ts: Option<i64>,
    ts_ms: Option<i64>,
    #[serde(borrow)]
    time: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireSnapshot<'a> {
    market_ticker: &'a str,
    #[serde(borrow, default)]
    yes_dollars_fp: Vec<(&'a str, &'a str)>,
    #[serde(borrow, default)]
    no_dollars_fp: Vec<(&'a str, &'a str)>,
}

impl<'de> Deserialize<'de> for WireFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = WireFrame<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kalshi frame object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        let mut type_name: Option<&'de str> = None;
        let mut msg = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "type" => type_name = Some(map.next_value()?),
                "sid" => envelope.sid = Some(map.next_value()?),
                "seq" => envelope.seq = Some(map.next_value()?),
                "id" => envelope.id = Some(map.next_value()?),
                "sending_ts_ms" => envelope.sending_ts_ms = Some(map.next_value()?),
                "msg" => {
                    msg = Some(match type_name {
                        Some("orderbook_delta") => WireMsg::Delta(map.next_value()?),
                        Some("trade") => WireMsg::Trade(map.next_value()?),
                        Some("ticker") => WireMsg::Ticker(map.next_value()?),
                        Some("orderbook_snapshot") => WireMsg::Snapshot(map.next_value()?),
                        Some(other) => {
                            map.next_value::<IgnoredAny>()?;
                            WireMsg::Other(other)
                        }
                        None => return Err(de::Error::custom("`msg` before `type`")),
                    });
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let type_name = type_name.ok_or_else(|| de::Error::missing_field("type"))?;
        Ok(WireFrame { envelope, msg: msg.unwrap_or(WireMsg::Other(type_name)) })
    }
}

fn normalize<'a>(
    wire: WireFrame<'a>,
    levels: &'a mut Vec<Level>,
) -> Result<Frame<'a>, BaselineError> {
    let event = match wire.msg {
        WireMsg::Delta(d) => Event::Delta(delta(&d)?),
        WireMsg::Trade(t) => Event::Trade(trade(&t)?),
        WireMsg::Ticker(t) => Event::Ticker(ticker(&t)?),
        WireMsg::Snapshot(s) => {
            levels.clear();
            read_levels(&s.yes_dollars_fp, levels, "yes_dollars_fp")?;
            let yes_len = levels.len();
            read_levels(&s.no_dollars_fp, levels, "no_dollars_fp")?;
            let levels: &'a [Level] = levels;
            let (yes, no) = levels.split_at(yes_len);
            Event::Snapshot(BookSnapshot { market: s.market_ticker, yes, no })
        }
        WireMsg::Other(type_name) => {
            return Ok(Frame { envelope: wire.envelope, message: Message::Unknown { type_name } });
        }
    };
    Ok(Frame { envelope: wire.envelope, message: Message::Event(event) })
}

fn side(s: WireSide) -> Side {
    match s {
        WireSide::Yes => Side::Yes,
        WireSide::No => Side::No,
    }
}

fn scaled(text: &str, scale: u32, field: &'static str) -> Result<i64, BaselineError> {
    parse_scaled(text.as_bytes(), scale).map_err(|_| BaselineError::Field(field))
}

/// A book price: strictly inside ($0, $1).
fn book_price(text: &str, field: &'static str) -> Result<u32, BaselineError> {
    let micros = scaled(text, PRICE_SCALE, field)?;
    if micros > 0 && micros < i64::from(DOLLAR_MICROS) {
        u32::try_from(micros).map_err(|_| BaselineError::Field(field))
    } else {
        Err(BaselineError::Field(field))
    }
}

/// A ticker quote: $0 and $1 included; `""` means none.
fn quote(text: Option<&str>, field: &'static str) -> Result<Option<u32>, BaselineError> {
    match text {
        None | Some("") => Ok(None),
        Some(t) => {
            let micros = scaled(t, PRICE_SCALE, field)?;
            if (0..=i64::from(DOLLAR_MICROS)).contains(&micros) {
                u32::try_from(micros).map(Some).map_err(|_| BaselineError::Field(field))
            } else {
                Err(BaselineError::Field(field))
            }
        }
    }
}

fn opt_size(text: Option<&str>, field: &'static str) -> Result<Option<i64>, BaselineError> {
    text.map(|t| scaled(t, SIZE_SCALE, field)).transpose()
}

/// Finest-resolution time wins; ties go to the candidate offered first (kdp's rule).
#[derive(Default)]
struct TimePick(Option<(i64, i64)>);

impl TimePick {
    fn offer(&mut self, ts_ns: i64, resolution_ns: i64) {
        if self.0.is_none_or(|(_, r)| resolution_ns < r) {
            self.0 = Some((ts_ns, resolution_ns));
        }
    }

    fn rfc3339(&mut self, text: Option<&str>, field: &'static str) -> Result<(), BaselineError> {
        if let Some(t) = text {
            let (ns, digits) =
                parse_rfc3339(t.as_bytes()).map_err(|_| BaselineError::Field(field))?;
            self.offer(ns, 10_i64.pow(9 - digits.min(9)));
        }
        Ok(())
    }

    fn scaled_int(
        &mut self,
        v: Option<i64>,
        unit_ns: i64,
        field: &'static str,
    ) -> Result<(), BaselineError> {
        if let Some(v) = v {
            self.offer(v.checked_mul(unit_ns).ok_or(BaselineError::Field(field))?, unit_ns);
        }
        Ok(())
    }

    fn get(self) -> Result<i64, BaselineError> {
        self.0.map(|(ns, _)| ns).ok_or(BaselineError::NoTime)
    }
}

fn delta<'a>(d: &WireDelta<'a>) -> Result<BookDelta<'a>, BaselineError> {
    let mut time = TimePick::default();
    time.rfc3339(d.ts, "ts")?;
    time.scaled_int(d.ts_ms, NS_PER_MS, "ts_ms")?;
    Ok(BookDelta {
        market: d.market_ticker,
        side: side(d.side),
        price_micros: book_price(d.price_dollars, "price_dollars")?,
        delta_centi: scaled(d.delta_fp, SIZE_SCALE, "delta_fp")?,
        ts_exch_ns: time.get()?,
        client_order_id: d.client_order_id,
    })
}

fn trade<'a>(t: &WireTrade<'a>) -> Result<Trade<'a>, BaselineError> {
    let mut time = TimePick::default();
    time.scaled_int(t.ts_ms, NS_PER_MS, "ts_ms")?;
    time.scaled_int(t.ts, NS_PER_S, "ts")?;
    let yes_price_micros = book_price(t.yes_price_dollars, "yes_price_dollars")?;
    let no_price_micros = match t.no_price_dollars {
        Some(p) => book_price(p, "no_price_dollars")?,
        None => DOLLAR_MICROS - yes_price_micros,
    };
    let count_centi = scaled(t.count_fp, SIZE_SCALE, "count_fp")?;
    if count_centi <= 0 {
        return Err(BaselineError::Field("count_fp"));
    }
    Ok(Trade {
        trade_id: t.trade_id,
        market: t.market_ticker,
        yes_price_micros,
        no_price_micros,
        count_centi,
        taker_side: t.taker_outcome_side.or(t.taker_side).map(side),
        taker_book_side: t.taker_book_side.map(|b| match b {
            WireBookSide::Ask => BookSide::Ask,
            WireBookSide::Bid => BookSide::Bid,
        }),
        is_block_trade: t.is_block_trade,
        ts_exch_ns: time.get()?,
    })
}

fn ticker<'a>(t: &WireTicker<'a>) -> Result<Ticker<'a>, BaselineError> {
    let mut time = TimePick::default();
    time.rfc3339(t.time, "time")?;
    time.scaled_int(t.ts_ms, NS_PER_MS, "ts_ms")?;
    time.scaled_int(t.ts, NS_PER_S, "ts")?;
    Ok(Ticker {
        market: t.market_ticker,
        price_micros: quote(t.price_dollars, "price_dollars")?,
        yes_bid_micros: quote(t.yes_bid_dollars, "yes_bid_dollars")?,
        yes_ask_micros: quote(t.yes_ask_dollars, "yes_ask_dollars")?,
        yes_bid_size_centi: opt_size(t.yes_bid_size_fp, "yes_bid_size_fp")?,
        yes_ask_size_centi: opt_size(t.yes_ask_size_fp, "yes_ask_size_fp")?,
        last_trade_size_centi: opt_size(t.last_trade_size_fp, "last_trade_size_fp")?,
        volume_centi: opt_size(t.volume_fp, "volume_fp")?,
        open_interest_centi: opt_size(t.open_interest_fp, "open_interest_fp")?,
        dollar_volume: t.dollar_volume,
        dollar_open_interest: t.dollar_open_interest,
        clock: t.clock,
        ts_exch_ns: time.get()?,
    })
}

fn read_levels<S: AsRef<str>>(
    wire: &[(S, S)],
    levels: &mut Vec<Level>,
    field: &'static str,
) -> Result<(), BaselineError> {
    for (price, size) in wire {
        let size_centi = scaled(size.as_ref(), SIZE_SCALE, field)?;
        if size_centi < 0 {
            return Err(BaselineError::Field(field));
        }
        levels.push(Level { price_micros: book_price(price.as_ref(), field)?, size_centi });
    }
    Ok(())
}
