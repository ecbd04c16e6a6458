//! Reading Kalshi messages off a simd-json tape, one pass over each object's fields.
//!
//! The tape is a flat array of nodes: an object node `{len, count}` is followed by `len` (key,
//! value) pairs, where a nested value occupies `count + 1` nodes. Each message reader walks its
//! fields once, keeps the value nodes it knows, then converts them with the precedence rules of
//! the module docs (most precise representation wins). Pure functions: no clock, no I/O.

use kdp_engine::event::{
    BookDelta, BookSide, BookSnapshot, DOLLAR_MICROS, Event, EventLifecycle, Level, LifecycleKind,
    MarketLifecycle, Side, Ticker, Trade,
};
use simd_json::{Node, StaticNode};

use super::decimal::{DecimalError, parse_scaled};
use super::encode::write_json_str;
use super::time::{TimeError, parse_rfc3339};
use super::{Envelope, Frame, Message, OkReply, ParseError, SubscriptionInfo};

/// A value on the tape: its first node and everything nested under it.
type Val<'t, 'a> = &'t [Node<'a>];

/// Decimals kept for prices: micro-dollars.
const PRICE_SCALE: u32 = 6;
/// Decimals kept for sizes: hundredths of a contract.
const SIZE_SCALE: u32 = 2;
/// Micro-dollars per legacy integer cent.
const MICROS_PER_CENT: i64 = 10_000;
/// Nanoseconds per millisecond and per second.
const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// Number of tape nodes a value occupies.
#[inline]
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// Iterates the (key, value) pairs of the object starting at `nodes[0]`.
struct Fields<'t, 'a> {
    nodes: &'t [Node<'a>],
    idx: usize,
    left: usize,
}

fn fields<'t, 'a>(v: Val<'t, 'a>, field: &'static str) -> Result<Fields<'t, 'a>, ParseError> {
    match v.first() {
        Some(Node::Object { len, .. }) => Ok(Fields { nodes: v, idx: 1, left: *len }),
        _ => Err(ParseError::NotAnObject { field }),
    }
}

impl<'t, 'a> Iterator for Fields<'t, 'a> {
    type Item = (&'a str, Val<'t, 'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Node::String(key) = *self.nodes.get(self.idx)? else { return None };
        let value_at = self.idx + 1;
        let len = span(self.nodes.get(value_at)?);
        self.idx = value_at + len;
        Some((key, self.nodes.get(value_at..value_at + len)?))
    }
}

/// Iterates the elements of the array starting at `nodes[0]`.
fn elements<'t, 'a>(
    v: Val<'t, 'a>,
    field: &'static str,
) -> Result<impl Iterator<Item = Val<'t, 'a>>, ParseError> {
    let Some(Node::Array { len, .. }) = v.first() else {
        return Err(ParseError::WrongType { field, expected: "an array" });
    };
    let mut idx = 1;
    Ok((0..*len).map_while(move |_| {
        let len = span(v.get(idx)?);
        let item = v.get(idx..idx + len)?;
        idx += len;
        Some(item)
    }))
}

fn string<'a>(v: Val<'_, 'a>, field: &'static str) -> Result<&'a str, ParseError> {
    match v.first() {
        Some(Node::String(s)) => Ok(s),
        _ => Err(ParseError::WrongType { field, expected: "a string" }),
    }
}

fn uint(v: Val<'_, '_>, field: &'static str) -> Result<u64, ParseError> {
    match v.first() {
        Some(Node::Static(StaticNode::U64(n))) => Ok(*n),
        Some(Node::Static(StaticNode::I64(n))) if *n >= 0 => Ok(n.unsigned_abs()),
        _ => Err(ParseError::WrongType { field, expected: "a non-negative integer" }),
    }
}

fn int(v: Val<'_, '_>, field: &'static str) -> Result<i64, ParseError> {
    match v.first() {
        Some(Node::Static(StaticNode::I64(n))) => Ok(*n),
        Some(Node::Static(StaticNode::U64(n))) => {
            i64::try_from(*n).map_err(|_| ParseError::OutOfRange { field, value: i64::MAX })
        }
        _ => Err(ParseError::WrongType { field, expected: "an integer" }),
    }
}

fn boolean(v: Val<'_, '_>, field: &'static str) -> Result<bool, ParseError> {
    match v.first() {
        Some(Node::Static(StaticNode::Bool(b))) => Ok(*b),
        _ => Err(ParseError::WrongType { field, expected: "a boolean" }),
    }
}

fn is_null(v: Val<'_, '_>) -> bool {
    matches!(v.first(), Some(Node::Static(StaticNode::Null)))
}

/// A decimal at `scale` decimals: a string (`"0.4200"`), or a JSON integer counted in the
/// field's own unit (`int_scale`: 10^scale for whole dollars/contracts). Floats are refused.
fn scaled(
    v: Val<'_, '_>,
    field: &'static str,
    scale: u32,
    int_unit: i64,
) -> Result<i64, ParseError> {
    match v.first() {
        Some(Node::String(s)) => parse_scaled(s.as_bytes(), scale).map_err(|e| match e {
            DecimalError::Syntax => ParseError::BadDecimal { field },
            DecimalError::TooMuchPrecision => {
                ParseError::TooMuchPrecision { field, max_decimals: scale as u8 }
            }
            DecimalError::Overflow => ParseError::OutOfRange { field, value: i64::MAX },
        }),
        Some(Node::Static(StaticNode::F64(_))) => Err(ParseError::InexactNumber { field }),
        Some(Node::Static(_)) => {
            let n = int(v, field)?;
            n.checked_mul(int_unit).ok_or(ParseError::OutOfRange { field, value: n })
        }
        _ => Err(ParseError::WrongType { field, expected: "a decimal string" }),
    }
}

/// Price in micro-dollars from a dollar string (or whole-dollar integer), checked to `range`.
fn price_dollars(
    v: Val<'_, '_>,
    field: &'static str,
    range: PriceRange,
) -> Result<u32, ParseError> {
    range.check(field, scaled(v, field, PRICE_SCALE, i64::from(DOLLAR_MICROS))?)
}

/// Price in micro-dollars from legacy integer cents, checked to `range`.
fn price_cents(v: Val<'_, '_>, field: &'static str, range: PriceRange) -> Result<u32, ParseError> {
    let cents = int(v, field)?;
    range.check(field, cents.saturating_mul(MICROS_PER_CENT))
}

/// Size in hundredths from a `*_fp` string (or whole-contract integer).
fn size_fp(v: Val<'_, '_>, field: &'static str) -> Result<i64, ParseError> {
    scaled(v, field, SIZE_SCALE, 100)
}

/// Which prices a field may hold.
#[derive(Clone, Copy)]
enum PriceRange {
    /// Book levels, deltas and trades: strictly inside ($0, $1).
    Book,
    /// Ticker quotes and settlement values: $0 and $1 included (empty side / settled).
    Closed,
}

impl PriceRange {
    fn check(self, field: &'static str, micros: i64) -> Result<u32, ParseError> {
        let max = i64::from(DOLLAR_MICROS);
        let ok = match self {
            PriceRange::Book => micros > 0 && micros < max,
            PriceRange::Closed => (0..=max).contains(&micros),
        };
        if ok {
            u32::try_from(micros).map_err(|_| ParseError::OutOfRange { field, value: micros })
        } else {
            Err(ParseError::OutOfRange { field, value: micros })
        }
    }
}

fn side(v: Val<'_, '_>, field: &'static str) -> Result<Side, ParseError> {
    match string(v, field)? {
        "yes" => Ok(Side::Yes),
        "no" => Ok(Side::No),
        _ => Err(ParseError::BadSide { field }),
    }
}

fn book_side(v: Val<'_, '_>, field: &'static str) -> Result<BookSide, ParseError> {
    match string(v, field)? {
        "ask" => Ok(BookSide::Ask),
        "bid" => Ok(BookSide::Bid),
        _ => Err(ParseError::BadSide { field }),
    }
}

/// Candidate exchange times of one message; the finest resolution wins, ties go to the
/// candidate offered first. All gatherers read the same bytes, so all pick the same time.
#[derive(Default)]
struct TimePick {
    best: Option<(i64, i64)>, // (ts_ns, resolution_ns)
}

impl TimePick {
    fn offer(&mut self, ts_ns: i64, resolution_ns: i64) {
        if self.best.is_none_or(|(_, r)| resolution_ns < r) {
            self.best = Some((ts_ns, resolution_ns));
        }
    }

    /// An RFC 3339 string, or (legacy) integer Unix seconds.
    fn offer_ts(&mut self, v: Val<'_, '_>, field: &'static str) -> Result<(), ParseError> {
        match v.first() {
            Some(Node::String(s)) => {
                let (ns, digits) = parse_rfc3339(s.as_bytes()).map_err(|e| match e {
                    TimeError::Syntax | TimeError::TooMuchPrecision | TimeError::OutOfRange => {
                        ParseError::BadTimestamp { field }
                    }
                })?;
                self.offer(ns, 10_i64.pow(9 - digits.min(9)));
            }
            _ => {
                let s = int(v, field)?;
                let ns = s.checked_mul(NS_PER_S).ok_or(ParseError::BadTimestamp { field })?;
                self.offer(ns, NS_PER_S);
            }
        }
        Ok(())
    }

    fn offer_ms(&mut self, v: Val<'_, '_>, field: &'static str) -> Result<(), ParseError> {
        let ms = int(v, field)?;
        let ns = ms.checked_mul(NS_PER_MS).ok_or(ParseError::BadTimestamp { field })?;
        self.offer(ns, NS_PER_MS);
        Ok(())
    }

    fn get(self, message: &'static str) -> Result<i64, ParseError> {
        self.best.map(|(ns, _)| ns).ok_or(ParseError::MissingField { message, field: "ts|ts_ms" })
    }
}

fn required<T>(v: Option<T>, message: &'static str, field: &'static str) -> Result<T, ParseError> {
    v.ok_or(ParseError::MissingField { message, field })
}

/// Parses a whole frame. For snapshots the levels go to `levels` (YES then NO) and the YES
/// count is returned; the caller points the snapshot's slices at them.
pub(super) fn frame<'a>(
    nodes: &[Node<'a>],
    levels: &mut Vec<Level>,
) -> Result<(Frame<'a>, Option<usize>), ParseError> {
    let mut envelope = Envelope::default();
    let mut type_name = None;
    let mut msg = None;
    let mut top_tickers = None;
    for (key, v) in fields(nodes, "frame")? {
        match key {
            "type" => type_name = Some(string(v, "type")?),
            "sid" => envelope.sid = Some(uint(v, "sid")?),
            "seq" => envelope.seq = Some(uint(v, "seq")?),
            "id" => envelope.id = Some(uint(v, "id")?),
            "sending_ts_ms" => envelope.sending_ts_ms = Some(int(v, "sending_ts_ms")?),
            "msg" => msg = Some(v),
            "market_tickers" => top_tickers = Some(v),
            _ => {}
        }
    }
    let type_name = required(type_name, "server", "type")?;
    let mut yes_len = None;
    let message = match type_name {
        "orderbook_delta" => Message::Event(Event::Delta(delta(msg_of(msg, "orderbook_delta")?)?)),
        "orderbook_snapshot" => {
            let (snap, n) = snapshot(msg_of(msg, "orderbook_snapshot")?, levels)?;
            yes_len = Some(n);
            Message::Event(Event::Snapshot(snap))
        }
        "trade" => Message::Event(Event::Trade(trade(msg_of(msg, "trade")?)?)),
        "ticker" => Message::Event(Event::Ticker(ticker(msg_of(msg, "ticker")?)?)),
        "market_lifecycle_v2" => Message::Event(Event::MarketLifecycle(market_lifecycle(
            msg_of(msg, "market_lifecycle_v2")?,
            false,
        )?)),
        "multivariate_market_lifecycle" => Message::Event(Event::MarketLifecycle(
            market_lifecycle(msg_of(msg, "multivariate_market_lifecycle")?, true)?,
        )),
        "event_lifecycle" => {
            Message::Event(Event::EventLifecycle(event_lifecycle(msg_of(msg, "event_lifecycle")?)?))
        }
        "subscribed" => {
            let m = msg_of(msg, "subscribed")?;
            let (mut channel, mut sid) = (None, None);
            for (key, v) in fields(m, "msg")? {
                match key {
                    "channel" => channel = Some(string(v, "channel")?),
                    "sid" => sid = Some(uint(v, "sid")?),
                    _ => {}
                }
            }
            Message::Subscribed {
                channel: required(channel, "subscribed", "channel")?,
                sid: required(sid.or(envelope.sid), "subscribed", "sid")?,
            }
        }
        "ok" => Message::Ok(ok_reply(msg, top_tickers)?),
        "unsubscribed" => Message::Unsubscribed,
        "error" => {
            let m = msg_of(msg, "error")?;
            let (mut code, mut text, mut market) = (None, None, None);
            for (key, v) in fields(m, "msg")? {
                match key {
                    "code" => code = Some(uint(v, "code")?),
                    "msg" => text = Some(string(v, "msg")?),
                    "market_ticker" => market = Some(string(v, "market_ticker")?),
                    _ => {}
                }
            }
            let code = required(code, "error", "code")?;
            Message::Error {
                code: u32::try_from(code)
                    .map_err(|_| ParseError::OutOfRange { field: "code", value: i64::MAX })?,
                message: text.unwrap_or(""),
                market_ticker: market,
            }
        }
        other => Message::Unknown { type_name: other },
    };
    Ok((Frame { envelope, message }, yes_len))
}

fn msg_of<'t, 'a>(
    msg: Option<Val<'t, 'a>>,
    message: &'static str,
) -> Result<Val<'t, 'a>, ParseError> {
    required(msg, message, "msg")
}

fn delta<'a>(m: Val<'_, 'a>) -> Result<BookDelta<'a>, ParseError> {
    const T: &str = "orderbook_delta";
    let (mut market, mut side_v, mut price_d, mut price_c, mut delta_fp, mut delta_i, mut coid) =
        (None, None, None, None, None, None, None);
    let mut time = TimePick::default();
    let (mut ts, mut ts_ms) = (None, None);
    for (key, v) in fields(m, "msg")? {
        match key {
            "market_ticker" => market = Some(string(v, "market_ticker")?),
            "side" => side_v = Some(v),
            "price_dollars" => price_d = Some(v),
            "price" => price_c = Some(v),
            "delta_fp" => delta_fp = Some(v),
            "delta" => delta_i = Some(v),
            "ts" => ts = Some(v),
            "ts_ms" => ts_ms = Some(v),
            "client_order_id" if !is_null(v) => coid = Some(string(v, "client_order_id")?),
            _ => {}
        }
    }
    if let Some(v) = ts {
        time.offer_ts(v, "ts")?;
    }
    if let Some(v) = ts_ms {
        time.offer_ms(v, "ts_ms")?;
    }
    let price_micros = match (price_d, price_c) {
        (Some(v), _) => price_dollars(v, "price_dollars", PriceRange::Book)?,
        (None, Some(v)) => price_cents(v, "price", PriceRange::Book)?,
        (None, None) => {
            return Err(ParseError::MissingField { message: T, field: "price_dollars" });
        }
    };
    let delta_centi = match (delta_fp, delta_i) {
        (Some(v), _) => size_fp(v, "delta_fp")?,
        (None, Some(v)) => size_fp(v, "delta")?,
        (None, None) => return Err(ParseError::MissingField { message: T, field: "delta_fp" }),
    };
    Ok(BookDelta {
        market: required(market, T, "market_ticker")?,
        side: side(required(side_v, T, "side")?, "side")?,
        price_micros,
        delta_centi,
        ts_exch_ns: time.get(T)?,
        client_order_id: coid,
    })
}

/// How one snapshot side is encoded on the wire.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum LevelShape {
    /// `[["0.4200", 10]]`: dollar strings with integer counts (2025-09 .. 2026-03).
    Dollars,
    /// `[[42, 10]]`: integer cents and counts (legacy).
    Cents,
    /// `[["0.4200", "10.00"]]`: dollar strings with `_fp` counts (current).
    DollarsFp,
}

fn snapshot<'a>(
    m: Val<'_, 'a>,
    levels: &mut Vec<Level>,
) -> Result<(BookSnapshot<'a>, usize), ParseError> {
    const T: &str = "orderbook_snapshot";
    let mut market = None;
    // Per side: the most precise representation seen so far.
    let mut yes: Option<(LevelShape, Val<'_, 'a>)> = None;
    let mut no: Option<(LevelShape, Val<'_, 'a>)> = None;
    for (key, v) in fields(m, "msg")? {
        let (slot, shape) = match key {
            "market_ticker" => {
                market = Some(string(v, "market_ticker")?);
                continue;
            }
            "yes_dollars_fp" => (&mut yes, LevelShape::DollarsFp),
            "no_dollars_fp" => (&mut no, LevelShape::DollarsFp),
            "yes_dollars" => (&mut yes, LevelShape::Dollars),
            "no_dollars" => (&mut no, LevelShape::Dollars),
            "yes" => (&mut yes, LevelShape::Cents),
            "no" => (&mut no, LevelShape::Cents),
            _ => continue,
        };
        if !is_null(v) && slot.is_none_or(|(s, _)| shape > s) {
            *slot = Some((shape, v));
        }
    }
    let market = required(market, T, "market_ticker")?;
    if let Some((shape, v)) = yes {
        read_levels(v, shape, levels, "yes_dollars_fp")?;
    }
    let yes_len = levels.len();
    if let Some((shape, v)) = no {
        read_levels(v, shape, levels, "no_dollars_fp")?;
    }
    Ok((BookSnapshot { market, yes: &[], no: &[] }, yes_len))
}

fn read_levels(
    v: Val<'_, '_>,
    shape: LevelShape,
    levels: &mut Vec<Level>,
    field: &'static str,
) -> Result<(), ParseError> {
    for level in elements(v, field)? {
        let mut parts = elements(level, field)?;
        let (Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::WrongType { field, expected: "[price, size] pairs" });
        };
        let price_micros = match shape {
            LevelShape::Cents => price_cents(p, field, PriceRange::Book)?,
            LevelShape::Dollars | LevelShape::DollarsFp => {
                price_dollars(p, field, PriceRange::Book)?
            }
        };
        let size_centi = size_fp(s, field)?;
        if size_centi < 0 {
            return Err(ParseError::OutOfRange { field, value: size_centi });
        }
        levels.push(Level { price_micros, size_centi });
    }
    Ok(())
}

fn trade<'a>(m: Val<'_, 'a>) -> Result<Trade<'a>, ParseError> {
    const T: &str = "trade";
    let (mut id, mut market, mut yes_d, mut no_d, mut yes_c, mut no_c) =
        (None, None, None, None, None, None);
    let (mut count_fp, mut count_i, mut taker, mut taker_outcome, mut book, mut block) =
        (None, None, None, None, None, None);
    let (mut ts, mut ts_ms) = (None, None);
    for (key, v) in fields(m, "msg")? {
        match key {
            "trade_id" => id = Some(string(v, "trade_id")?),
            "market_ticker" => market = Some(string(v, "market_ticker")?),
            "yes_price_dollars" => yes_d = Some(v),
            "no_price_dollars" => no_d = Some(v),
            "yes_price" => yes_c = Some(v),
            "no_price" => no_c = Some(v),
            "count_fp" => count_fp = Some(v),
            "count" => count_i = Some(v),
            "taker_side" if !is_null(v) => taker = Some(side(v, "taker_side")?),
            "taker_outcome_side" if !is_null(v) => {
                taker_outcome = Some(side(v, "taker_outcome_side")?);
            }
            "taker_book_side" if !is_null(v) => book = Some(book_side(v, "taker_book_side")?),
            "is_block_trade" if !is_null(v) => block = Some(boolean(v, "is_block_trade")?),
            "ts" => ts = Some(v),
            "ts_ms" => ts_ms = Some(v),
            _ => {}
        }
    }
    let mut time = TimePick::default();
    if let Some(v) = ts_ms {
        time.offer_ms(v, "ts_ms")?;
    }
    if let Some(v) = ts {
        time.offer_ts(v, "ts")?;
    }
    let yes_price_micros = match (yes_d, yes_c) {
        (Some(v), _) => price_dollars(v, "yes_price_dollars", PriceRange::Book)?,
        (None, Some(v)) => price_cents(v, "yes_price", PriceRange::Book)?,
        (None, None) => {
            return Err(ParseError::MissingField { message: T, field: "yes_price_dollars" });
        }
    };
    let no_price_micros = match (no_d, no_c) {
        (Some(v), _) => price_dollars(v, "no_price_dollars", PriceRange::Book)?,
        (None, Some(v)) => price_cents(v, "no_price", PriceRange::Book)?,
        (None, None) => DOLLAR_MICROS - yes_price_micros,
    };
    let count_centi = match (count_fp, count_i) {
        (Some(v), _) => size_fp(v, "count_fp")?,
        (None, Some(v)) => size_fp(v, "count")?,
        (None, None) => return Err(ParseError::MissingField { message: T, field: "count_fp" }),
    };
    if count_centi <= 0 {
        return Err(ParseError::OutOfRange { field: "count_fp", value: count_centi });
    }
    Ok(Trade {
        trade_id: required(id, T, "trade_id")?,
        market: required(market, T, "market_ticker")?,
        yes_price_micros,
        no_price_micros,
        count_centi,
        taker_side: taker_outcome.or(taker),
        taker_book_side: book,
        is_block_trade: block,
        ts_exch_ns: time.get(T)?,
    })
}

/// A ticker quote: `""` and `null` mean "none" (no trade yet / empty side).
fn quote(
    dollars: Option<Val<'_, '_>>,
    cents: Option<Val<'_, '_>>,
    field: &'static str,
    legacy_field: &'static str,
) -> Result<Option<u32>, ParseError> {
    match (dollars, cents) {
        (Some(v), _) if is_null(v) || matches!(v.first(), Some(Node::String(""))) => Ok(None),
        (Some(v), _) => price_dollars(v, field, PriceRange::Closed).map(Some),
        (None, Some(v)) if is_null(v) => Ok(None),
        (None, Some(v)) => price_cents(v, legacy_field, PriceRange::Closed).map(Some),
        (None, None) => Ok(None),
    }
}

fn opt_size(
    fp: Option<Val<'_, '_>>,
    legacy: Option<Val<'_, '_>>,
    field: &'static str,
    legacy_field: &'static str,
) -> Result<Option<i64>, ParseError> {
    match (fp, legacy) {
        (Some(v), _) if !is_null(v) => size_fp(v, field).map(Some),
        (_, Some(v)) if !is_null(v) => size_fp(v, legacy_field).map(Some),
        _ => Ok(None),
    }
}

fn ticker<'a>(m: Val<'_, 'a>) -> Result<Ticker<'a>, ParseError> {
    const T: &str = "ticker";
    let mut out = Ticker::default();
    let mut market = None;
    let (mut price_d, mut price_c, mut bid_d, mut bid_c, mut ask_d, mut ask_c) =
        (None, None, None, None, None, None);
    let (mut vol_fp, mut vol_i, mut oi_fp, mut oi_i, mut bid_sz, mut ask_sz, mut last_sz) =
        (None, None, None, None, None, None, None);
    let (mut ts, mut ts_ms, mut time_s) = (None, None, None);
    for (key, v) in fields(m, "msg")? {
        match key {
            "market_ticker" => market = Some(string(v, "market_ticker")?),
            "price_dollars" => price_d = Some(v),
            "price" => price_c = Some(v),
            "yes_bid_dollars" => bid_d = Some(v),
            "yes_bid" => bid_c = Some(v),
            "yes_ask_dollars" => ask_d = Some(v),
            "yes_ask" => ask_c = Some(v),
            "volume_fp" => vol_fp = Some(v),
            "volume" => vol_i = Some(v),
            "open_interest_fp" => oi_fp = Some(v),
            "open_interest" => oi_i = Some(v),
            "yes_bid_size_fp" => bid_sz = Some(v),
            "yes_ask_size_fp" => ask_sz = Some(v),
            "last_trade_size_fp" => last_sz = Some(v),
            "dollar_volume" if !is_null(v) => out.dollar_volume = Some(int(v, "dollar_volume")?),
            "dollar_open_interest" if !is_null(v) => {
                out.dollar_open_interest = Some(int(v, "dollar_open_interest")?);
            }
            "Clock" if !is_null(v) => out.clock = Some(uint(v, "Clock")?),
            "ts" => ts = Some(v),
            "ts_ms" => ts_ms = Some(v),
            "time" => time_s = Some(v),
            _ => {}
        }
    }
    let mut time = TimePick::default();
    if let Some(v) = time_s {
        time.offer_ts(v, "time")?;
    }
    if let Some(v) = ts_ms {
        time.offer_ms(v, "ts_ms")?;
    }
    if let Some(v) = ts {
        time.offer_ts(v, "ts")?;
    }
    out.market = required(market, T, "market_ticker")?;
    out.price_micros = quote(price_d, price_c, "price_dollars", "price")?;
    out.yes_bid_micros = quote(bid_d, bid_c, "yes_bid_dollars", "yes_bid")?;
    out.yes_ask_micros = quote(ask_d, ask_c, "yes_ask_dollars", "yes_ask")?;
    out.volume_centi = opt_size(vol_fp, vol_i, "volume_fp", "volume")?;
    out.open_interest_centi = opt_size(oi_fp, oi_i, "open_interest_fp", "open_interest")?;
    out.yes_bid_size_centi = opt_size(bid_sz, None, "yes_bid_size_fp", "")?;
    out.yes_ask_size_centi = opt_size(ask_sz, None, "yes_ask_size_fp", "")?;
    out.last_trade_size_centi = opt_size(last_sz, None, "last_trade_size_fp", "")?;
    out.ts_exch_ns = time.get(T)?;
    Ok(out)
}

fn lifecycle_kind(s: &str) -> LifecycleKind<'_> {
    match s {
        "created" => LifecycleKind::Created,
        "activated" => LifecycleKind::Activated,
        "deactivated" => LifecycleKind::Deactivated,
        "close_date_updated" => LifecycleKind::CloseDateUpdated,
        "determined" => LifecycleKind::Determined,
        "settled" => LifecycleKind::Settled,
        "price_level_structure_updated" => LifecycleKind::PriceLevelStructureUpdated,
        "metadata_updated" => LifecycleKind::MetadataUpdated,
        other => LifecycleKind::Other(other),
    }
}

fn opt_int(v: Val<'_, '_>, field: &'static str) -> Result<Option<i64>, ParseError> {
    if is_null(v) { Ok(None) } else { int(v, field).map(Some) }
}

fn market_lifecycle<'a>(
    m: Val<'_, 'a>,
    multivariate: bool,
) -> Result<MarketLifecycle<'a>, ParseError> {
    const T: &str = "market_lifecycle_v2";
    let (mut market, mut kind) = (None, None);
    let mut out = MarketLifecycle {
        market: "",
        kind: LifecycleKind::Created,
        multivariate,
        open_ts_s: None,
        close_ts_s: None,
        determination_ts_s: None,
        settled_ts_s: None,
        result: None,
        settlement_value_micros: None,
        price_level_structure: None,
        payload: String::new(),
    };
    for (key, v) in fields(m, "msg")? {
        match key {
            "market_ticker" => market = Some(string(v, "market_ticker")?),
            "event_type" => kind = Some(lifecycle_kind(string(v, "event_type")?)),
            "open_ts" => out.open_ts_s = opt_int(v, "open_ts")?,
            "close_ts" => out.close_ts_s = opt_int(v, "close_ts")?,
            "determination_ts" => out.determination_ts_s = opt_int(v, "determination_ts")?,
            "settled_ts" => out.settled_ts_s = opt_int(v, "settled_ts")?,
            "result" if !is_null(v) => out.result = Some(string(v, "result")?),
            "settlement_value" if !is_null(v) => {
                out.settlement_value_micros =
                    Some(price_dollars(v, "settlement_value", PriceRange::Closed)?);
            }
            "price_level_structure" if !is_null(v) => {
                out.price_level_structure = Some(string(v, "price_level_structure")?);
            }
            _ => {}
        }
    }
    out.market = required(market, T, "market_ticker")?;
    out.kind = required(kind, T, "event_type")?;
    out.payload = to_json(m);
    Ok(out)
}

fn event_lifecycle<'a>(m: Val<'_, 'a>) -> Result<EventLifecycle<'a>, ParseError> {
    let mut event_ticker = None;
    for (key, v) in fields(m, "msg")? {
        if key == "event_ticker" {
            event_ticker = Some(string(v, "event_ticker")?);
        }
    }
    Ok(EventLifecycle {
        event_ticker: required(event_ticker, "event_lifecycle", "event_ticker")?,
        payload: to_json(m),
    })
}

fn ok_reply<'a>(
    msg: Option<Val<'_, 'a>>,
    top_tickers: Option<Val<'_, 'a>>,
) -> Result<OkReply<'a>, ParseError> {
    let mut reply = OkReply::default();
    let mut tickers = top_tickers;
    match msg.and_then(|m| m.first()) {
        Some(Node::Object { .. }) => {
            for (key, v) in fields(msg.unwrap_or_default(), "msg")? {
                if key == "market_tickers" {
                    tickers = Some(v);
                }
            }
        }
        Some(Node::Array { .. }) => {
            let mut subs = Vec::new();
            for item in elements(msg.unwrap_or_default(), "msg")? {
                let (mut channel, mut sid) = (None, None);
                for (key, v) in fields(item, "msg")? {
                    match key {
                        "channel" => channel = Some(string(v, "channel")?),
                        "sid" => sid = Some(uint(v, "sid")?),
                        _ => {}
                    }
                }
                subs.push(SubscriptionInfo {
                    channel: required(channel, "ok", "channel")?,
                    sid: required(sid, "ok", "sid")?,
                });
            }
            reply.subscriptions = Some(subs);
        }
        _ => {}
    }
    if let Some(v) = tickers {
        let list: Result<Vec<&'a str>, ParseError> =
            elements(v, "market_tickers")?.map(|t| string(t, "market_tickers")).collect();
        reply.market_tickers = Some(list?);
    }
    Ok(reply)
}

/// Re-encodes a tape value as compact JSON (keys in the order sent). Used for the rare messages
/// whose whole content is kept (lifecycle), so the payload is independent of how the parse
/// buffer was modified in place.
fn to_json(v: Val<'_, '_>) -> String {
    let mut out = String::with_capacity(v.len() * 16);
    write_json(v, &mut out);
    out
}

fn write_json(v: Val<'_, '_>, out: &mut String) -> usize {
    use std::fmt::Write as _;
    let Some(node) = v.first() else { return 0 };
    match node {
        Node::String(s) => write_json_str(s, out),
        Node::Static(StaticNode::Null) => out.push_str("null"),
        Node::Static(StaticNode::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        Node::Static(StaticNode::I64(n)) => {
            let _ = write!(out, "{n}");
        }
        Node::Static(StaticNode::U64(n)) => {
            let _ = write!(out, "{n}");
        }
        // Metadata numbers (e.g. strikes) pass through unchanged in value: Rust prints the
        // shortest text that reads back as the same f64.
        Node::Static(StaticNode::F64(n)) => {
            let _ = write!(out, "{n:?}");
        }
        Node::Object { len, .. } => {
            out.push('{');
            let mut idx = 1;
            for i in 0..*len {
                if i > 0 {
                    out.push(',');
                }
                if let Some(Node::String(k)) = v.get(idx) {
                    write_json_str(k, out);
                }
                out.push(':');
                idx += 1;
                idx += write_json(v.get(idx..).unwrap_or_default(), out);
            }
            out.push('}');
        }
        Node::Array { len, .. } => {
            out.push('[');
            let mut idx = 1;
            for i in 0..*len {
                if i > 0 {
                    out.push(',');
                }
                idx += write_json(v.get(idx..).unwrap_or_default(), out);
            }
            out.push(']');
        }
    }
    span(node)
}
