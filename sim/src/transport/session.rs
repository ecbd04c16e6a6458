//! One WebSocket session's protocol state: subscriptions, sids, per-sid `seq`, command handling
//! and the routing of hub events to subscriptions. Pure (no I/O, no clock reads): the driver in
//! `ws.rs` feeds it commands, event batches and snapshots, and writes out what it returns.
//!
//! Rules implemented (protocol note §2–§3):
//! - one active subscription per channel; a repeated `subscribe` for an active channel merges
//!   its markets into the existing sid and is answered with that sid;
//! - one `seq` counter per sid shared by all its markets, from 1, +1 per sequenced message
//!   (snapshots, deltas, trades, lifecycle); `ticker` is unsequenced; `ok`/`unsubscribed`
//!   carry the sid's last number without consuming one;
//! - a market's snapshot is taken at exchange position S ([`Session::apply_snapshot`]): after
//!   it, that market's events with `exch_seq <= S` still queued are skipped, so the snapshot is
//!   followed by exactly the events after S.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::hub::{Batch, EventChannel, Snapshot};
use super::proto;

/// Limits a session enforces, each answered with its documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Markets one subscription may hold (code 26 beyond).
    pub markets_per_subscription_max: usize,
    /// Commands accepted per one-second window (code 27 beyond).
    pub commands_per_s_max: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        // Kalshi publishes neither number for the per-subscription cap; 500k is its documented
        // per-session market bound (2026-06) and 10k/s its documented command bound.
        Self { markets_per_subscription_max: 500_000, commands_per_s_max: 10_000 }
    }
}

/// Error codes the session answers with (protocol note §2).
pub mod code {
    /// Unable to process (bad JSON or types).
    pub const UNPROCESSABLE: u32 = 1;
    /// `params` required.
    pub const PARAMS_REQUIRED: u32 = 2;
    /// `channels` required.
    pub const CHANNELS_REQUIRED: u32 = 3;
    /// `sids` required.
    pub const SIDS_REQUIRED: u32 = 4;
    /// Unknown command.
    pub const UNKNOWN_COMMAND: u32 = 5;
    /// Unknown subscription id.
    pub const UNKNOWN_SID: u32 = 7;
    /// Unknown channel.
    pub const UNKNOWN_CHANNEL: u32 = 8;
    /// Invalid parameter.
    pub const INVALID_PARAMETER: u32 = 11;
    /// Exactly one sid required.
    pub const ONE_SID_REQUIRED: u32 = 12;
    /// Unsupported action.
    pub const UNSUPPORTED_ACTION: u32 = 13;
    /// Market ticker required.
    pub const MARKET_REQUIRED: u32 = 14;
    /// Action required.
    pub const ACTION_REQUIRED: u32 = 15;
    /// Subscription buffer overflow (slow reader; terminal).
    pub const BUFFER_OVERFLOW: u32 = 25;
    /// Per-subscription market limit exceeded.
    pub const MARKET_LIMIT: u32 = 26;
    /// Too many requests (command rate).
    pub const RATE_LIMITED: u32 = 27;
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Out {
    /// A command reply (never subject to frame faults).
    Reply(String),
    /// A market-data frame.
    Data(DataFrame),
    /// Take a snapshot of `tickers` from the hub, then call [`Session::apply_snapshot`].
    Snapshot(SnapshotRequest),
}

/// A market-data frame and what the truth log records about it.
#[derive(Debug)]
pub struct DataFrame {
    /// The frame text.
    pub text: String,
    /// Its subscription.
    pub sid: u64,
    /// Its sequence number, when sequenced.
    pub seq: Option<u64>,
    /// The exchange event it carries (`None` for snapshots).
    pub exch_seq: Option<u64>,
}

/// A snapshot the session needs from the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The subscription the snapshot frames go to.
    pub sid: u64,
    /// The command id the frames carry (`get_snapshot` only).
    pub id: Option<u64>,
    /// Books (`orderbook_snapshot`) or ticker states (`ticker`, `send_initial_snapshot`).
    pub kind: SnapshotKind,
    /// The markets; `None` = every market of the exchange.
    pub tickers: Option<Vec<Arc<str>>>,
}

/// What a snapshot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// `orderbook_snapshot` frames.
    Book,
    /// `ticker` frames.
    Ticker,
}

impl EventChannel {
    /// The channel's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventChannel::Orderbook => "orderbook_delta",
            EventChannel::Trade => "trade",
            EventChannel::Ticker => "ticker",
            EventChannel::Lifecycle => "market_lifecycle_v2",
        }
    }

    fn from_wire(name: &str) -> Option<Self> {
        [
            EventChannel::Orderbook,
            EventChannel::Trade,
            EventChannel::Ticker,
            EventChannel::Lifecycle,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }

    fn sequenced(self) -> bool {
        !matches!(self, EventChannel::Ticker)
    }

    fn filtered(self) -> bool {
        !matches!(self, EventChannel::Lifecycle)
    }
}

#[derive(Debug, Default)]
struct MarketSet {
    order: Vec<Arc<str>>,
    set: HashSet<Arc<str>>,
}

impl MarketSet {
    fn insert(&mut self, t: &Arc<str>) -> bool {
        if self.set.insert(t.clone()) {
            self.order.push(t.clone());
            true
        } else {
            false
        }
    }

    fn remove(&mut self, t: &str) {
        if self.set.remove(t) {
            self.order.retain(|o| &**o != t);
        }
    }
}

#[derive(Debug)]
enum Markets {
    All,
    Some(MarketSet),
}

#[derive(Debug)]
struct Sub {
    sid: u64,
    channel: EventChannel,
    markets: Markets,
    /// Last sequence number used.
    seq: u64,
    skip_ticker_ack: bool,
    /// Market → exchange position of its latest snapshot: events at or before it are skipped.
    snapshot_at: HashMap<Arc<str>, u64>,
}

impl Sub {
    fn wants(&self, market: Option<&Arc<str>>) -> bool {
        match (&self.markets, market) {
            (Markets::All, _) => true,
            (_, None) => !self.channel.filtered(),
            (Markets::Some(set), Some(m)) => !self.channel.filtered() || set.set.contains(m),
        }
    }

    fn next_seq(&mut self) -> Option<u64> {
        self.channel.sequenced().then(|| {
            self.seq += 1;
            self.seq
        })
    }

    fn tickers(&self) -> Vec<&str> {
        match &self.markets {
            Markets::All => Vec::new(),
            Markets::Some(set) => set.order.iter().map(|t| &**t).collect(),
        }
    }
}

/// A summary of one subscription, for the control endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubSummary {
    /// Channel name.
    pub channel: &'static str,
    /// Subscription id.
    pub sid: u64,
    /// Markets held (`None` = whole exchange).
    pub markets: Option<usize>,
    /// Last sequence number used.
    pub seq: u64,
}

/// The markets of one market-filtered subscription, for tests that check exactly what a client
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubMarkets {
    /// Channel name.
    pub channel: &'static str,
    /// Subscription id.
    pub sid: u64,
    /// Markets held, in the order they were added.
    pub markets: Vec<Arc<str>>,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    subs: Vec<Sub>,
    next_sid: u64,
    limits: SessionLimits,
    window_start_ms: u64,
    window_commands: u32,
}

struct CmdError {
    code: u32,
    msg: String,
    sid: Option<u64>,
}

fn err(code: u32, msg: impl Into<String>) -> CmdError {
    CmdError { code, msg: msg.into(), sid: None }
}

/// A command's `params` object (code 2 when absent or not an object).
fn params_object(params: Option<&Value>) -> Result<&serde_json::Map<String, Value>, CmdError> {
    params.and_then(Value::as_object).ok_or_else(|| err(code::PARAMS_REQUIRED, "Params required"))
}

/// A non-empty array parameter: `missing_code` when absent, null or empty; code 11 when not an
/// array.
fn required_array<'v>(
    p: &'v serde_json::Map<String, Value>,
    key: &str,
    missing_code: u32,
    missing_msg: &str,
) -> Result<&'v Vec<Value>, CmdError> {
    match p.get(key) {
        Some(Value::Array(a)) if !a.is_empty() => Ok(a),
        None | Some(Value::Null) | Some(Value::Array(_)) => Err(err(missing_code, missing_msg)),
        Some(_) => Err(err(code::INVALID_PARAMETER, format!("{key} must be an array"))),
    }
}

impl Session {
    /// A session with no subscriptions; sids number from 1.
    pub fn new(limits: SessionLimits) -> Self {
        Self { subs: Vec::new(), next_sid: 1, limits, window_start_ms: 0, window_commands: 0 }
    }

    /// The current subscriptions.
    pub fn summary(&self) -> Vec<SubSummary> {
        self.subs
            .iter()
            .map(|s| SubSummary {
                channel: s.channel.as_str(),
                sid: s.sid,
                markets: match &s.markets {
                    Markets::All => None,
                    Markets::Some(set) => Some(set.order.len()),
                },
                seq: s.seq,
            })
            .collect()
    }

    /// The markets of every market-filtered subscription (whole-exchange ones are left out).
    pub fn market_lists(&self) -> Vec<SubMarkets> {
        self.subs
            .iter()
            .filter_map(|s| match &s.markets {
                Markets::All => None,
                Markets::Some(set) => Some(SubMarkets {
                    channel: s.channel.as_str(),
                    sid: s.sid,
                    markets: set.order.clone(),
                }),
            })
            .collect()
    }

    /// Handles one client text frame received at `now_ms` (any monotonic millisecond clock).
    pub fn on_command(&mut self, text: &str, now_ms: u64, out: &mut Vec<Out>) {
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
            self.window_start_ms = now_ms;
            self.window_commands = 0;
        }
        self.window_commands = self.window_commands.saturating_add(1);
        let parsed: Result<Value, _> = serde_json::from_str(text);
        let id = parsed.as_ref().ok().and_then(|v| v.get("id")).and_then(Value::as_u64);
        let id = id.filter(|&i| i != 0);
        if self.window_commands > self.limits.commands_per_s_max {
            out.push(Out::Reply(proto::error(id, None, code::RATE_LIMITED, "Too many requests")));
            return;
        }
        let result = match parsed {
            Err(_) => Err(err(code::UNPROCESSABLE, "Unable to process message")),
            Ok(v) => self.dispatch(&v, id, out),
        };
        if let Err(e) = result {
            out.push(Out::Reply(proto::error(id, e.sid, e.code, &e.msg)));
        }
    }

    fn dispatch(&mut self, v: &Value, id: Option<u64>, out: &mut Vec<Out>) -> Result<(), CmdError> {
        let obj =
            v.as_object().ok_or_else(|| err(code::UNPROCESSABLE, "Unable to process message"))?;
        if obj.get("id").is_some_and(|i| !i.is_u64()) {
            return Err(err(code::UNPROCESSABLE, "id must be a non-negative integer"));
        }
        let cmd = obj.get("cmd").and_then(Value::as_str);
        let params = obj.get("params");
        match cmd {
            Some("subscribe") => self.subscribe(params, id, out),
            Some("unsubscribe") => self.unsubscribe(params, id, out),
            Some("update_subscription") => self.update(params, id, out),
            Some("list_subscriptions") => {
                out.push(Out::Reply(proto::ok_list(
                    id,
                    self.subs.iter().map(|s| (s.channel.as_str(), s.sid)),
                )));
                Ok(())
            }
            _ => Err(err(code::UNKNOWN_COMMAND, "Unknown command")),
        }
    }

    fn subscribe(
        &mut self,
        params: Option<&Value>,
        id: Option<u64>,
        out: &mut Vec<Out>,
    ) -> Result<(), CmdError> {
        let p = params_object(params)?;
        let channels = required_array(p, "channels", code::CHANNELS_REQUIRED, "Channels required")?;
        let mut wanted = Vec::with_capacity(channels.len());
        for c in channels {
            let name = c
                .as_str()
                .ok_or_else(|| err(code::INVALID_PARAMETER, "channel must be a string"))?;
            let ch = EventChannel::from_wire(name).ok_or_else(|| {
                err(code::UNKNOWN_CHANNEL, format!("Unknown channel name: {name}"))
            })?;
            if !wanted.contains(&ch) {
                wanted.push(ch);
            }
        }
        if p.contains_key("market_id") || p.contains_key("market_ids") {
            return Err(err(
                code::INVALID_PARAMETER,
                "market_id/market_ids filters are not supported by this exchange",
            ));
        }
        let tickers = market_filter(p)?;
        let send_initial = flag(p, "send_initial_snapshot")?;
        let skip_ack = flag(p, "skip_ticker_ack")?;
        if wanted.contains(&EventChannel::Orderbook) && tickers.is_none() {
            return Err(err(code::MARKET_REQUIRED, "Market Ticker required for orderbook_delta"));
        }
        // Validate every channel's market limit before changing anything.
        for &ch in &wanted {
            if !ch.filtered() {
                continue;
            }
            if let (Some(ts), Some(existing)) =
                (tickers.as_ref(), self.subs.iter().find(|s| s.channel == ch))
            {
                if let Markets::Some(set) = &existing.markets {
                    let new = ts.iter().filter(|t| !set.set.contains(*t)).count();
                    self.check_limit(set.order.len() + new, existing.sid)?;
                }
            } else if let Some(ts) = tickers.as_ref() {
                self.check_limit(ts.len(), 0)?;
            }
        }
        for ch in wanted {
            let pos = match self.subs.iter().position(|s| s.channel == ch) {
                Some(pos) => pos,
                None => {
                    let sid = self.next_sid;
                    self.next_sid += 1;
                    let markets = if ch.filtered() && tickers.is_some() {
                        Markets::Some(MarketSet::default())
                    } else {
                        Markets::All
                    };
                    self.subs.push(Sub {
                        sid,
                        channel: ch,
                        markets,
                        seq: 0,
                        skip_ticker_ack: false,
                        snapshot_at: HashMap::new(),
                    });
                    self.subs.len() - 1
                }
            };
            let sub = &mut self.subs[pos];
            sub.skip_ticker_ack |= skip_ack;
            let added: Option<Vec<Arc<str>>> = match (&mut sub.markets, &tickers) {
                (Markets::Some(set), Some(ts)) => {
                    Some(ts.iter().filter(|t| set.insert(t)).cloned().collect())
                }
                (markets @ Markets::Some(_), None) => {
                    *markets = Markets::All;
                    None
                }
                (Markets::All, _) => None,
            };
            out.push(Out::Reply(proto::subscribed(id, ch.as_str(), sub.sid)));
            let kind = match ch {
                EventChannel::Orderbook => Some(SnapshotKind::Book),
                EventChannel::Ticker if send_initial => Some(SnapshotKind::Ticker),
                _ => None,
            };
            if let Some(kind) = kind {
                let wanted_tickers = if ch.filtered() && tickers.is_some() { added } else { None };
                if wanted_tickers.as_ref().is_none_or(|t| !t.is_empty()) {
                    out.push(Out::Snapshot(SnapshotRequest {
                        sid: sub.sid,
                        id: None,
                        kind,
                        tickers: wanted_tickers,
                    }));
                }
            }
        }
        Ok(())
    }

    fn check_limit(&self, markets: usize, sid: u64) -> Result<(), CmdError> {
        if markets > self.limits.markets_per_subscription_max {
            return Err(CmdError {
                code: code::MARKET_LIMIT,
                msg: format!(
                    "Subscription market limit exceeded ({markets} > {})",
                    self.limits.markets_per_subscription_max
                ),
                sid: (sid != 0).then_some(sid),
            });
        }
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        params: Option<&Value>,
        id: Option<u64>,
        out: &mut Vec<Out>,
    ) -> Result<(), CmdError> {
        let p = params_object(params)?;
        let sids = required_array(p, "sids", code::SIDS_REQUIRED, "Subscription IDs required")?
            .iter()
            .map(|s| {
                s.as_u64().ok_or_else(|| err(code::INVALID_PARAMETER, "sids must be integers"))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        for sid in sids {
            match self.subs.iter().position(|s| s.sid == sid) {
                Some(pos) => {
                    let sub = self.subs.remove(pos);
                    out.push(Out::Reply(proto::unsubscribed(id, sid, sub.seq)));
                }
                None => out.push(Out::Reply(proto::error(
                    id,
                    Some(sid),
                    code::UNKNOWN_SID,
                    "Unknown subscription ID",
                ))),
            }
        }
        Ok(())
    }

    fn update(
        &mut self,
        params: Option<&Value>,
        id: Option<u64>,
        out: &mut Vec<Out>,
    ) -> Result<(), CmdError> {
        let p = params_object(params)?;
        let sid = match (p.get("sid"), p.get("sids")) {
            (Some(s), None) => s.as_u64(),
            (None, Some(Value::Array(a))) if a.len() == 1 => a[0].as_u64(),
            _ => None,
        }
        .ok_or_else(|| err(code::ONE_SID_REQUIRED, "Exactly one subscription ID is required"))?;
        let action = match p.get("action") {
            None | Some(Value::Null) => return Err(err(code::ACTION_REQUIRED, "Action required")),
            Some(a) => {
                a.as_str().ok_or_else(|| err(code::INVALID_PARAMETER, "action must be a string"))?
            }
        };
        let pos = self.subs.iter().position(|s| s.sid == sid).ok_or(CmdError {
            code: code::UNKNOWN_SID,
            msg: "Unknown subscription ID".into(),
            sid: Some(sid),
        })?;
        let scoped = |code: u32, msg: &str| CmdError { code, msg: msg.into(), sid: Some(sid) };
        let channel = self.subs[pos].channel;
        if !matches!(action, "add_markets" | "delete_markets" | "get_snapshot") {
            return Err(scoped(code::UNSUPPORTED_ACTION, "Unsupported action"));
        }
        if !channel.filtered() || (action == "get_snapshot" && channel != EventChannel::Orderbook) {
            return Err(scoped(code::UNSUPPORTED_ACTION, "Unsupported action for this channel"));
        }
        if action == "get_snapshot" && p.contains_key("market_ticker") {
            return Err(scoped(
                code::INVALID_PARAMETER,
                "get_snapshot accepts market_tickers only",
            ));
        }
        let tickers = market_filter(p)
            .map_err(|e| CmdError { sid: Some(sid), ..e })?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| scoped(code::MARKET_REQUIRED, "Market Ticker required"))?;
        match action {
            "add_markets" => {
                if let Markets::Some(set) = &self.subs[pos].markets {
                    let new = tickers.iter().filter(|t| !set.set.contains(*t)).count();
                    self.check_limit(set.order.len() + new, sid)?;
                }
                let sub = &mut self.subs[pos];
                let added: Vec<Arc<str>> = match &mut sub.markets {
                    Markets::Some(set) => {
                        tickers.iter().filter(|t| set.insert(t)).cloned().collect()
                    }
                    Markets::All => Vec::new(),
                };
                push_ok(sub, id, out);
                if channel == EventChannel::Orderbook && !added.is_empty() {
                    out.push(Out::Snapshot(SnapshotRequest {
                        sid,
                        id: None,
                        kind: SnapshotKind::Book,
                        tickers: Some(added),
                    }));
                }
            }
            "delete_markets" => {
                let sub = &mut self.subs[pos];
                let Markets::Some(set) = &mut sub.markets else {
                    return Err(scoped(
                        code::INVALID_PARAMETER,
                        "cannot delete markets from a whole-exchange subscription",
                    ));
                };
                for t in &tickers {
                    set.remove(t);
                    sub.snapshot_at.remove(t);
                }
                push_ok(sub, id, out);
            }
            _ => {
                let sub = &self.subs[pos];
                let Markets::Some(set) = &sub.markets else {
                    return Err(scoped(code::INVALID_PARAMETER, "no markets on this subscription"));
                };
                if let Some(t) = tickers.iter().find(|t| !set.set.contains(*t)) {
                    return Err(scoped(
                        code::INVALID_PARAMETER,
                        &format!("market {t} is not on this subscription"),
                    ));
                }
                out.push(Out::Snapshot(SnapshotRequest {
                    sid,
                    id,
                    kind: SnapshotKind::Book,
                    tickers: Some(tickers),
                }));
            }
        }
        Ok(())
    }

    /// Turns a hub snapshot into frames for `req.sid` (sequenced for books) and records, per
    /// market, the position S it was taken at so queued events at or before S are skipped.
    pub fn apply_snapshot(&mut self, req: &SnapshotRequest, snap: &Snapshot, out: &mut Vec<Out>) {
        let Some(sub) = self.subs.iter_mut().find(|s| s.sid == req.sid) else { return };
        let msg_type = match req.kind {
            SnapshotKind::Book => "orderbook_snapshot",
            SnapshotKind::Ticker => "ticker",
        };
        for (ticker, body) in &snap.items {
            // A market deleted from the subscription while the snapshot was in flight is gone.
            if !sub.wants(Some(ticker)) {
                continue;
            }
            sub.snapshot_at.insert(ticker.clone(), snap.exch_seq);
            let seq = match req.kind {
                SnapshotKind::Book => sub.next_seq(),
                SnapshotKind::Ticker => None,
            };
            out.push(Out::Data(DataFrame {
                text: proto::frame(msg_type, req.id, Some(sub.sid), seq, Some(body)),
                sid: sub.sid,
                seq,
                exch_seq: None,
            }));
        }
    }

    /// Routes one batch of exchange events to the subscriptions that want them.
    pub fn on_batch(&mut self, batch: &Batch, out: &mut Vec<Out>) {
        for ev in batch.iter() {
            for sub in self.subs.iter_mut().filter(|s| s.channel == ev.channel) {
                if !sub.wants(ev.market.as_ref()) {
                    continue;
                }
                let before_snapshot = ev
                    .market
                    .as_ref()
                    .and_then(|m| sub.snapshot_at.get(m))
                    .is_some_and(|&s| ev.exch_seq <= s);
                if before_snapshot {
                    continue;
                }
                let seq = sub.next_seq();
                out.push(Out::Data(DataFrame {
                    text: proto::frame(ev.msg_type, None, Some(sub.sid), seq, Some(&ev.body)),
                    sid: sub.sid,
                    seq,
                    exch_seq: Some(ev.exch_seq),
                }));
            }
        }
    }

    /// The connection fell behind (or a slow-reader fault fired): every subscription (or just
    /// `sid`) gets error 25 and is dropped. Returns whether anything was dropped.
    pub fn overflow(&mut self, sid: Option<u64>, out: &mut Vec<Out>) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| {
            let hit = sid.is_none_or(|sid| sid == s.sid);
            if hit {
                out.push(Out::Reply(proto::error(
                    None,
                    Some(s.sid),
                    code::BUFFER_OVERFLOW,
                    "Subscription buffer overflow",
                )));
            }
            !hit
        });
        self.subs.len() != before
    }

    /// The number of active subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }
}

fn push_ok(sub: &Sub, id: Option<u64>, out: &mut Vec<Out>) {
    let tickers = sub.tickers();
    let list = (!sub.skip_ticker_ack).then(|| tickers.iter().copied());
    out.push(Out::Reply(proto::ok_tickers(id, sub.sid, sub.seq, list)));
}

fn flag(p: &serde_json::Map<String, Value>, name: &str) -> Result<bool, CmdError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(err(code::INVALID_PARAMETER, format!("{name} must be a boolean"))),
    }
}

/// `market_ticker` | `market_tickers` | neither (`None`). Both → code 11.
fn market_filter(p: &serde_json::Map<String, Value>) -> Result<Option<Vec<Arc<str>>>, CmdError> {
    let one = p.get("market_ticker").filter(|v| !v.is_null());
    let many = p.get("market_tickers").filter(|v| !v.is_null());
    let bad = || err(code::INVALID_PARAMETER, "market tickers must be non-empty strings");
    match (one, many) {
        (Some(_), Some(_)) => Err(err(
            code::INVALID_PARAMETER,
            "market_ticker and market_tickers are mutually exclusive",
        )),
        (Some(t), None) => {
            let t = t.as_str().filter(|t| !t.is_empty()).ok_or_else(bad)?;
            Ok(Some(vec![Arc::from(t)]))
        }
        (None, Some(Value::Array(a))) => {
            let mut seen = HashSet::new();
            let mut v = Vec::with_capacity(a.len());
            for t in a {
                let t = t.as_str().filter(|t| !t.is_empty()).ok_or_else(bad)?;
                if seen.insert(t) {
                    v.push(Arc::from(t));
                }
            }
            Ok(Some(v))
        }
        (None, Some(_)) => Err(err(code::INVALID_PARAMETER, "market_tickers must be an array")),
        (None, None) => Ok(None),
    }
}
