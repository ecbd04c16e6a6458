//! The simulator's own encoding of Kalshi's WebSocket frames (hand-written JSON with proper
//! string escaping; never kdp-ingest's wire code).
//!
//! Where it sits: the hub encodes each exchange event's `msg` body once ([`delta_body`],
//! [`trade_body`], ...), so every connection receives byte-identical content; a session only
//! wraps that body in its own envelope ([`frame`]: `type`, `id`, `sid`, `seq`). Command replies
//! (`subscribed`, `ok`, `unsubscribed`, `error`) are built here too.
//!
//! Shapes follow the current protocol: prices as `*_dollars` strings with 4 decimals (6 when a
//! price has sub-cent-hundredth digits), counts as `*_fp` strings with 2 decimals, delta `ts` as
//! RFC3339 with microseconds plus `ts_ms`, trade/ticker `ts` in whole seconds plus `ts_ms`, ticker
//! `time` as RFC3339. [`Shape::WithLegacy`] adds the pre-2026-03 integer fields (cents, whole
//! counts) wherever the value is representable in them.

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use crate::market::model::{
    BookLevels, BookSide, EventInfo, Level, LifecycleKind, MarketInfo, SeriesInfo, Side,
    TickerState, civil_from_days,
};

/// Which generation of field shapes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Current fields only (`*_dollars`, `*_fp`, `ts_ms`).
    #[default]
    Current,
    /// Current fields plus the legacy integer ones (`price`, `delta`, `yes`/`no`, `count`,
    /// `yes_bid`, `volume`, ...), as sent during the 2025–2026 transition.
    WithLegacy,
}

const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_MS: i64 = 1_000_000;
const NS_PER_US: i64 = 1_000;
const MICROS_PER_CENT: u32 = 10_000;
const CENTI_PER_CONTRACT: i64 = 100;

/// The deterministic `market_id` UUID of a ticker: SHA-256 of `"kdp-sim/market/" + ticker`,
/// first 16 bytes, stamped as a version-4/variant-1 UUID so it looks like Kalshi's.
pub fn market_uuid(ticker: &str) -> String {
    let digest = Sha256::new().chain_update(b"kdp-sim/market/").chain_update(ticker).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid_text(&bytes)
}

/// Lower-case hyphenated UUID text of 16 bytes.
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Appends `s` as a JSON string literal (quotes, backslashes and control characters escaped).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a micro-dollar price as Kalshi's `*_dollars` text: 4 decimals (`0.4200`), or 6 when
/// the value has digits below 4 dp.
pub fn write_dollars(out: &mut String, micros: u32) {
    let whole = micros / 1_000_000;
    let frac = micros % 1_000_000;
    if frac.is_multiple_of(100) {
        let _ = write!(out, "{whole}.{:04}", frac / 100);
    } else {
        let _ = write!(out, "{whole}.{frac:06}");
    }
}

/// Appends a micro-dollar price as a quoted dollar string ([`write_dollars`]).
pub fn push_dollars(out: &mut String, micros: u32) {
    out.push('"');
    write_dollars(out, micros);
    out.push('"');
}

/// Writes a count in hundredths as Kalshi's `*_fp` text: 2 decimals, signed.
pub fn write_fp(out: &mut String, centi: i64) {
    let sign = if centi < 0 { "-" } else { "" };
    let abs = centi.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:02}", abs / 100, abs % 100);
}

/// Appends a count in hundredths as a quoted 2-decimal string ([`write_fp`]).
pub fn push_fp(out: &mut String, centi: i64) {
    out.push('"');
    write_fp(out, centi);
    out.push('"');
}

/// Appends an RFC3339 UTC time with microseconds, quoted: `"2026-09-25T19:16:20.921884Z"`.
pub fn push_rfc3339_us(out: &mut String, ts_ns: i64) {
    let secs = ts_ns.div_euclid(NS_PER_S);
    let micros = ts_ns.rem_euclid(NS_PER_S) / NS_PER_US;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z\"",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
}

fn key(out: &mut String, name: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

fn legacy_cents(micros: u32) -> Option<u32> {
    micros.is_multiple_of(MICROS_PER_CENT).then_some(micros / MICROS_PER_CENT)
}

fn legacy_count(centi: i64) -> Option<i64> {
    (centi % CENTI_PER_CONTRACT == 0).then_some(centi / CENTI_PER_CONTRACT)
}

fn push_ticker_and_id(out: &mut String, ticker: &str) {
    key(out, "market_ticker");
    push_json_str(out, ticker);
    key(out, "market_id");
    push_json_str(out, &market_uuid(ticker));
}

/// `orderbook_delta` body.
pub fn delta_body(
    ticker: &str,
    side: Side,
    price_micros: u32,
    delta_centi: i64,
    ts_ns: i64,
    shape: Shape,
) -> String {
    let mut out = String::with_capacity(200);
    out.push('{');
    push_ticker_and_id(&mut out, ticker);
    key(&mut out, "price_dollars");
    push_dollars(&mut out, price_micros);
    key(&mut out, "delta_fp");
    push_fp(&mut out, delta_centi);
    key(&mut out, "side");
    push_json_str(&mut out, side.as_str());
    key(&mut out, "ts");
    push_rfc3339_us(&mut out, ts_ns);
    key(&mut out, "ts_ms");
    let _ = write!(out, "{}", ts_ns.div_euclid(NS_PER_MS));
    if shape == Shape::WithLegacy {
        if let Some(cents) = legacy_cents(price_micros) {
            key(&mut out, "price");
            let _ = write!(out, "{cents}");
        }
        if let Some(count) = legacy_count(delta_centi) {
            key(&mut out, "delta");
            let _ = write!(out, "{count}");
        }
    }
    out.push('}');
    out
}

fn push_levels_fp(out: &mut String, name: &str, levels: &[Level]) {
    if levels.is_empty() {
        return;
    }
    key(out, name);
    out.push('[');
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_dollars(out, l.price_micros);
        out.push(',');
        push_fp(out, l.size_centi);
        out.push(']');
    }
    out.push(']');
}

fn push_levels_legacy(out: &mut String, side: &str, levels: &[Level]) {
    let cents: Option<Vec<(u32, i64)>> = levels
        .iter()
        .map(|l| Some((legacy_cents(l.price_micros)?, legacy_count(l.size_centi)?)))
        .collect();
    let Some(cents) = cents.filter(|c| !c.is_empty()) else { return };
    key(out, side);
    out.push('[');
    for (i, (c, n)) in cents.iter().enumerate() {
        let _ = write!(out, "{}[{c},{n}]", if i > 0 { "," } else { "" });
    }
    out.push(']');
    key(out, &format!("{side}_dollars"));
    out.push('[');
    for (i, (l, (_, n))) in levels.iter().zip(&cents).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_dollars(out, l.price_micros);
        let _ = write!(out, ",{n}]");
    }
    out.push(']');
}

/// `orderbook_snapshot` body (a side's key is absent when the side is empty).
pub fn snapshot_body(ticker: &str, book: &BookLevels, shape: Shape) -> String {
    let mut out = String::with_capacity(128 + 32 * (book.yes.len() + book.no.len()));
    out.push('{');
    push_ticker_and_id(&mut out, ticker);
    push_levels_fp(&mut out, "yes_dollars_fp", &book.yes);
    push_levels_fp(&mut out, "no_dollars_fp", &book.no);
    if shape == Shape::WithLegacy {
        push_levels_legacy(&mut out, "yes", &book.yes);
        push_levels_legacy(&mut out, "no", &book.no);
    }
    out.push('}');
    out
}

/// One trade's fields, for [`trade_body`].
#[derive(Debug, Clone, Copy)]
pub struct TradeFields<'a> {
    /// Market ticker.
    pub ticker: &'a str,
    /// Trade id bytes.
    pub trade_id: &'a [u8; 16],
    /// YES price.
    pub yes_price_micros: u32,
    /// Contracts in hundredths.
    pub count_centi: i64,
    /// Outcome the taker bought.
    pub taker_side: Side,
    /// Book side the taker hit.
    pub taker_book_side: BookSide,
    /// Exchange time.
    pub ts_ns: i64,
}

/// `trade` body.
pub fn trade_body(t: &TradeFields<'_>, shape: Shape) -> String {
    let no_price_micros = crate::market::model::DOLLAR_MICROS.saturating_sub(t.yes_price_micros);
    let mut out = String::with_capacity(320);
    out.push('{');
    key(&mut out, "trade_id");
    push_json_str(&mut out, &uuid_text(t.trade_id));
    key(&mut out, "market_ticker");
    push_json_str(&mut out, t.ticker);
    key(&mut out, "yes_price_dollars");
    push_dollars(&mut out, t.yes_price_micros);
    key(&mut out, "no_price_dollars");
    push_dollars(&mut out, no_price_micros);
    key(&mut out, "count_fp");
    push_fp(&mut out, t.count_centi);
    key(&mut out, "taker_side");
    push_json_str(&mut out, t.taker_side.as_str());
    key(&mut out, "taker_outcome_side");
    push_json_str(&mut out, t.taker_side.as_str());
    key(&mut out, "taker_book_side");
    push_json_str(&mut out, t.taker_book_side.as_str());
    key(&mut out, "is_block_trade");
    out.push_str("false");
    key(&mut out, "ts");
    let _ = write!(out, "{}", t.ts_ns.div_euclid(NS_PER_S));
    key(&mut out, "ts_ms");
    let _ = write!(out, "{}", t.ts_ns.div_euclid(NS_PER_MS));
    if shape == Shape::WithLegacy {
        if let (Some(yes), Some(no)) =
            (legacy_cents(t.yes_price_micros), legacy_cents(no_price_micros))
        {
            let _ = write!(out, ",\"yes_price\":{yes},\"no_price\":{no}");
        }
        if let Some(count) = legacy_count(t.count_centi) {
            let _ = write!(out, ",\"count\":{count}");
        }
    }
    out.push('}');
    out
}

/// `ticker` body. `price_dollars` is `""` before the first trade.
pub fn ticker_body(ticker: &str, s: &TickerState, ts_ns: i64, shape: Shape) -> String {
    let mut out = String::with_capacity(420);
    out.push('{');
    push_ticker_and_id(&mut out, ticker);
    key(&mut out, "price_dollars");
    match s.last_price_micros {
        Some(p) => push_dollars(&mut out, p),
        None => out.push_str("\"\""),
    }
    key(&mut out, "yes_bid_dollars");
    push_dollars(&mut out, s.yes_bid_micros);
    key(&mut out, "yes_ask_dollars");
    push_dollars(&mut out, s.yes_ask_micros);
    key(&mut out, "volume_fp");
    push_fp(&mut out, s.volume_centi);
    key(&mut out, "open_interest_fp");
    push_fp(&mut out, s.open_interest_centi);
    let _ = write!(
        out,
        ",\"dollar_volume\":{},\"dollar_open_interest\":{}",
        s.dollar_volume, s.dollar_open_interest
    );
    key(&mut out, "yes_bid_size_fp");
    push_fp(&mut out, s.yes_bid_size_centi);
    key(&mut out, "yes_ask_size_fp");
    push_fp(&mut out, s.yes_ask_size_centi);
    key(&mut out, "last_trade_size_fp");
    push_fp(&mut out, s.last_trade_size_centi.unwrap_or(0));
    let _ = write!(
        out,
        ",\"ts\":{},\"ts_ms\":{}",
        ts_ns.div_euclid(NS_PER_S),
        ts_ns.div_euclid(NS_PER_MS)
    );
    key(&mut out, "time");
    push_rfc3339_us(&mut out, ts_ns);
    if shape == Shape::WithLegacy {
        if let Some(p) = s.last_price_micros.and_then(legacy_cents) {
            let _ = write!(out, ",\"price\":{p}");
        }
        if let (Some(bid), Some(ask)) =
            (legacy_cents(s.yes_bid_micros), legacy_cents(s.yes_ask_micros))
        {
            let _ = write!(out, ",\"yes_bid\":{bid},\"yes_ask\":{ask}");
        }
        if let (Some(v), Some(oi)) =
            (legacy_count(s.volume_centi), legacy_count(s.open_interest_centi))
        {
            let _ = write!(out, ",\"volume\":{v},\"open_interest\":{oi}");
        }
    }
    out.push('}');
    out
}

fn lifecycle_name(kind: LifecycleKind) -> &'static str {
    match kind {
        LifecycleKind::Created => "created",
        LifecycleKind::Activated => "activated",
        LifecycleKind::Deactivated => "deactivated",
        LifecycleKind::CloseDateUpdated => "close_date_updated",
        LifecycleKind::Determined => "determined",
        LifecycleKind::Settled => "settled",
    }
}

/// `market_lifecycle_v2` body, from the market's state right after the event.
pub fn market_lifecycle_body(
    market: &MarketInfo,
    event: Option<&EventInfo>,
    kind: LifecycleKind,
    ts_ns: i64,
) -> String {
    let secs = |ns: i64| ns.div_euclid(NS_PER_S);
    let mut out = String::with_capacity(512);
    out.push('{');
    key(&mut out, "market_ticker");
    push_json_str(&mut out, &market.ticker);
    key(&mut out, "event_type");
    push_json_str(&mut out, lifecycle_name(kind));
    match kind {
        LifecycleKind::Created => {
            let _ = write!(
                out,
                ",\"exchange_index\":0,\"open_ts\":{},\"close_ts\":{}",
                secs(market.open_ts_ns),
                secs(market.close_ts_ns)
            );
            key(&mut out, "price_level_structure");
            push_json_str(&mut out, market.grid.name());
            key(&mut out, "price_ranges");
            out.push('[');
            for (i, &(start, end, step)) in market.grid.ranges().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"start\":");
                push_dollars(&mut out, start);
                out.push_str(",\"end\":");
                push_dollars(&mut out, end);
                out.push_str(",\"step\":");
                push_dollars(&mut out, step);
                out.push('}');
            }
            out.push(']');
            key(&mut out, "additional_metadata");
            out.push('{');
            let title = event.map_or("", |e| e.title.as_str());
            key(&mut out, "name");
            push_json_str(&mut out, &market.ticker);
            key(&mut out, "title");
            push_json_str(&mut out, title);
            key(&mut out, "yes_sub_title");
            push_json_str(&mut out, &market.yes_sub_title);
            out.push_str(",\"no_sub_title\":\"\"");
            key(&mut out, "rules_primary");
            push_json_str(&mut out, title);
            out.push_str(",\"rules_secondary\":\"\",\"can_close_early\":true");
            key(&mut out, "event_ticker");
            push_json_str(&mut out, event.map_or("", |e| e.ticker.as_str()));
            let _ = write!(out, ",\"expected_expiration_ts\":{}}}", secs(market.close_ts_ns));
        }
        LifecycleKind::Activated => out.push_str(",\"is_deactivated\":false"),
        LifecycleKind::Deactivated => out.push_str(",\"is_deactivated\":true"),
        LifecycleKind::CloseDateUpdated => {
            let _ = write!(out, ",\"close_ts\":{}", secs(market.close_ts_ns));
        }
        LifecycleKind::Determined => {
            let _ = write!(
                out,
                ",\"determination_ts\":{}",
                secs(market.determined_ts_ns.unwrap_or(ts_ns))
            );
            if let Some(result) = market.result {
                key(&mut out, "result");
                push_json_str(&mut out, result.as_str());
                key(&mut out, "settlement_value");
                let value = match result {
                    Side::Yes => crate::market::model::DOLLAR_MICROS,
                    Side::No => 0,
                };
                push_dollars(&mut out, value);
            }
        }
        LifecycleKind::Settled => {
            let _ = write!(out, ",\"settled_ts\":{}", secs(market.settled_ts_ns.unwrap_or(ts_ns)));
        }
    }
    out.push('}');
    out
}

/// `event_lifecycle` body.
pub fn event_lifecycle_body(event: &EventInfo, series: Option<&SeriesInfo>) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    key(&mut out, "event_ticker");
    push_json_str(&mut out, &event.ticker);
    out.push_str(",\"exchange_index\":0");
    key(&mut out, "title");
    push_json_str(&mut out, &event.title);
    key(&mut out, "subtitle");
    push_json_str(&mut out, &event.sub_title);
    key(&mut out, "collateral_return_type");
    push_json_str(&mut out, if event.mutually_exclusive { "MECNET" } else { "" });
    key(&mut out, "series_ticker");
    push_json_str(&mut out, series.map_or("", |s| s.ticker.as_str()));
    out.push('}');
    out
}

/// A whole frame: `{"type":..,"id":..,"sid":..,"seq":..,"msg":<body>}` with absent parts left
/// out. `body` must already be JSON.
pub fn frame(
    msg_type: &str,
    id: Option<u64>,
    sid: Option<u64>,
    seq: Option<u64>,
    body: Option<&str>,
) -> String {
    let mut out = String::with_capacity(64 + body.map_or(0, str::len));
    out.push_str("{\"type\":");
    push_json_str(&mut out, msg_type);
    for (name, value) in [("id", id), ("sid", sid), ("seq", seq)] {
        if let Some(v) = value {
            let _ = write!(out, ",\"{name}\":{v}");
        }
    }
    if let Some(body) = body {
        out.push_str(",\"msg\":");
        out.push_str(body);
    }
    out.push('}');
    out
}

/// `subscribed` reply.
pub fn subscribed(id: Option<u64>, channel: &str, sid: u64) -> String {
    let mut body = String::from("{\"channel\":");
    push_json_str(&mut body, channel);
    let _ = write!(body, ",\"sid\":{sid}}}");
    frame("subscribed", id, None, None, Some(&body))
}

/// `error` reply; `sid` when the error concerns a subscription.
pub fn error(id: Option<u64>, sid: Option<u64>, code: u32, msg: &str) -> String {
    let mut body = format!("{{\"code\":{code},\"msg\":");
    push_json_str(&mut body, msg);
    body.push('}');
    frame("error", id, sid, None, Some(&body))
}

/// `ok` reply to `update_subscription`: the full ticker list, or no `msg` with
/// `skip_ticker_ack`. `seq` is the sid's last used number (not consumed).
pub fn ok_tickers<'a>(
    id: Option<u64>,
    sid: u64,
    seq: u64,
    tickers: Option<impl Iterator<Item = &'a str>>,
) -> String {
    let body = tickers.map(|tickers| {
        let mut body = String::from("{\"market_tickers\":[");
        for (i, t) in tickers.enumerate() {
            if i > 0 {
                body.push(',');
            }
            push_json_str(&mut body, t);
        }
        body.push_str("]}");
        body
    });
    frame("ok", id, Some(sid), Some(seq), body.as_deref())
}

/// `ok` reply to `list_subscriptions`.
pub fn ok_list<'a>(id: Option<u64>, subs: impl Iterator<Item = (&'a str, u64)>) -> String {
    let mut body = String::from("[");
    for (i, (channel, sid)) in subs.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"channel\":");
        push_json_str(&mut body, channel);
        let _ = write!(body, ",\"sid\":{sid}}}");
    }
    body.push(']');
    frame("ok", id, None, None, Some(&body))
}

/// `unsubscribed` reply; `seq` is the sid's last used number (not consumed).
pub fn unsubscribed(id: Option<u64>, sid: u64, seq: u64) -> String {
    frame("unsubscribed", id, Some(sid), Some(seq), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_format_exactly() {
        let mut s = String::new();
        push_dollars(&mut s, 420_000);
        push_dollars(&mut s, 1_000_000);
        push_dollars(&mut s, 1_500);
        push_dollars(&mut s, 1_234);
        push_fp(&mut s, -3_000);
        push_fp(&mut s, 7_477);
        push_fp(&mut s, 5);
        push_rfc3339_us(&mut s, 1_790_363_780_921_884_123);
        push_rfc3339_us(&mut s, 951_782_400_000_000_000);
        assert_eq!(
            s,
            r#""0.4200""1.0000""0.0015""0.001234""-30.00""74.77""0.05""2026-09-25T19:16:20.921884Z""2000-02-29T00:00:00.000000Z""#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v, "a\"b\\c\n\u{1}é");
    }

    #[test]
    fn market_uuid_is_stable_and_well_formed() {
        let a = market_uuid("KXA-1");
        assert_eq!(a, market_uuid("KXA-1"));
        assert_ne!(a, market_uuid("KXA-2"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn delta_frame_matches_documented_shape() {
        let body = delta_body("KX-1", Side::Yes, 420_000, -3_000, 1_790_363_780_921_884_000, {
            Shape::Current
        });
        let f = frame("orderbook_delta", None, Some(2), Some(501), Some(&body));
        let v: serde_json::Value = serde_json::from_str(&f).expect("json");
        assert_eq!(v["type"], "orderbook_delta");
        assert_eq!(v["sid"], 2);
        assert_eq!(v["seq"], 501);
        assert_eq!(v["msg"]["price_dollars"], "0.4200");
        assert_eq!(v["msg"]["delta_fp"], "-30.00");
        assert_eq!(v["msg"]["side"], "yes");
        assert_eq!(v["msg"]["ts"], "2026-09-25T19:16:20.921884Z");
        assert_eq!(v["msg"]["ts_ms"], 1_790_363_780_921_i64);
        assert_eq!(v["msg"]["market_id"], market_uuid("KX-1"));
        let legacy = delta_body("KX-1", Side::No, 510_000, -100, 0, Shape::WithLegacy);
        let v: serde_json::Value = serde_json::from_str(&legacy).expect("json");
        assert_eq!((v["price"].as_i64(), v["delta"].as_i64()), (Some(51), Some(-1)));
    }

    #[test]
    fn snapshot_omits_empty_sides() {
        let book = BookLevels {
            yes: vec![
                Level { price_micros: 80_000, size_centi: 30_000 },
                Level { price_micros: 220_000, size_centi: 33_300 },
            ],
            no: vec![],
        };
        let body = snapshot_body("KX-1", &book, Shape::Current);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            v["yes_dollars_fp"],
            serde_json::json!([["0.0800", "300.00"], ["0.2200", "333.00"]])
        );
        assert!(v.get("no_dollars_fp").is_none());
    }
}
