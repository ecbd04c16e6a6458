//! Reconnect backoff: exponential with jitter, reset after a healthy period.
//!
//! The n-th consecutive failure waits `min(delay_min · 2ⁿ⁻¹, delay_max)` with "equal jitter": half
//! of that fixed, the other half uniformly random, so many shards dropped at once (the Thursday
//! pause, a network blip) do not reconnect in lockstep. A connection that stayed up for
//! `healthy_after` counts as recovered: the next failure starts again at `delay_min`. The jitter
//! comes from a seeded generator so a test (or a failing run) is reproducible. Pure: the caller
//! passes the time.

use std::time::Duration;

/// First delay after a failure: Kalshi's own guidance and common client practice is ~1 s.
pub const DELAY_MIN_DEFAULT: Duration = Duration::from_secs(1);
/// Longest delay: 5 minutes keeps a dead endpoint from being hammered, yet a recovered one is
/// noticed within minutes.
pub const DELAY_MAX_DEFAULT: Duration = Duration::from_secs(300);
/// A connection up this long is healthy: 60 s is six server heartbeats (one every 10 s), long
/// enough that a connection accepted and then cut at once (a crash loop) keeps backing off.
pub const HEALTHY_AFTER_DEFAULT: Duration = Duration::from_secs(60);

/// Bounds of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub delay_min: Duration,
    /// Cap of the doubling.
    pub delay_max: Duration,
    /// Uptime after which the failure count resets.
    pub healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            delay_min: DELAY_MIN_DEFAULT,
            delay_max: DELAY_MAX_DEFAULT,
            healthy_after: HEALTHY_AFTER_DEFAULT,
        }
    }
}

/// Reconnect delay state of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Consecutive failures since the last healthy period.
    failures: u32,
    /// When the current connection came up (ms, caller's clock), if it is up.
    connected_at_ms: Option<u64>,
    rng: SplitMix64,
}

impl Backoff {
    /// A backoff with `config`, jitter drawn from `seed`.
    ///
    /// # Panics
    /// If `delay_min` is zero or above `delay_max` (a configuration error).
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        assert!(
            !config.delay_min.is_zero() && config.delay_min <= config.delay_max,
            "backoff needs 0 < delay_min <= delay_max, got {config:?}"
        );
        Self { config, failures: 0, connected_at_ms: None, rng: SplitMix64(seed) }
    }

    /// The connection came up at `now_ms`.
    pub fn connected(&mut self, now_ms: u64) {
        self.connected_at_ms = Some(now_ms);
    }

    /// The connection (or an attempt) failed at `now_ms`: how long to wait before the next
    /// attempt. A connection that had been up for `healthy_after` resets the count first.
    pub fn failed(&mut self, now_ms: u64) -> Duration {
        if let Some(up_ms) = self.connected_at_ms.take()
            && u128::from(now_ms.saturating_sub(up_ms)) >= self.config.healthy_after.as_millis()
        {
            self.failures = 0;
        }
        let base = self.base(self.failures);
        self.failures = self.failures.saturating_add(1);
        let half = base / 2;
        let half_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter_ns = if half_ns == 0 { 0 } else { self.rng.next() % (half_ns + 1) };
        (base - half) + Duration::from_nanos(jitter_ns)
    }

    /// Consecutive failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The un-jittered delay after `failures` earlier failures.
    fn base(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        self.config
            .delay_min
            .checked_mul(factor)
            .map_or(self.config.delay_max, |d| d.min(self.config.delay_max))
    }
}

/// SplitMix64: a tiny, well-mixed seeded generator; jitter needs spread, not cryptography.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delays_double_from_one_second_to_five_minutes_within_their_jitter_band() {
        let mut b = Backoff::new(BackoffConfig::default(), 42);
        let bases = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
        for (i, base) in bases.into_iter().enumerate() {
            let d = b.failed(0);
            let base = secs(base);
            assert!(
                d >= base / 2 && d <= base,
                "failure {i}: {d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        assert_eq!(b.failures(), 12);
    }

    #[test]
    fn the_cap_holds_after_very_many_failures() {
        let mut b = Backoff::new(BackoffConfig::default(), 1);
        for _ in 0..200 {
            let d = b.failed(0);
            assert!(d <= DELAY_MAX_DEFAULT, "{d:?}");
        }
        assert!(b.failed(0) >= DELAY_MAX_DEFAULT / 2);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_another_seed_differs() {
        let run = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            (0..8).map(|_| b.failed(0)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut delays = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            delays.insert(b.failed(0));
        }
        assert!(delays.len() > 40, "only {} distinct first delays", delays.len());
    }

    #[test]
    fn a_healthy_period_resets_the_count_and_a_short_one_does_not() {
        let mut b = Backoff::new(BackoffConfig::default(), 3);
        for _ in 0..5 {
            b.failed(0);
        }
        // Up for 59.999 s: not healthy, the doubling goes on.
        b.connected(1_000);
        let d = b.failed(60_999);
        assert!(d >= secs(16), "{d:?}");
        assert_eq!(b.failures(), 6);
        // Up for exactly 60 s: healthy, back to the first delay.
        b.connected(100_000);
        let d = b.failed(160_000);
        assert!(d >= secs(1) / 2 && d <= secs(1), "{d:?}");
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn a_failure_without_connected_does_not_reset() {
        let mut b = Backoff::new(BackoffConfig::default(), 3);
        b.failed(0);
        b.failed(1_000_000);
        assert_eq!(b.failures(), 2);
    }

    #[test]
    fn test_sized_bounds_are_honoured() {
        let cfg = BackoffConfig {
            delay_min: Duration::from_millis(10),
            delay_max: Duration::from_millis(40),
            healthy_after: Duration::from_millis(100),
        };
        let mut b = Backoff::new(cfg, 9);
        let bands = [(5, 10), (10, 20), (20, 40), (20, 40)];
        for (lo, hi) in bands {
            let d = b.failed(0);
            assert!(d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi), "{d:?}");
        }
    }

    #[test]
    #[should_panic(expected = "delay_min <= delay_max")]
    fn inverted_bounds_are_refused() {
        let cfg =
            BackoffConfig { delay_min: secs(10), delay_max: secs(1), ..BackoffConfig::default() };
        let _ = Backoff::new(cfg, 0);
    }
}
