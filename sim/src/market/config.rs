//! The market engine's configuration and its internal bounds, each with the reason for its value.
//!
//! Everything the event stream depends on is here, so `(seed, config)` reproduces a run exactly;
//! [`MarketConfig::digest`] fingerprints it for the ground-truth header.

use thiserror::Error;

/// The engine's configuration. `Default` gives a realistic 1,000-market exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketConfig {
    /// Seed of every random choice (catalog, order flow, lifecycle). Default 1.
    pub seed: u64,
    /// Markets in the initial catalog. Default 1,000 (a fast demo); 100,000 is supported (the
    /// scale of the benchmarks), capped by [`MARKETS_MAX`].
    pub markets: usize,
    /// Markets per event, drawn uniformly in `1..=markets_per_event_max`. Default 10: Kalshi
    /// events carry one market (a yes/no question) up to a ladder of strikes.
    pub markets_per_event_max: u32,
    /// Events per series, drawn uniformly in `1..=events_per_series_max`. Default 6: a recurring
    /// series (daily temperature, hourly bitcoin) has a few dates listed at once.
    pub events_per_series_max: u32,
    /// Exchange events per second of virtual time, all markets together. Default 5,000 (busier
    /// than Kalshi's typical public feed, so tests see plenty of traffic per virtual second).
    pub rate_msgs_per_s: u64,
    /// Virtual time of the start, ns since the epoch. Default 2026-11-29T00:00:00Z.
    pub start_ts_ns: i64,
    /// Truncate exchange times to whole seconds (the legacy feed), not microseconds. Default off.
    pub legacy_whole_second_times: bool,
    /// Probability (ppm) that the delta of a quote or cancel is immediately repeated exactly
    /// (same market, exchange time, side, price and change): genuine identical events that merge
    /// code must not collapse. A cancel's repeat is skipped when the level cannot cover it, so
    /// the realised rate is somewhat lower. Default 2,000 (0.2%).
    pub identical_delta_ppm: u32,
    /// Share (ppm) of markets whose sizes are fractional hundredths. Default 50,000 (5%).
    pub fractional_market_ppm: u32,
    /// Shortest trading life (open → close) of a market, seconds. Default 600: short enough that
    /// a minutes-long test run sees markets close, determine, settle and be replaced.
    pub lifetime_s_min: u32,
    /// Longest trading life of a market, seconds. Default 7,200.
    pub lifetime_s_max: u32,
    /// Longest delay between a market's creation and its opening, seconds. Default 120.
    pub open_delay_s_max: u32,
    /// Probability (ppm) that a market is paused once during its life (`deactivated`, then
    /// `activated` again). Default 100,000 (10%).
    pub pause_ppm: u32,
    /// Longest pause, seconds. Default 120.
    pub pause_s_max: u32,
    /// Probability (ppm) that a market's close time is moved once (`close_date_updated`).
    /// Default 50,000 (5%).
    pub close_update_ppm: u32,
    /// Longest delay from close to determination, seconds. Default 120.
    pub determine_delay_s_max: u32,
    /// Longest delay from determination to settlement, seconds. Default 300.
    pub settle_delay_s_max: u32,
    /// Share (ppm) of initial events not yet open (markets `initialized`). Default 50,000.
    pub initial_unopened_ppm: u32,
    /// Share (ppm) of initial events already past close (markets `closed` or `determined`).
    /// Default 30,000.
    pub initial_closed_ppm: u32,
    /// Share (ppm) of initial events already settled (markets `finalized`). Default 50,000.
    pub initial_settled_ppm: u32,
}

/// 2026-11-29T00:00:00Z in ns.
pub const START_TS_NS_DEFAULT: i64 = 1_795_910_400_000_000_000;

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            markets: 1_000,
            markets_per_event_max: 10,
            events_per_series_max: 6,
            rate_msgs_per_s: 5_000,
            start_ts_ns: START_TS_NS_DEFAULT,
            legacy_whole_second_times: false,
            identical_delta_ppm: 2_000,
            fractional_market_ppm: 50_000,
            lifetime_s_min: 600,
            lifetime_s_max: 7_200,
            open_delay_s_max: 120,
            pause_ppm: 100_000,
            pause_s_max: 120,
            close_update_ppm: 50_000,
            determine_delay_s_max: 120,
            settle_delay_s_max: 300,
            initial_unopened_ppm: 50_000,
            initial_closed_ppm: 30_000,
            initial_settled_ppm: 50_000,
        }
    }
}

/// Largest initial catalog: ids are `u32`, and the truth file's catalog must stay loadable in
/// memory by `kdp verify` (Kalshi lists far fewer markets at once).
pub const MARKETS_MAX: usize = 10_000_000;
/// Largest markets-per-event bound: the strike ladder's ticker formats stay unique up to here.
pub const MARKETS_PER_EVENT_MAX: u32 = 100;
/// Largest event rate: inter-arrival times stay ≥ 1 ns on average.
pub const RATE_MSGS_PER_S_MAX: u64 = 1_000_000_000;
/// Longest market life, seconds (about a year): keeps every virtual time far inside `i64` ns.
pub const LIFETIME_S_MAX: u32 = 366 * 86_400;

/// Levels per ladder the engine keeps at most: a new level beyond this turns the action into a
/// cancel. Real books near the top rarely list more; bounded so book work stays O(small).
pub const LEVELS_PER_SIDE_MAX: usize = 48;
/// Levels a crossing order may sweep at most: real sweeps are shallow, and the bound keeps one
/// order action's event burst small.
pub const SWEEP_LEVELS_MAX: usize = 4;
/// Recent trades kept for REST `/markets/trades`: about a minute of a busy exchange at the
/// benchmark rates, and ~10 MB of memory.
pub const TRADES_RECENT_MAX: usize = 100_000;
/// Weight scale of the heavy-tailed (Zipf-like) activity: a market's weight is
/// `ACTIVITY_WEIGHT_SCALE / (1 + k)` with `k` uniform in `0..markets`, so even the quietest of
/// `MARKETS_MAX` markets keeps a non-zero weight.
pub const ACTIVITY_WEIGHT_SCALE: u64 = 1 << 40;

/// A configuration the engine cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A field is outside its allowed range.
    #[error("market config: {field} = {value} is outside {allowed}; fix the value")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The allowed range, in words.
        allowed: &'static str,
    },
}

fn check(
    field: &'static str,
    value: u64,
    ok: bool,
    allowed: &'static str,
) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::OutOfRange { field, value, allowed }) }
}

impl MarketConfig {
    /// Checks every field against its bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ppm = |v: u32| v <= 1_000_000;
        check(
            "markets",
            self.markets as u64,
            (1..=MARKETS_MAX).contains(&self.markets),
            "1..=10,000,000",
        )?;
        check(
            "markets_per_event_max",
            self.markets_per_event_max.into(),
            (1..=MARKETS_PER_EVENT_MAX).contains(&self.markets_per_event_max),
            "1..=100",
        )?;
        check(
            "events_per_series_max",
            self.events_per_series_max.into(),
            (1..=1_000).contains(&self.events_per_series_max),
            "1..=1,000",
        )?;
        check(
            "rate_msgs_per_s",
            self.rate_msgs_per_s,
            (1..=RATE_MSGS_PER_S_MAX).contains(&self.rate_msgs_per_s),
            "1..=1,000,000,000",
        )?;
        check(
            "start_ts_ns",
            self.start_ts_ns as u64,
            (0..=4_000_000_000_000_000_000).contains(&self.start_ts_ns),
            "0..=4e18 (before year 2096)",
        )?;
        for (field, v) in [
            ("identical_delta_ppm", self.identical_delta_ppm),
            ("fractional_market_ppm", self.fractional_market_ppm),
            ("pause_ppm", self.pause_ppm),
            ("close_update_ppm", self.close_update_ppm),
        ] {
            check(field, v.into(), ppm(v), "0..=1,000,000 ppm")?;
        }
        let initial = u64::from(self.initial_unopened_ppm)
            + u64::from(self.initial_closed_ppm)
            + u64::from(self.initial_settled_ppm);
        check("initial_*_ppm (sum)", initial, initial <= 1_000_000, "0..=1,000,000 ppm together")?;
        check(
            "lifetime_s_min",
            self.lifetime_s_min.into(),
            self.lifetime_s_min >= 2 && self.lifetime_s_min <= self.lifetime_s_max,
            "2..=lifetime_s_max",
        )?;
        check(
            "lifetime_s_max",
            self.lifetime_s_max.into(),
            self.lifetime_s_max <= LIFETIME_S_MAX,
            "..=31,622,400 (a year)",
        )?;
        for (field, v) in [
            ("open_delay_s_max", self.open_delay_s_max),
            ("pause_s_max", self.pause_s_max),
            ("determine_delay_s_max", self.determine_delay_s_max),
            ("settle_delay_s_max", self.settle_delay_s_max),
        ] {
            check(field, v.into(), v <= LIFETIME_S_MAX, "..=31,622,400 (a year)")?;
        }
        Ok(())
    }

    /// FNV-1a 64 over a canonical little-endian encoding of every field: equal digests mean the
    /// same event stream (together with the code version).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01B3);
            }
        };
        eat(&self.seed.to_le_bytes());
        eat(&(self.markets as u64).to_le_bytes());
        eat(&self.markets_per_event_max.to_le_bytes());
        eat(&self.events_per_series_max.to_le_bytes());
        eat(&self.rate_msgs_per_s.to_le_bytes());
        eat(&self.start_ts_ns.to_le_bytes());
        eat(&[u8::from(self.legacy_whole_second_times)]);
        for v in [
            self.identical_delta_ppm,
            self.fractional_market_ppm,
            self.lifetime_s_min,
            self.lifetime_s_max,
            self.open_delay_s_max,
            self.pause_ppm,
            self.pause_s_max,
            self.close_update_ppm,
            self.determine_delay_s_max,
            self.settle_delay_s_max,
            self.initial_unopened_ppm,
            self.initial_closed_ppm,
            self.initial_settled_ppm,
        ] {
            eat(&v.to_le_bytes());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_digest_tracks_fields() {
        let c = MarketConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let mut d = c.clone();
        assert_eq!(c.digest(), d.digest());
        d.identical_delta_ppm += 1;
        assert_ne!(c.digest(), d.digest());
    }

    #[test]
    fn invalid_fields_are_named() {
        let c = MarketConfig { markets: 0, ..MarketConfig::default() };
        assert_eq!(
            c.validate(),
            Err(ConfigError::OutOfRange { field: "markets", value: 0, allowed: "1..=10,000,000" })
        );
        let c = MarketConfig { lifetime_s_min: 9_000, ..MarketConfig::default() };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange { field: "lifetime_s_min", .. })
        ));
    }
}
