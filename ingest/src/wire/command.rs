//! Client commands: `subscribe`, `unsubscribe`, `update_subscription`, `list_subscriptions`.
//!
//! Commands are rare next to data frames, so they are encoded with serde_json for clarity. Every
//! command carries a client `id`, unique per session (the session allocates them).

use serde::Serialize;

/// A market-data channel kdp subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Snapshots then deltas of the listed markets (sequenced).
    OrderbookDelta,
    /// Trades (sequenced).
    Trade,
    /// Ticker updates (not sequenced).
    Ticker,
    /// Market lifecycle changes of the whole exchange (sequenced).
    MarketLifecycleV2,
    /// Lifecycle of multivariate (KXMVE) markets (sequenced).
    MultivariateMarketLifecycle,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::OrderbookDelta => "orderbook_delta",
            Channel::Trade => "trade",
            Channel::Ticker => "ticker",
            Channel::MarketLifecycleV2 => "market_lifecycle_v2",
            Channel::MultivariateMarketLifecycle => "multivariate_market_lifecycle",
        }
    }

    /// The channel of a wire name, if kdp knows it.
    pub fn from_wire(name: &str) -> Option<Channel> {
        [
            Channel::OrderbookDelta,
            Channel::Trade,
            Channel::Ticker,
            Channel::MarketLifecycleV2,
            Channel::MultivariateMarketLifecycle,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which markets a `subscribe` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketFilter<'a, S = &'a str> {
    /// No filter: the whole exchange (`trade`, `ticker`, lifecycle channels only).
    All,
    /// `market_ticker`: one market.
    One(&'a str),
    /// `market_tickers`: a batch of markets.
    Many(&'a [S]),
}

/// The action of an `update_subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateAction {
    /// Add markets to the subscription.
    AddMarkets,
    /// Remove markets from the subscription.
    DeleteMarkets,
    /// Ask for fresh `orderbook_snapshot`s of the markets (orderbook only).
    GetSnapshot,
}

impl UpdateAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateAction::AddMarkets => "add_markets",
            UpdateAction::DeleteMarkets => "delete_markets",
            UpdateAction::GetSnapshot => "get_snapshot",
        }
    }
}

/// A client command. `S` is any string type (`&str`, `String`) so callers need not copy tickers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a, S = &'a str> {
    /// Subscribe to channels for a set of markets.
    Subscribe {
        /// Client command id.
        id: u64,
        /// Channels (one `subscribed` reply and one sid each).
        channels: &'a [Channel],
        /// Markets.
        markets: MarketFilter<'a, S>,
        /// `ticker` only: send one ticker message per market at once.
        send_initial_snapshot: bool,
        /// Omit the ticker list from later `ok` replies.
        skip_ticker_ack: bool,
    },
    /// Remove subscriptions.
    Unsubscribe {
        /// Client command id.
        id: u64,
        /// The sids to remove.
        sids: &'a [u64],
    },
    /// Change the markets of one subscription, or ask for snapshots.
    UpdateSubscription {
        /// Client command id.
        id: u64,
        /// The subscription (exactly one).
        sid: u64,
        /// The markets the action applies to.
        market_tickers: &'a [S],
        /// What to do.
        action: UpdateAction,
    },
    /// List the session's subscriptions.
    ListSubscriptions {
        /// Client command id.
        id: u64,
    },
}

#[derive(Serialize)]
struct Wire<'a, S: Serialize> {
    id: u64,
    cmd: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Params<'a, S>>,
}

#[derive(Serialize)]
struct Params<'a, S: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [Channel]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sids: Option<&'a [u64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    market_ticker: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    market_tickers: Option<&'a [S]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    send_initial_snapshot: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skip_ticker_ack: bool,
}

impl<S: Serialize> Default for Params<'_, S> {
    fn default() -> Self {
        Self {
            channels: None,
            sids: None,
            sid: None,
            market_ticker: None,
            market_tickers: None,
            action: None,
            send_initial_snapshot: false,
            skip_ticker_ack: false,
        }
    }
}

/// Appends the JSON text of `command` to `out` (one WebSocket text frame).
pub fn encode_command<S: Serialize>(command: &Command<'_, S>, out: &mut Vec<u8>) {
    let wire = match *command {
        Command::Subscribe {
            id,
            channels,
            ref markets,
            send_initial_snapshot,
            skip_ticker_ack,
        } => {
            let mut p = Params {
                channels: Some(channels),
                send_initial_snapshot,
                skip_ticker_ack,
                ..Params::default()
            };
            match markets {
                MarketFilter::All => {}
                MarketFilter::One(t) => p.market_ticker = Some(*t),
                MarketFilter::Many(ts) => p.market_tickers = Some(*ts),
            }
            Wire { id, cmd: "subscribe", params: Some(p) }
        }
        Command::Unsubscribe { id, sids } => Wire {
            id,
            cmd: "unsubscribe",
            params: Some(Params { sids: Some(sids), ..Params::default() }),
        },
        Command::UpdateSubscription { id, sid, market_tickers, action } => Wire {
            id,
            cmd: "update_subscription",
            params: Some(Params {
                sid: Some(sid),
                market_tickers: Some(market_tickers),
                action: Some(action.as_str()),
                ..Params::default()
            }),
        },
        Command::ListSubscriptions { id } => Wire { id, cmd: "list_subscriptions", params: None },
    };
    // Serializing plain structs of strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &wire);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(c: &Command<'_>) -> String {
        let mut out = Vec::new();
        encode_command(c, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn every_command_encodes_as_documented() {
        let channels = [Channel::OrderbookDelta, Channel::Trade];
        let tickers = ["KXA-1", "KXB-1"];
        assert_eq!(
            text(&Command::Subscribe {
                id: 1,
                channels: &channels,
                markets: MarketFilter::Many(&tickers),
                send_initial_snapshot: false,
                skip_ticker_ack: false,
            }),
            r#"{"id":1,"cmd":"subscribe","params":{"channels":["orderbook_delta","trade"],"market_tickers":["KXA-1","KXB-1"]}}"#
        );
        assert_eq!(
            text(&Command::Subscribe {
                id: 9,
                channels: &[Channel::Ticker],
                markets: MarketFilter::One("KXC-1"),
                send_initial_snapshot: true,
                skip_ticker_ack: true,
            }),
            r#"{"id":9,"cmd":"subscribe","params":{"channels":["ticker"],"market_ticker":"KXC-1","send_initial_snapshot":true,"skip_ticker_ack":true}}"#
        );
        assert_eq!(
            text(&Command::Subscribe {
                id: 10,
                channels: &[Channel::MarketLifecycleV2],
                markets: MarketFilter::All,
                send_initial_snapshot: false,
                skip_ticker_ack: false,
            }),
            r#"{"id":10,"cmd":"subscribe","params":{"channels":["market_lifecycle_v2"]}}"#
        );
        assert_eq!(
            text(&Command::Unsubscribe { id: 2, sids: &[1, 2] }),
            r#"{"id":2,"cmd":"unsubscribe","params":{"sids":[1,2]}}"#
        );
        for (action, name) in [
            (UpdateAction::AddMarkets, "add_markets"),
            (UpdateAction::DeleteMarkets, "delete_markets"),
            (UpdateAction::GetSnapshot, "get_snapshot"),
        ] {
            assert_eq!(
                text(&Command::UpdateSubscription {
                    id: 3,
                    sid: 1,
                    market_tickers: &["KXC-1"],
                    action
                }),
                format!(
                    r#"{{"id":3,"cmd":"update_subscription","params":{{"sid":1,"market_tickers":["KXC-1"],"action":"{name}"}}}}"#
                )
            );
        }
        assert_eq!(
            text(&Command::ListSubscriptions { id: 6 }),
            r#"{"id":6,"cmd":"list_subscriptions"}"#
        );
    }

    #[test]
    fn owned_tickers_encode_without_copies() {
        let owned = vec!["KXA-1".to_string()];
        let mut out = Vec::new();
        encode_command(
            &Command::UpdateSubscription {
                id: 4,
                sid: 7,
                market_tickers: &owned,
                action: UpdateAction::DeleteMarkets,
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            r#"{"id":4,"cmd":"update_subscription","params":{"sid":7,"market_tickers":["KXA-1"],"action":"delete_markets"}}"#
        );
    }

    #[test]
    fn channel_names_round_trip() {
        for name in ["orderbook_delta", "trade", "ticker", "market_lifecycle_v2"] {
            assert_eq!(Channel::from_wire(name).map(Channel::as_str), Some(name));
        }
        assert_eq!(Channel::from_wire("ticker_v2"), None);
    }
}
