//! WebSocket conformance: every kind of message the simulator sends, captured from a running
//! simulator over real TLS, is checked against a table of the protocol note's field names and
//! JSON types (§2–§4): the envelope (`type`, `id`, `sid`, `seq` present or absent exactly as
//! the note says; `ticker` has no `seq`, command replies carry the command's `id`), and each
//! `msg` field's name, JSON type and text format (`*_dollars` decimal strings with 4 places,
//! `*_fp` with 2, integers, RFC3339 with microseconds, UUIDs, `[price, count]` string pairs,
//! booleans), which fields are required, and that no field outside the table appears (so a
//! misspelt field name fails). Frames are read with `serde_json::Value` only: the simulator's
//! own encoder never checks itself. Every frame must also parse with kdp's `FrameParser` to the
//! same values the table check read.
//!
//! The market runs on a manual clock with short market lives, certain pauses and close-date
//! moves, so every lifecycle `event_type` the engine emits is seen within a bounded number of
//! steps.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod ws_support;

use std::collections::{BTreeMap, BTreeSet};

use kdp_engine::event::{BookSide, Event, LifecycleKind, Side};
use kdp_ingest::wire::{Channel, Command, FrameParser, MarketFilter, Message, UpdateAction};
use serde_json::{Map, Value};
use ws_support::{Client, Frame, busy_markets, client, fault, start};

// ---------------------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------------------

/// A field's JSON type and text format.
#[derive(Debug, Clone, Copy)]
enum T {
    /// Any string.
    Str,
    /// A non-empty string (tickers).
    Ticker,
    /// A price: decimal string with exactly 4 places, 0.0000..=1.0000.
    Dollars,
    /// [`T::Dollars`] or `""` (ticker `price_dollars` before the first trade).
    DollarsOrEmpty,
    /// A count: unsigned decimal string with exactly 2 places.
    Fp,
    /// A signed change: decimal string with exactly 2 places, optional `-`.
    SignedFp,
    /// A JSON integer (never a float).
    Int,
    /// A JSON boolean.
    Bool,
    /// RFC3339 UTC with exactly 6 fractional digits: `2026-09-25T19:16:20.921884Z`.
    TimeUs,
    /// A lower-case hyphenated UUID.
    Uuid,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// `[[price_dollars, count_fp], ...]`, ascending price.
    Levels,
    /// An array of non-empty strings.
    Tickers,
    /// A nested object with its own table.
    Obj(&'static [F]),
    /// An array of objects with this table.
    Objs(&'static [F]),
}

/// A field: name, type, required.
type F = (&'static str, T, bool);
const REQ: bool = true;
const OPT: bool = false;

const SIDES: &[&str] = &["yes", "no"];
const CHANNELS: &[&str] = &["orderbook_delta", "trade", "ticker", "market_lifecycle_v2"];

const SNAPSHOT: &[F] = &[
    ("market_ticker", T::Ticker, REQ),
    ("market_id", T::Uuid, REQ),
    ("yes_dollars_fp", T::Levels, OPT),
    ("no_dollars_fp", T::Levels, OPT),
];

const DELTA: &[F] = &[
    ("market_ticker", T::Ticker, REQ),
    ("market_id", T::Uuid, REQ),
    ("price_dollars", T::Dollars, REQ),
    ("delta_fp", T::SignedFp, REQ),
    ("side", T::OneOf(SIDES), REQ),
    ("ts", T::TimeUs, OPT),
    ("ts_ms", T::Int, OPT),
    ("client_order_id", T::Str, OPT),
    ("subaccount", T::Int, OPT),
];

const TRADE: &[F] = &[
    ("trade_id", T::Uuid, REQ),
    ("market_ticker", T::Ticker, REQ),
    ("yes_price_dollars", T::Dollars, REQ),
    ("no_price_dollars", T::Dollars, REQ),
    ("count_fp", T::Fp, REQ),
    ("taker_side", T::OneOf(SIDES), REQ),
    ("taker_outcome_side", T::OneOf(SIDES), REQ),
    ("taker_book_side", T::OneOf(&["ask", "bid"]), REQ),
    ("is_block_trade", T::Bool, REQ),
    ("ts", T::Int, REQ),
    ("ts_ms", T::Int, REQ),
];

const TICKER: &[F] = &[
    ("market_id", T::Uuid, REQ),
    ("market_ticker", T::Ticker, REQ),
    ("price_dollars", T::DollarsOrEmpty, REQ),
    ("yes_bid_dollars", T::Dollars, REQ),
    ("yes_ask_dollars", T::Dollars, REQ),
    ("volume_fp", T::Fp, REQ),
    ("open_interest_fp", T::Fp, REQ),
    ("dollar_volume", T::Int, REQ),
    ("dollar_open_interest", T::Int, REQ),
    ("yes_bid_size_fp", T::Fp, REQ),
    ("yes_ask_size_fp", T::Fp, REQ),
    ("last_trade_size_fp", T::Fp, REQ),
    ("ts", T::Int, REQ),
    ("ts_ms", T::Int, REQ),
    ("time", T::TimeUs, REQ),
    ("Clock", T::Int, OPT),
];

const PRICE_RANGE: &[F] =
    &[("start", T::Dollars, REQ), ("end", T::Dollars, REQ), ("step", T::Dollars, REQ)];

const ADDITIONAL_METADATA: &[F] = &[
    ("name", T::Str, REQ),
    ("title", T::Str, REQ),
    ("yes_sub_title", T::Str, REQ),
    ("no_sub_title", T::Str, REQ),
    ("rules_primary", T::Str, REQ),
    ("rules_secondary", T::Str, REQ),
    ("can_close_early", T::Bool, REQ),
    ("event_ticker", T::Ticker, REQ),
    ("expected_expiration_ts", T::Int, REQ),
    ("strike_type", T::Str, OPT),
    ("floor_strike", T::Int, OPT),
    ("cap_strike", T::Int, OPT),
];

const GRIDS: &[&str] = &["linear_cent", "deci_cent", "tapered_deci_cent"];

/// `market_lifecycle_v2`: the fields of every event, then each `event_type`'s own.
const LIFECYCLE_BASE: &[F] =
    &[("market_ticker", T::Ticker, REQ), ("event_type", T::OneOf(LIFECYCLE_TYPES), REQ)];
const LIFECYCLE_TYPES: &[&str] =
    &["created", "activated", "deactivated", "close_date_updated", "determined", "settled"];
const LIFECYCLE: &[(&str, &[F])] = &[
    (
        "created",
        &[
            ("exchange_index", T::Int, OPT),
            ("open_ts", T::Int, REQ),
            ("close_ts", T::Int, REQ),
            ("price_level_structure", T::OneOf(GRIDS), OPT),
            ("price_ranges", T::Objs(PRICE_RANGE), OPT),
            ("additional_metadata", T::Obj(ADDITIONAL_METADATA), OPT),
        ],
    ),
    ("activated", &[("is_deactivated", T::Bool, OPT)]),
    ("deactivated", &[("is_deactivated", T::Bool, OPT)]),
    ("close_date_updated", &[("close_ts", T::Int, REQ)]),
    (
        "determined",
        &[
            ("determination_ts", T::Int, REQ),
            ("result", T::OneOf(SIDES), REQ),
            ("settlement_value", T::Dollars, REQ),
        ],
    ),
    ("settled", &[("settled_ts", T::Int, REQ)]),
];

const EVENT_LIFECYCLE: &[F] = &[
    ("event_ticker", T::Ticker, REQ),
    ("exchange_index", T::Int, REQ),
    ("title", T::Str, REQ),
    ("subtitle", T::Str, REQ),
    ("collateral_return_type", T::OneOf(&["MECNET", "DIRECNET", ""]), REQ),
    ("series_ticker", T::Ticker, REQ),
    ("strike_date", T::Int, OPT),
    ("strike_period", T::Str, OPT),
];

const SUBSCRIBED: &[F] = &[("channel", T::OneOf(CHANNELS), REQ), ("sid", T::Int, REQ)];
const OK_UPDATE: &[F] = &[("market_tickers", T::Tickers, OPT)];
const OK_LIST_ITEM: &[F] = &[("channel", T::OneOf(CHANNELS), REQ), ("sid", T::Int, REQ)];
const ERROR: &[F] = &[
    ("code", T::Int, REQ),
    ("msg", T::Str, REQ),
    ("market_ticker", T::Ticker, OPT),
    ("market_tickers", T::Tickers, OPT),
];

/// Whether an envelope field is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
    Req,
    Absent,
    Opt,
}

/// What `msg` is.
#[derive(Debug, Clone, Copy)]
enum M {
    Absent,
    Obj(&'static [F]),
    /// An array of objects.
    List(&'static [F]),
    /// `market_lifecycle_v2`: [`LIFECYCLE_BASE`] plus the `event_type`'s own fields.
    Lifecycle,
}

/// One message kind: its name (the `type`, refined for `ok` and lifecycle events), the
/// envelope fields and the `msg`.
struct KindSpec {
    name: &'static str,
    id: P,
    sid: P,
    seq: P,
    msg: M,
}

const KINDS: &[KindSpec] = &[
    // `id` only on the snapshots a `get_snapshot` asked for.
    KindSpec {
        name: "orderbook_snapshot",
        id: P::Opt,
        sid: P::Req,
        seq: P::Req,
        msg: M::Obj(SNAPSHOT),
    },
    KindSpec {
        name: "orderbook_delta",
        id: P::Absent,
        sid: P::Req,
        seq: P::Req,
        msg: M::Obj(DELTA),
    },
    KindSpec { name: "trade", id: P::Absent, sid: P::Req, seq: P::Req, msg: M::Obj(TRADE) },
    KindSpec { name: "ticker", id: P::Absent, sid: P::Req, seq: P::Absent, msg: M::Obj(TICKER) },
    KindSpec {
        name: "market_lifecycle_v2",
        id: P::Absent,
        sid: P::Req,
        seq: P::Req,
        msg: M::Lifecycle,
    },
    KindSpec {
        name: "event_lifecycle",
        id: P::Absent,
        sid: P::Req,
        seq: P::Req,
        msg: M::Obj(EVENT_LIFECYCLE),
    },
    KindSpec {
        name: "subscribed",
        id: P::Req,
        sid: P::Absent,
        seq: P::Absent,
        msg: M::Obj(SUBSCRIBED),
    },
    KindSpec {
        name: "ok (update_subscription)",
        id: P::Req,
        sid: P::Req,
        seq: P::Req,
        msg: M::Obj(OK_UPDATE),
    },
    KindSpec {
        name: "ok (list_subscriptions)",
        id: P::Req,
        sid: P::Absent,
        seq: P::Absent,
        msg: M::List(OK_LIST_ITEM),
    },
    KindSpec { name: "unsubscribed", id: P::Req, sid: P::Req, seq: P::Req, msg: M::Absent },
    // `id` when answering a command (absent on a slow-reader overflow); `sid` when the error
    // concerns a subscription.
    KindSpec { name: "error", id: P::Opt, sid: P::Opt, seq: P::Absent, msg: M::Obj(ERROR) },
];

/// Envelope fields allowed besides `type`, `id`, `sid`, `seq`, `msg`.
const ENVELOPE_EXTRA: &[F] = &[("sending_ts_ms", T::Int, OPT)];

// ---------------------------------------------------------------------------------------------
// The checker (serde_json only).
// ---------------------------------------------------------------------------------------------

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `whole.frac` with exactly `places` fractional digits and an optional sign.
fn decimal(s: &str, places: usize, signed: bool) -> bool {
    let s = if signed { s.strip_prefix('-').unwrap_or(s) } else { s };
    match s.split_once('.') {
        Some((whole, frac)) => digits(whole) && digits(frac) && frac.len() == places,
        None => false,
    }
}

fn time_us(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

fn check_value(at: &str, v: &Value, t: T, errs: &mut Vec<String>) {
    let s = v.as_str();
    let ok = match t {
        T::Str => s.is_some(),
        T::Ticker => s.is_some_and(|s| !s.is_empty()),
        T::Dollars => s.is_some_and(|s| decimal(s, 4, false) && dollars_micros(s) <= 1_000_000),
        T::DollarsOrEmpty => s.is_some_and(|s| {
            s.is_empty() || (decimal(s, 4, false) && dollars_micros(s) <= 1_000_000)
        }),
        T::Fp => s.is_some_and(|s| decimal(s, 2, false)),
        T::SignedFp => s.is_some_and(|s| decimal(s, 2, true)),
        T::Int => v.is_i64() || v.is_u64(),
        T::Bool => v.is_boolean(),
        T::TimeUs => s.is_some_and(time_us),
        T::Uuid => s.is_some_and(uuid),
        T::OneOf(allowed) => s.is_some_and(|s| allowed.contains(&s)),
        T::Levels => match v.as_array() {
            Some(levels) => {
                let mut prices = Vec::new();
                for (i, l) in levels.iter().enumerate() {
                    let pair = l.as_array().filter(|p| p.len() == 2);
                    match pair {
                        Some(p) => {
                            check_value(&format!("{at}[{i}][0]"), &p[0], T::Dollars, errs);
                            check_value(&format!("{at}[{i}][1]"), &p[1], T::Fp, errs);
                            prices.extend(p[0].as_str().map(dollars_micros));
                        }
                        None => errs.push(format!("{at}[{i}]: not a [price, count] pair: {l}")),
                    }
                }
                if !prices.windows(2).all(|w| w[0] < w[1]) {
                    errs.push(format!("{at}: prices not strictly ascending: {v}"));
                }
                !levels.is_empty()
            }
            None => false,
        },
        T::Tickers => v
            .as_array()
            .is_some_and(|a| a.iter().all(|t| t.as_str().is_some_and(|t| !t.is_empty()))),
        T::Obj(fields) => match v.as_object() {
            Some(o) => {
                check_object(at, o, fields, errs);
                true
            }
            None => false,
        },
        T::Objs(fields) => match v.as_array() {
            Some(a) => {
                for (i, item) in a.iter().enumerate() {
                    check_value(&format!("{at}[{i}]"), item, T::Obj(fields), errs);
                }
                true
            }
            None => false,
        },
    };
    if !ok {
        errs.push(format!("{at}: {v} is not {t:?}"));
    }
}

/// Every required field present, every present field in the table with its type, nothing else.
fn check_object(at: &str, o: &Map<String, Value>, fields: &[F], errs: &mut Vec<String>) {
    for &(name, _, required) in fields {
        if required && !o.contains_key(name) {
            errs.push(format!("{at}.{name}: required field missing"));
        }
    }
    for (name, v) in o {
        match fields.iter().find(|f| f.0 == name) {
            Some(&(_, t, _)) => check_value(&format!("{at}.{name}"), v, t, errs),
            None => errs.push(format!("{at}.{name}: field not in the protocol table")),
        }
    }
}

fn check_presence(name: &str, v: Option<&Value>, p: P, errs: &mut Vec<String>) {
    match (v, p) {
        (None, P::Req) => errs.push(format!("envelope `{name}` required")),
        (Some(_), P::Absent) => errs.push(format!("envelope `{name}` must be absent")),
        (Some(v), _) if v.as_u64().is_none_or(|n| n == 0) => {
            errs.push(format!("envelope `{name}` = {v} is not a positive integer"));
        }
        _ => {}
    }
}

/// Checks one frame against its kind's row; returns the row's name (lifecycle events as
/// `market_lifecycle_v2/<event_type>`), or every way the frame breaks the table.
fn check_frame(text: &str, ok_kind: &BTreeMap<u64, &'static str>) -> Result<String, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let o = v.as_object().ok_or_else(|| format!("frame is not an object: {text}"))?;
    let ty = o.get("type").and_then(Value::as_str).ok_or_else(|| format!("no type: {text}"))?;
    let name = match ty {
        "ok" => {
            let id = o.get("id").and_then(Value::as_u64).unwrap_or(0);
            *ok_kind.get(&id).ok_or_else(|| format!("ok answering no known command: {text}"))?
        }
        other => other,
    };
    let spec = KINDS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| format!("message kind `{name}` is not in the protocol table: {text}"))?;
    let mut errs = Vec::new();
    for key in o.keys() {
        let known = ["type", "id", "sid", "seq", "msg"].contains(&key.as_str())
            || ENVELOPE_EXTRA.iter().any(|f| f.0 == key);
        if !known {
            errs.push(format!("envelope field `{key}` not in the protocol table"));
        }
    }
    let extra: Map<String, Value> = o
        .iter()
        .filter(|(k, _)| ENVELOPE_EXTRA.iter().any(|f| f.0 == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    check_object("envelope", &extra, ENVELOPE_EXTRA, &mut errs);
    check_presence("id", o.get("id"), spec.id, &mut errs);
    check_presence("sid", o.get("sid"), spec.sid, &mut errs);
    check_presence("seq", o.get("seq"), spec.seq, &mut errs);
    let msg = o.get("msg");
    let mut row = name.to_owned();
    match (spec.msg, msg) {
        (M::Absent, None) => {}
        (M::Absent, Some(_)) => errs.push("`msg` must be absent".into()),
        (_, None) => errs.push("`msg` required".into()),
        (M::Obj(fields), Some(m)) => check_value("msg", m, T::Obj(fields), &mut errs),
        (M::List(fields), Some(m)) => check_value("msg", m, T::Objs(fields), &mut errs),
        (M::Lifecycle, Some(m)) => {
            let event_type = m.get("event_type").and_then(Value::as_str).unwrap_or("");
            match LIFECYCLE.iter().find(|(t, _)| *t == event_type) {
                Some((_, own)) => {
                    let fields: Vec<F> = LIFECYCLE_BASE.iter().chain(own.iter()).copied().collect();
                    match m.as_object() {
                        Some(mo) => check_object("msg", mo, &fields, &mut errs),
                        None => errs.push("`msg` is not an object".into()),
                    }
                    row = format!("{name}/{event_type}");
                }
                None => errs.push(format!("event_type `{event_type}` not in the protocol table")),
            }
        }
    }
    if errs.is_empty() {
        Ok(row)
    } else {
        Err(format!("`{row}` frame breaks the protocol table:\n  {}\n{text}", errs.join("\n  ")))
    }
}

// ---------------------------------------------------------------------------------------------
// The values, read independently, compared with what kdp's parser made of the frame.
// ---------------------------------------------------------------------------------------------

/// `"0.4200"` → 420000 micro-dollars (format already checked).
fn dollars_micros(s: &str) -> u32 {
    let (whole, frac) = s.split_once('.').unwrap();
    let frac = format!("{frac:0<6}");
    whole.parse::<u32>().unwrap() * 1_000_000 + frac[..6].parse::<u32>().unwrap()
}

/// `"-30.00"` → -3000 hundredths.
fn fp_centi(s: &str) -> i64 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |s| (true, s));
    let (whole, frac) = s.split_once('.').unwrap();
    let v = whole.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap();
    if neg { -v } else { v }
}

/// RFC3339 with 6 fractional digits (format already checked) → ns since the epoch.
fn time_ns(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (H. Hinnant), independent of the simulator's and kdp's own code.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    secs * 1_000_000_000 + n(20..26) * 1_000
}

fn str_of<'a>(m: &'a Value, k: &str) -> &'a str {
    m[k].as_str().unwrap()
}

fn int_of(m: &Value, k: &str) -> i64 {
    m[k].as_i64().unwrap()
}

fn levels_of(m: &Value, k: &str) -> Vec<(u32, i64)> {
    m.get(k).and_then(Value::as_array).map_or_else(Vec::new, |ls| {
        ls.iter()
            .map(|l| (dollars_micros(l[0].as_str().unwrap()), fp_centi(l[1].as_str().unwrap())))
            .collect()
    })
}

fn side_of(s: &str) -> Side {
    match s {
        "yes" => Side::Yes,
        "no" => Side::No,
        other => panic!("side {other}"),
    }
}

fn opt_int(m: &Value, k: &str) -> Option<i64> {
    m.get(k).and_then(Value::as_i64)
}

/// kdp's `FrameParser` reads `text` to the same values the JSON holds.
fn check_parser_agrees(parser: &mut FrameParser, text: &str) {
    let v: Value = serde_json::from_str(text).unwrap();
    let f = parser
        .parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("kdp's FrameParser refused the frame ({e}): {text}"));
    let env = f.envelope;
    let u = |k: &str| v.get(k).and_then(Value::as_u64);
    assert_eq!((env.id, env.sid, env.seq), (u("id"), u("sid"), u("seq")), "envelope: {text}");
    let m = &v["msg"];
    let ty = v["type"].as_str().unwrap();
    match (ty, f.message) {
        ("orderbook_snapshot", Message::Event(Event::Snapshot(s))) => {
            assert_eq!(s.market, str_of(m, "market_ticker"));
            let got = |ls: &[kdp_engine::event::Level]| {
                ls.iter().map(|l| (l.price_micros, l.size_centi)).collect::<Vec<_>>()
            };
            assert_eq!(got(s.yes), levels_of(m, "yes_dollars_fp"), "{text}");
            assert_eq!(got(s.no), levels_of(m, "no_dollars_fp"), "{text}");
        }
        ("orderbook_delta", Message::Event(Event::Delta(d))) => {
            assert_eq!(d.market, str_of(m, "market_ticker"));
            assert_eq!(d.side, side_of(str_of(m, "side")));
            assert_eq!(d.price_micros, dollars_micros(str_of(m, "price_dollars")), "{text}");
            assert_eq!(d.delta_centi, fp_centi(str_of(m, "delta_fp")), "{text}");
            let ts_ns = time_ns(str_of(m, "ts"));
            assert_eq!(d.ts_exch_ns, ts_ns, "{text}");
            assert_eq!(
                ts_ns.div_euclid(1_000_000),
                int_of(m, "ts_ms"),
                "ts and ts_ms agree: {text}"
            );
            assert_eq!(d.client_order_id, None);
        }
        ("trade", Message::Event(Event::Trade(t))) => {
            assert_eq!(t.trade_id, str_of(m, "trade_id"));
            assert_eq!(t.market, str_of(m, "market_ticker"));
            assert_eq!(t.yes_price_micros, dollars_micros(str_of(m, "yes_price_dollars")));
            assert_eq!(t.no_price_micros, dollars_micros(str_of(m, "no_price_dollars")));
            assert_eq!(
                t.yes_price_micros + t.no_price_micros,
                1_000_000,
                "prices sum to $1: {text}"
            );
            assert_eq!(t.count_centi, fp_centi(str_of(m, "count_fp")));
            assert_eq!(t.taker_side, Some(side_of(str_of(m, "taker_outcome_side"))), "{text}");
            let book = match str_of(m, "taker_book_side") {
                "ask" => BookSide::Ask,
                _ => BookSide::Bid,
            };
            assert_eq!(t.taker_book_side, Some(book), "{text}");
            assert_eq!(t.is_block_trade, m["is_block_trade"].as_bool());
            assert_eq!(t.ts_exch_ns, int_of(m, "ts_ms") * 1_000_000, "{text}");
            assert_eq!(int_of(m, "ts"), int_of(m, "ts_ms").div_euclid(1000), "ts and ts_ms agree");
        }
        ("ticker", Message::Event(Event::Ticker(t))) => {
            assert_eq!(t.market, str_of(m, "market_ticker"));
            let price = str_of(m, "price_dollars");
            assert_eq!(
                t.price_micros,
                (!price.is_empty()).then(|| dollars_micros(price)),
                "{text}"
            );
            assert_eq!(t.yes_bid_micros, Some(dollars_micros(str_of(m, "yes_bid_dollars"))));
            assert_eq!(t.yes_ask_micros, Some(dollars_micros(str_of(m, "yes_ask_dollars"))));
            assert_eq!(t.yes_bid_size_centi, Some(fp_centi(str_of(m, "yes_bid_size_fp"))));
            assert_eq!(t.yes_ask_size_centi, Some(fp_centi(str_of(m, "yes_ask_size_fp"))));
            assert_eq!(t.last_trade_size_centi, Some(fp_centi(str_of(m, "last_trade_size_fp"))));
            assert_eq!(t.volume_centi, Some(fp_centi(str_of(m, "volume_fp"))));
            assert_eq!(t.open_interest_centi, Some(fp_centi(str_of(m, "open_interest_fp"))));
            assert_eq!(t.dollar_volume, opt_int(m, "dollar_volume"));
            assert_eq!(t.dollar_open_interest, opt_int(m, "dollar_open_interest"));
            let time = time_ns(str_of(m, "time"));
            assert_eq!(t.ts_exch_ns, time, "the most precise time (`time`, µs): {text}");
            assert_eq!(time.div_euclid(1_000_000), int_of(m, "ts_ms"), "time and ts_ms agree");
            assert_eq!(int_of(m, "ts"), int_of(m, "ts_ms").div_euclid(1000), "ts and ts_ms agree");
        }
        ("market_lifecycle_v2", Message::Event(Event::MarketLifecycle(l))) => {
            assert_eq!(l.market, str_of(m, "market_ticker"));
            let kind = match str_of(m, "event_type") {
                "created" => LifecycleKind::Created,
                "activated" => LifecycleKind::Activated,
                "deactivated" => LifecycleKind::Deactivated,
                "close_date_updated" => LifecycleKind::CloseDateUpdated,
                "determined" => LifecycleKind::Determined,
                "settled" => LifecycleKind::Settled,
                other => panic!("event_type {other}"),
            };
            assert_eq!(l.kind, kind);
            assert!(!l.multivariate);
            assert_eq!(l.open_ts_s, opt_int(m, "open_ts"));
            assert_eq!(l.close_ts_s, opt_int(m, "close_ts"));
            assert_eq!(l.determination_ts_s, opt_int(m, "determination_ts"));
            assert_eq!(l.settled_ts_s, opt_int(m, "settled_ts"));
            assert_eq!(l.result, m.get("result").and_then(Value::as_str));
            let value = m.get("settlement_value").and_then(Value::as_str).map(dollars_micros);
            assert_eq!(l.settlement_value_micros, value);
            assert_eq!(
                l.price_level_structure,
                m.get("price_level_structure").and_then(Value::as_str)
            );
            let payload: Value = serde_json::from_str(&l.payload).unwrap();
            assert_eq!(&payload, m, "the kept payload is the whole msg");
        }
        ("event_lifecycle", Message::Event(Event::EventLifecycle(e))) => {
            assert_eq!(e.event_ticker, str_of(m, "event_ticker"));
            let payload: Value = serde_json::from_str(&e.payload).unwrap();
            assert_eq!(&payload, m, "the kept payload is the whole msg");
        }
        ("subscribed", Message::Subscribed { channel, sid }) => {
            assert_eq!((channel, sid), (str_of(m, "channel"), m["sid"].as_u64().unwrap()));
        }
        ("ok", Message::Ok(ok)) => match m {
            Value::Array(list) => {
                let subs = ok.subscriptions.unwrap_or_else(|| panic!("list not read: {text}"));
                let want: Vec<(&str, u64)> = list
                    .iter()
                    .map(|s| (str_of(s, "channel"), s["sid"].as_u64().unwrap()))
                    .collect();
                let got: Vec<(&str, u64)> = subs.iter().map(|s| (s.channel, s.sid)).collect();
                assert_eq!(got, want, "{text}");
            }
            _ => {
                let want: Option<Vec<&str>> = m
                    .get("market_tickers")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|t| t.as_str().unwrap()).collect());
                assert_eq!(ok.market_tickers, want, "{text}");
            }
        },
        ("unsubscribed", Message::Unsubscribed) => {}
        ("error", Message::Error { code, message, market_ticker }) => {
            assert_eq!(u64::from(code), m["code"].as_u64().unwrap());
            assert_eq!(message, str_of(m, "msg"));
            assert_eq!(market_ticker, m.get("market_ticker").and_then(Value::as_str));
        }
        (ty, other) => panic!("kdp's parser read a `{ty}` frame as {other:?}: {text}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The capture.
// ---------------------------------------------------------------------------------------------

/// Every kind of message, with every lifecycle event type, must be seen at least once.
fn all_rows() -> BTreeSet<String> {
    KINDS
        .iter()
        .flat_map(|k| match k.msg {
            M::Lifecycle => LIFECYCLE.iter().map(|(t, _)| format!("{}/{t}", k.name)).collect(),
            _ => vec![k.name.to_owned()],
        })
        .collect()
}

struct Capture {
    client: Client,
    frames: Vec<Frame>,
    /// Command id → the `ok` row its reply belongs to.
    ok_kind: BTreeMap<u64, &'static str>,
}

impl Capture {
    /// Sends a command, noting which `ok` row its reply belongs to.
    async fn send(&mut self, cmd: &Command<'_>) {
        match *cmd {
            Command::UpdateSubscription { id, .. } => {
                self.ok_kind.insert(id, "ok (update_subscription)");
            }
            Command::ListSubscriptions { id } => {
                self.ok_kind.insert(id, "ok (list_subscriptions)");
            }
            _ => {}
        }
        self.client.send(cmd).await;
    }

    /// Frames up to and including the reply to `id`.
    async fn reply(&mut self, id: u64) {
        let frames = self.client.until_reply(id).await;
        self.frames.extend(frames);
    }

    /// Every frame so far, through a `list_subscriptions` barrier (its reply included).
    async fn barrier(&mut self) {
        let id = self.client.id();
        self.send(&Command::ListSubscriptions { id }).await;
        self.reply(id).await;
    }
}

/// A catalog of small events whose markets live briefly and all pause once, a third of them
/// with their close moved (a move is up to an hour, so not all), so every lifecycle event type
/// (`created` needs a whole event settled) appears within a few virtual minutes.
fn lively(cfg: &mut kdp_sim::transport::SimConfig) {
    let m = &mut cfg.market;
    m.markets_per_event_max = 3;
    m.rate_msgs_per_s = 200;
    m.lifetime_s_min = 10;
    m.lifetime_s_max = 40;
    m.open_delay_s_max = 5;
    m.pause_ppm = 1_000_000;
    m.pause_s_max = 5;
    m.close_update_ppm = 300_000;
    m.determine_delay_s_max = 5;
    m.settle_delay_s_max = 5;
}

/// Clock steps allowed for every row to appear, and events per step (200 events = 1 virtual s).
const STEPS_MAX: usize = 200;
const EVENTS_PER_STEP: u64 = 2_000;

#[tokio::test]
async fn every_message_kind_matches_the_protocol_table() {
    let sim = start(61, lively).await;
    let owned = busy_markets(&sim.handle, 3).await;
    let markets: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut cap =
        Capture { client: client(&sim).await, frames: Vec::new(), ok_kind: BTreeMap::new() };

    // subscribed ×2 + one snapshot per market.
    let id = cap.client.id();
    cap.send(&Command::Subscribe {
        id,
        channels: &[Channel::OrderbookDelta, Channel::Trade],
        markets: MarketFilter::Many(&markets[..2]),
        send_initial_snapshot: false,
        skip_ticker_ack: false,
    })
    .await;
    cap.reply(id).await;
    // ticker with initial snapshot, lifecycle.
    let id = cap.client.id();
    cap.send(&Command::Subscribe {
        id,
        channels: &[Channel::Ticker, Channel::MarketLifecycleV2],
        markets: MarketFilter::All,
        send_initial_snapshot: true,
        skip_ticker_ack: false,
    })
    .await;
    cap.reply(id).await;
    cap.barrier().await;
    // ok (update) + snapshot of the added market; get_snapshot (snapshot frames with the id).
    let id = cap.client.id();
    cap.send(&Command::UpdateSubscription {
        id,
        sid: 1,
        market_tickers: &markets[2..],
        action: UpdateAction::AddMarkets,
    })
    .await;
    cap.reply(id).await;
    let get = cap.client.id();
    cap.send(&Command::UpdateSubscription {
        id: get,
        sid: 1,
        market_tickers: &markets[..1],
        action: UpdateAction::GetSnapshot,
    })
    .await;
    cap.barrier().await;
    let with_id = cap
        .frames
        .iter()
        .filter(|f| f.id == Some(get) && f.text.contains("\"orderbook_snapshot\""))
        .count();
    assert_eq!(with_id, 1, "get_snapshot answers with one snapshot carrying its id");
    // Errors: unknown command (id, no sid), unknown sid (id and sid).
    let id = cap.client.id();
    cap.client.send_text(format!(r#"{{"id":{id},"cmd":"no_such_command"}}"#)).await;
    cap.reply(id).await;
    let id = cap.client.id();
    cap.send(&Command::UpdateSubscription {
        id,
        sid: 99,
        market_tickers: &markets[..1],
        action: UpdateAction::AddMarkets,
    })
    .await;
    cap.reply(id).await;

    // Market data until every lifecycle event type has been seen.
    let mut seen = BTreeSet::new();
    let mut parser = FrameParser::new();
    let mut checked = 0;
    let lifecycle_rows: BTreeSet<String> =
        all_rows().into_iter().filter(|r| r.starts_with("market_lifecycle_v2/")).collect();
    let mut steps = 0;
    while !lifecycle_rows.is_subset(&seen) {
        assert!(
            steps < STEPS_MAX,
            "after {steps} steps of {EVENTS_PER_STEP} events, lifecycle rows still unseen: {:?}",
            lifecycle_rows.difference(&seen).collect::<Vec<_>>()
        );
        sim.handle.hub().advance(EVENTS_PER_STEP).await.unwrap();
        cap.barrier().await;
        for f in &cap.frames[checked..] {
            seen.insert(check_frame(&f.text, &cap.ok_kind).unwrap_or_else(|e| panic!("{e}")));
            check_parser_agrees(&mut parser, &f.text);
        }
        checked = cap.frames.len();
        steps += 1;
    }
    println!("every lifecycle event type seen after {steps} steps");

    // unsubscribed; then a slow-reader overflow (error 25 without an id) on what is left.
    let id = cap.client.id();
    cap.send(&Command::Unsubscribe { id, sids: &[2] }).await;
    cap.reply(id).await;
    fault(&sim.handle, "/faults/overflow", r#"{"conn":1}"#).await;
    cap.barrier().await;
    let overflow = cap.frames.iter().filter(|f| f.text.contains("\"code\":25")).count();
    assert_eq!(overflow, 3, "error 25 on each of the three remaining subscriptions");

    for f in &cap.frames[checked..] {
        seen.insert(check_frame(&f.text, &cap.ok_kind).unwrap_or_else(|e| panic!("{e}")));
        check_parser_agrees(&mut parser, &f.text);
    }
    let missing: Vec<String> = all_rows().difference(&seen).cloned().collect();
    assert!(missing.is_empty(), "message kinds never captured: {missing:?}");
    println!("{} frames checked against {} rows", cap.frames.len(), seen.len());
    sim.handle.shutdown().await;
}

/// The checker itself: a misspelt field, a wrong type, a wrong decimal count, an extra
/// envelope field and a missing `seq` each fail.
#[test]
fn the_table_catches_typos_types_and_envelope_mistakes() {
    let ok_kind = BTreeMap::new();
    let good = r#"{"type":"orderbook_delta","sid":2,"seq":5,"msg":{"market_ticker":"KX-1","market_id":"9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1","price_dollars":"0.4200","delta_fp":"-30.00","side":"yes","ts":"2026-09-25T19:16:20.921884Z","ts_ms":1790363780921}}"#;
    assert_eq!(check_frame(good, &ok_kind), Ok("orderbook_delta".to_owned()));
    assert_eq!(time_ns("2026-09-25T19:16:20.921884Z"), 1_790_363_780_921_884_000);
    for bad in [
        good.replace("\"delta_fp\"", "\"delta_pf\""),
        good.replace("\"0.4200\"", "\"0.42\""),
        good.replace("\"-30.00\"", "-30"),
        good.replace("\"seq\":5,", ""),
        good.replace("\"sid\":2,", "\"sid\":2,\"extra\":1,"),
        good.replace(".921884Z", "Z"),
        good.replace("9b0f6b43-", "9b0f6b43"),
    ] {
        let verdict = check_frame(&bad, &ok_kind);
        assert!(verdict.is_err(), "the table let this frame through: {bad}");
    }
}
