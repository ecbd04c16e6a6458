//! The market registry: which markets the gatherer subscribes to.
//!
//! Sources, in the order they arrive: paged `GET /markets` discovery (one listing per status
//! the config asks for, default `open` + `unopened`), `market_lifecycle_v2` events (fast), a
//! periodic reconciliation against a fresh listing (catches a dropped lifecycle message and the
//! transitions Kalshi never announces: open and close times reached), and `GET /exchange/status`
//! (pause and resume). Output: [`RegistryChange`] batches the shard manager applies, and
//! [`RegistryUpdate::Paused`]/[`RegistryUpdate::Resumed`].
//!
//! [`Registry`] is pure logic with time passed in; [`Registry::poll`] is the one place that
//! does I/O, through [`RestClient`] (and so through its token bucket).
//!
//! Membership rule: a market is in the registry while its status falls under a configured
//! filter. Lifecycle events move a market's status: `created` → unopened (also wanted when only
//! `open` is configured: it opens without an event, so subscribing at creation catches its
//! first delta), `activated` → open, `deactivated` → paused, `determined` → closed, `settled` →
//! settled. Others change nothing. So with the default filters a market is removed when it is
//! determined (no more trading; its book is cleared) or settled, or paused, and re-added on
//! `activated`.
//!
//! Races with the listing: Kalshi's `status=open` list lags settlement by ~30 s, and a listing
//! takes several requests. So a reconciliation does not override a lifecycle decision made
//! less than [`LIFECYCLE_TRUST_NS`] before the listing started, never re-adds a market seen
//! determined or settled (terminal), and never removes a market added after it started.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kdp_engine::event::{LifecycleKind, MarketLifecycle};

use crate::rest::{ExchangeStatus, ListStatus, MarketSummary, RestClient, RestError};

/// Default time between reconciliations: DESIGN §3 "every few minutes". A full listing of
/// 1M markets is ~1000 requests (50 s of the Basic budget), so more often would starve the
/// snapshot poller.
pub const RECONCILE_INTERVAL_NS_DEFAULT: i64 = 5 * 60 * NS_PER_S;
/// Default time between `GET /exchange/status` checks: one request every 10 s is 0.5% of the
/// Basic budget, and a pause is noticed within 10 s.
pub const STATUS_INTERVAL_NS_DEFAULT: i64 = 10 * NS_PER_S;
/// A lifecycle decision younger than this (at the listing's start) wins over the listing:
/// twice the ~30 s by which Kalshi's `status=open` list lags settlement.
pub const LIFECYCLE_TRUST_NS: i64 = 60 * NS_PER_S;

const NS_PER_S: i64 = 1_000_000_000;

/// What the registry tracks and how often it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `GET /markets` status filters whose markets are subscribed (one listing each).
    pub statuses: Vec<ListStatus>,
    /// Time between reconciliations, ns.
    pub reconcile_interval_ns: i64,
    /// Time between exchange-status checks, ns.
    pub status_interval_ns: i64,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            statuses: vec![ListStatus::Open, ListStatus::Unopened],
            reconcile_interval_ns: RECONCILE_INTERVAL_NS_DEFAULT,
            status_interval_ns: STATUS_INTERVAL_NS_DEFAULT,
        }
    }
}

/// Markets to subscribe and unsubscribe, applied by the shard manager. Sorted, disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryChange {
    /// New markets.
    pub add: Vec<Arc<str>>,
    /// Markets no longer wanted.
    pub remove: Vec<Arc<str>>,
}

impl RegistryChange {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// What [`Registry::poll`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryUpdate {
    /// Apply these subscription changes.
    Change(RegistryChange),
    /// The exchange or trading is inactive: stop REST polling and expect disconnects.
    Paused {
        /// Kalshi's estimated resume time, when sent.
        estimated_resume_time: Option<String>,
    },
    /// Exchange and trading active again.
    Resumed,
}

/// A `GET /markets` listing in progress: started at `started_ns`, the markets seen so far.
#[derive(Debug, Clone)]
pub struct Listing {
    started_ns: i64,
    markets: HashMap<String, ListStatus>,
}

impl Listing {
    /// A listing whose first request goes out at `started_ns`.
    pub fn new(started_ns: i64) -> Listing {
        Listing { started_ns, markets: HashMap::new() }
    }

    /// Adds a page. A market listed twice (it changed status between pages) keeps the later
    /// status.
    pub fn extend(&mut self, markets: impl IntoIterator<Item = MarketSummary>) {
        for m in markets {
            if let Some(status) = ListStatus::of_market_status(&m.status) {
                self.markets.insert(m.ticker, status);
            }
        }
    }

    /// Markets listed.
    pub fn len(&self) -> usize {
        self.markets.len()
    }

    /// Nothing listed.
    pub fn is_empty(&self) -> bool {
        self.markets.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Decision {
    at_ns: i64,
    terminal: bool,
}

/// The registry state. See the module docs for the rules.
#[derive(Debug)]
pub struct Registry {
    cfg: RegistryConfig,
    wanted: HashSet<ListStatus>,
    /// Member → when it was added.
    markets: HashMap<Arc<str>, i64>,
    /// Recent lifecycle decisions (pruned at each reconciliation) and terminal markets
    /// (kept while a listing still shows them, so a lagging list cannot re-add them).
    decisions: HashMap<Arc<str>, Decision>,
    paused: bool,
    next_status_ns: i64,
    next_reconcile_ns: i64,
    listings: u64,
}

impl Registry {
    /// An empty registry; the first [`Registry::poll`] lists everything.
    pub fn new(cfg: RegistryConfig) -> Registry {
        assert!(!cfg.statuses.is_empty(), "registry with no status filter would track nothing");
        assert!(cfg.reconcile_interval_ns > 0 && cfg.status_interval_ns > 0, "zero interval");
        Registry {
            wanted: cfg.statuses.iter().copied().collect(),
            cfg,
            markets: HashMap::new(),
            decisions: HashMap::new(),
            paused: false,
            next_status_ns: i64::MIN,
            next_reconcile_ns: i64::MIN,
            listings: 0,
        }
    }

    /// Whether `ticker` is tracked.
    pub fn contains(&self, ticker: &str) -> bool {
        self.markets.contains_key(ticker)
    }

    /// Markets tracked.
    pub fn len(&self) -> usize {
        self.markets.len()
    }

    /// No market tracked.
    pub fn is_empty(&self) -> bool {
        self.markets.is_empty()
    }

    /// Every tracked market, sorted.
    pub fn markets(&self) -> Vec<Arc<str>> {
        let mut all: Vec<Arc<str>> = self.markets.keys().cloned().collect();
        all.sort();
        all
    }

    /// Complete listings applied by [`Registry::poll`] (the discovery, then reconciliations).
    pub fn listings(&self) -> u64 {
        self.listings
    }

    /// Whether the last status check found the exchange inactive.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The configured status filters.
    pub fn statuses(&self) -> &[ListStatus] {
        &self.cfg.statuses
    }

    /// Applies a lifecycle event received at `now_ns`; `None` when membership is unchanged.
    pub fn on_lifecycle(
        &mut self,
        event: &MarketLifecycle<'_>,
        now_ns: i64,
    ) -> Option<RegistryChange> {
        self.on_lifecycle_kind(event.market, &event.kind, now_ns)
    }

    /// [`Registry::on_lifecycle`] for a market's ticker and event kind.
    pub fn on_lifecycle_kind(
        &mut self,
        market: &str,
        kind: &LifecycleKind<'_>,
        now_ns: i64,
    ) -> Option<RegistryChange> {
        let (status, terminal) = match kind {
            LifecycleKind::Created => (ListStatus::Unopened, false),
            LifecycleKind::Activated => (ListStatus::Open, false),
            LifecycleKind::Deactivated => (ListStatus::Paused, false),
            LifecycleKind::Determined => (ListStatus::Closed, true),
            LifecycleKind::Settled => (ListStatus::Settled, true),
            _ => return None,
        };
        let wanted = self.wanted.contains(&status)
            || (*kind == LifecycleKind::Created && self.wanted.contains(&ListStatus::Open));
        let ticker: Arc<str> = Arc::from(market);
        self.decisions.insert(ticker.clone(), Decision { at_ns: now_ns, terminal });
        let mut change = RegistryChange::default();
        if wanted {
            if !self.markets.contains_key(&ticker) {
                self.markets.insert(ticker.clone(), now_ns);
                change.add.push(ticker);
            }
        } else if self.markets.remove(&ticker).is_some() {
            change.remove.push(ticker);
        }
        (!change.is_empty()).then_some(change)
    }

    /// Applies a complete listing (all configured statuses): adds what is listed and missing,
    /// removes what is tracked and not listed, within the race rules of the module docs.
    pub fn apply_listing(&mut self, listing: Listing) -> RegistryChange {
        let started_ns = listing.started_ns;
        let trusted = |d: &Decision| d.at_ns > started_ns.saturating_sub(LIFECYCLE_TRUST_NS);
        let mut change = RegistryChange::default();
        for (ticker, status) in &listing.markets {
            if !self.wanted.contains(status) || self.markets.contains_key(ticker.as_str()) {
                continue;
            }
            if let Some(d) = self.decisions.get(ticker.as_str())
                && (d.terminal || trusted(d))
            {
                continue;
            }
            let ticker: Arc<str> = Arc::from(ticker.as_str());
            self.markets.insert(ticker.clone(), started_ns);
            change.add.push(ticker);
        }
        let gone: Vec<Arc<str>> = self
            .markets
            .iter()
            .filter(|&(ticker, &added_ns)| {
                added_ns < started_ns
                    && !listing.markets.get(&**ticker).is_some_and(|s| self.wanted.contains(s))
                    && !self.decisions.get(ticker).is_some_and(|d| !d.terminal && trusted(d))
            })
            .map(|(ticker, _)| ticker.clone())
            .collect();
        for ticker in gone {
            self.markets.remove(&ticker);
            change.remove.push(ticker);
        }
        // Forget old decisions; keep terminal ones while the (lagging) listing still shows them.
        self.decisions.retain(|ticker, d| {
            trusted(d) || (d.terminal && listing.markets.contains_key(&**ticker))
        });
        change.add.sort();
        change.remove.sort();
        change
    }

    /// Applies an exchange status; reports a transition.
    pub fn on_exchange_status(&mut self, status: &ExchangeStatus) -> Option<RegistryUpdate> {
        match (self.paused, status.is_active()) {
            (false, false) => {
                self.paused = true;
                Some(RegistryUpdate::Paused {
                    estimated_resume_time: status.estimated_resume_time.clone(),
                })
            }
            (true, true) => {
                self.paused = false;
                Some(RegistryUpdate::Resumed)
            }
            _ => None,
        }
    }

    /// When [`Registry::poll`] next has something to do.
    pub fn next_due_ns(&self) -> i64 {
        if self.paused {
            self.next_status_ns
        } else {
            self.next_status_ns.min(self.next_reconcile_ns)
        }
    }

    /// Forces a reconciliation at the next [`Registry::poll`].
    pub fn reconcile_now(&mut self) {
        self.next_reconcile_ns = i64::MIN;
    }

    /// Does what is due at `now_ns`: the exchange-status check, then (unless paused) a full
    /// listing and reconciliation (the first one is the discovery). I/O through `client`.
    pub fn poll(
        &mut self,
        client: &mut RestClient,
        now_ns: i64,
    ) -> Result<Vec<RegistryUpdate>, RestError> {
        let mut updates = Vec::new();
        if now_ns >= self.next_status_ns {
            let status = client.exchange_status()?;
            self.next_status_ns = now_ns.saturating_add(self.cfg.status_interval_ns);
            updates.extend(self.on_exchange_status(&status));
        }
        if !self.paused && now_ns >= self.next_reconcile_ns {
            let listing = list(client, &self.cfg.statuses, now_ns)?;
            self.next_reconcile_ns = now_ns.saturating_add(self.cfg.reconcile_interval_ns);
            let change = self.apply_listing(listing);
            self.listings += 1;
            if !change.is_empty() {
                updates.push(RegistryUpdate::Change(change));
            }
        }
        Ok(updates)
    }
}

/// Lists every market under `statuses` (paged, limit 1000), started at `started_ns`.
pub fn list(
    client: &mut RestClient,
    statuses: &[ListStatus],
    started_ns: i64,
) -> Result<Listing, RestError> {
    let mut listing = Listing::new(started_ns);
    for &status in statuses {
        client.for_each_market(Some(status), |page| listing.extend(page))?;
    }
    Ok(listing)
}
