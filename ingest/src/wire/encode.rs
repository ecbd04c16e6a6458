//! Normalized events → server frames, in the current or a legacy wire shape.
//!
//! The inverse of the parser, used by the property tests (every event encodes to a frame and
//! parses back to itself), the fuzz seeds and the benchmark's frame generator. The exchange
//! simulator has its own encoder on purpose: a misreading of the protocol shared by both sides
//! must not be able to hide behind green tests.

use std::fmt::Write as _;

use kdp_engine::event::{BookSnapshot, Event, Level, LifecycleKind, MarketLifecycle};

use super::Envelope;
use super::decimal::write_scaled;
use super::time::write_rfc3339;

/// Which era's field set to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Since 2026-04: `*_dollars` strings, `*_fp` counts, `ts_ms`.
    Current,
    /// 2025-09 .. 2026-01: integer cents and counts plus `*_dollars` twins (snapshots with
    /// `[["0.080", 300]]` levels).
    LegacyDollars,
    /// Before 2025-09: integer cents and integer counts only.
    LegacyCents,
}

const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// Encodes `event` as a server frame with the given envelope, or `None` when the shape cannot
/// carry the event exactly (sub-cent prices or fractional sizes in a legacy shape, sub-ms trade
/// times, ...).
pub fn encode_event(event: &Event<'_>, env: &Envelope, shape: Shape) -> Option<String> {
    let mut out = String::with_capacity(256);
    let type_name = match event {
        Event::Snapshot(_) => "orderbook_snapshot",
        Event::Delta(_) => "orderbook_delta",
        Event::Trade(_) => "trade",
        Event::Ticker(_) => "ticker",
        Event::MarketLifecycle(m) if m.multivariate => "multivariate_market_lifecycle",
        Event::MarketLifecycle(_) => "market_lifecycle_v2",
        Event::EventLifecycle(_) => "event_lifecycle",
    };
    let _ = write!(out, r#"{{"type":"{type_name}""#);
    for (name, v) in [("id", env.id), ("sid", env.sid), ("seq", env.seq)] {
        if let Some(v) = v {
            let _ = write!(out, r#","{name}":{v}"#);
        }
    }
    if let Some(v) = env.sending_ts_ms {
        let _ = write!(out, r#","sending_ts_ms":{v}"#);
    }
    out.push_str(r#","msg":"#);
    match event {
        Event::Snapshot(s) => snapshot(&mut out, s, shape)?,
        Event::Delta(d) => {
            open_with(&mut out, "market_ticker", d.market);
            if shape != Shape::Current {
                let _ = write!(
                    out,
                    r#","price":{},"delta":{}"#,
                    cents(d.price_micros)?,
                    whole(d.delta_centi)?
                );
            }
            if shape != Shape::LegacyCents {
                out.push_str(r#","price_dollars":""#);
                dollars(&mut out, d.price_micros);
                out.push('"');
            }
            if shape == Shape::Current {
                out.push_str(r#","delta_fp":""#);
                write_scaled(&mut out, d.delta_centi, 2);
                out.push('"');
            }
            let _ = write!(out, r#","side":"{}","ts":""#, d.side.as_str());
            write_rfc3339(&mut out, d.ts_exch_ns, frac_digits(d.ts_exch_ns));
            out.push('"');
            if shape == Shape::Current {
                let _ = write!(out, r#","ts_ms":{}"#, d.ts_exch_ns.div_euclid(NS_PER_MS));
            }
            if let Some(c) = d.client_order_id {
                str_field(&mut out, "client_order_id", c);
            }
            out.push('}');
        }
        Event::Trade(t) => {
            open_with(&mut out, "trade_id", t.trade_id);
            str_field(&mut out, "market_ticker", t.market);
            if shape != Shape::Current {
                let _ = write!(
                    out,
                    r#","yes_price":{},"no_price":{},"count":{}"#,
                    cents(t.yes_price_micros)?,
                    cents(t.no_price_micros)?,
                    whole(t.count_centi)?
                );
            }
            if shape != Shape::LegacyCents {
                out.push_str(r#","yes_price_dollars":""#);
                dollars(&mut out, t.yes_price_micros);
                out.push_str(r#"","no_price_dollars":""#);
                dollars(&mut out, t.no_price_micros);
                out.push('"');
            }
            if shape == Shape::Current {
                out.push_str(r#","count_fp":""#);
                write_scaled(&mut out, t.count_centi, 2);
                out.push('"');
            }
            if let Some(s) = t.taker_side {
                let _ = write!(out, r#","taker_side":"{}""#, s.as_str());
                if shape == Shape::Current {
                    let _ = write!(out, r#","taker_outcome_side":"{}""#, s.as_str());
                }
            }
            if let Some(b) = t.taker_book_side {
                let _ = write!(out, r#","taker_book_side":"{}""#, b.as_str());
            }
            if let Some(b) = t.is_block_trade {
                let _ = write!(out, r#","is_block_trade":{b}"#);
            }
            let _ = write!(out, r#","ts":{}"#, t.ts_exch_ns.div_euclid(NS_PER_S));
            if shape == Shape::Current {
                if t.ts_exch_ns % NS_PER_MS != 0 {
                    return None;
                }
                let _ = write!(out, r#","ts_ms":{}"#, t.ts_exch_ns / NS_PER_MS);
            } else if t.ts_exch_ns % NS_PER_S != 0 {
                return None;
            }
            out.push('}');
        }
        Event::Ticker(t) => {
            open_with(&mut out, "market_ticker", t.market);
            for (name, legacy, v) in [
                ("price_dollars", "price", t.price_micros),
                ("yes_bid_dollars", "yes_bid", t.yes_bid_micros),
                ("yes_ask_dollars", "yes_ask", t.yes_ask_micros),
            ] {
                if let (true, Some(p)) = (shape != Shape::Current, v) {
                    let _ = write!(out, r#","{legacy}":{}"#, cents(p)?);
                }
                if shape != Shape::LegacyCents {
                    match v {
                        Some(p) => {
                            let _ = write!(out, r#","{name}":""#);
                            dollars(&mut out, p);
                            out.push('"');
                        }
                        None if name == "price_dollars" => out.push_str(r#","price_dollars":"""#),
                        None => {}
                    }
                }
            }
            for (name, legacy, v) in [
                ("volume_fp", "volume", t.volume_centi),
                ("open_interest_fp", "open_interest", t.open_interest_centi),
            ] {
                let Some(v) = v else { continue };
                if shape == Shape::Current {
                    let _ = write!(out, r#","{name}":""#);
                    write_scaled(&mut out, v, 2);
                    out.push('"');
                } else {
                    let _ = write!(out, r#","{legacy}":{}"#, whole(v)?);
                }
            }
            for (name, v) in [
                ("yes_bid_size_fp", t.yes_bid_size_centi),
                ("yes_ask_size_fp", t.yes_ask_size_centi),
                ("last_trade_size_fp", t.last_trade_size_centi),
            ] {
                let Some(v) = v else { continue };
                if shape != Shape::Current {
                    return None;
                }
                let _ = write!(out, r#","{name}":""#);
                write_scaled(&mut out, v, 2);
                out.push('"');
            }
            for (name, v) in [
                ("dollar_volume", t.dollar_volume),
                ("dollar_open_interest", t.dollar_open_interest),
            ] {
                if let Some(v) = v {
                    let _ = write!(out, r#","{name}":{v}"#);
                }
            }
            if let Some(c) = t.clock {
                let _ = write!(out, r#","Clock":{c}"#);
            }
            let _ = write!(out, r#","ts":{}"#, t.ts_exch_ns.div_euclid(NS_PER_S));
            if shape == Shape::Current {
                let _ = write!(out, r#","ts_ms":{},"time":""#, t.ts_exch_ns.div_euclid(NS_PER_MS));
                write_rfc3339(&mut out, t.ts_exch_ns, frac_digits(t.ts_exch_ns));
                out.push('"');
            } else if t.ts_exch_ns % NS_PER_S != 0 {
                return None;
            }
            out.push('}');
        }
        Event::MarketLifecycle(m) => out.push_str(&m.payload),
        Event::EventLifecycle(e) => out.push_str(&e.payload),
    }
    out.push('}');
    Some(out)
}

fn snapshot(out: &mut String, s: &BookSnapshot<'_>, shape: Shape) -> Option<()> {
    open_with(out, "market_ticker", s.market);
    for (side, levels) in [("yes", s.yes), ("no", s.no)] {
        if levels.is_empty() {
            continue;
        }
        match shape {
            Shape::Current => {
                let _ = write!(out, r#","{side}_dollars_fp":["#);
                write_levels(out, levels, |out, l| {
                    out.push('"');
                    dollars(out, l.price_micros);
                    out.push_str(r#"",""#);
                    write_scaled(out, l.size_centi, 2);
                    out.push('"');
                    Some(())
                })?;
            }
            Shape::LegacyDollars => {
                let _ = write!(out, r#","{side}_dollars":["#);
                write_levels(out, levels, |out, l| {
                    out.push('"');
                    dollars(out, l.price_micros);
                    let _ = write!(out, r#"",{}"#, whole(l.size_centi)?);
                    Some(())
                })?;
            }
            Shape::LegacyCents => {
                let _ = write!(out, r#","{side}":["#);
                write_levels(out, levels, |out, l| {
                    let _ = write!(out, "{},{}", cents(l.price_micros)?, whole(l.size_centi)?);
                    Some(())
                })?;
            }
        }
    }
    out.push('}');
    Some(())
}

fn write_levels(
    out: &mut String,
    levels: &[Level],
    mut each: impl FnMut(&mut String, &Level) -> Option<()>,
) -> Option<()> {
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        each(out, l)?;
        out.push(']');
    }
    out.push(']');
    Some(())
}

/// Dollar text with 4 decimals when exact (Kalshi's usual), else 6.
fn dollars(out: &mut String, micros: u32) {
    if micros.is_multiple_of(100) {
        write_scaled(out, i64::from(micros / 100), 4);
    } else {
        write_scaled(out, i64::from(micros), 6);
    }
}

/// Legacy integer cents, when exact.
fn cents(micros: u32) -> Option<u32> {
    micros.is_multiple_of(10_000).then_some(micros / 10_000)
}

/// Legacy whole contracts, when exact.
fn whole(centi: i64) -> Option<i64> {
    (centi % 100 == 0).then_some(centi / 100)
}

/// Fraction digits that carry `ts_ns` exactly: µs as Kalshi sends today, ns when needed.
fn frac_digits(ts_ns: i64) -> u32 {
    if ts_ns % 1_000 == 0 { 6 } else { 9 }
}

/// The compact `msg` JSON of a market lifecycle event built from its typed fields, in the field
/// order Kalshi uses. A test helper for building consistent events; the parser keeps whatever
/// the exchange sent as the payload.
pub fn market_lifecycle_payload(m: &MarketLifecycle<'_>) -> String {
    let kind = match m.kind {
        LifecycleKind::Created => "created",
        LifecycleKind::Activated => "activated",
        LifecycleKind::Deactivated => "deactivated",
        LifecycleKind::CloseDateUpdated => "close_date_updated",
        LifecycleKind::Determined => "determined",
        LifecycleKind::Settled => "settled",
        LifecycleKind::PriceLevelStructureUpdated => "price_level_structure_updated",
        LifecycleKind::MetadataUpdated => "metadata_updated",
        LifecycleKind::Other(s) => s,
    };
    let mut out = String::with_capacity(128);
    open_with(&mut out, "market_ticker", m.market);
    str_field(&mut out, "event_type", kind);
    for (name, v) in [
        ("open_ts", m.open_ts_s),
        ("close_ts", m.close_ts_s),
        ("determination_ts", m.determination_ts_s),
        ("settled_ts", m.settled_ts_s),
    ] {
        if let Some(v) = v {
            let _ = write!(out, r#","{name}":{v}"#);
        }
    }
    if let Some(r) = m.result {
        str_field(&mut out, "result", r);
    }
    if let Some(v) = m.settlement_value_micros {
        out.push_str(r#","settlement_value":""#);
        dollars(&mut out, v);
        out.push('"');
    }
    if let Some(p) = m.price_level_structure {
        str_field(&mut out, "price_level_structure", p);
    }
    out.push('}');
    out
}

/// Writes `s` as a JSON string literal, escaping quotes, backslashes and control characters.
pub(super) fn write_json_str(s: &str, out: &mut String) {
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

/// `,"name":` followed by `value` as a JSON string.
fn str_field(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, r#","{name}":"#);
    write_json_str(value, out);
}

/// `{"name":` followed by `value` as a JSON string: the start of a `msg` object.
fn open_with(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, r#"{{"{name}":"#);
    write_json_str(value, out);
}
