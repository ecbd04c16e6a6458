//! Rate-limited log lines: at most `lines_max` lines per `interval_ns` per key; the first line
//! of the next window reports how many were suppressed ("suppressed K similar messages").
//!
//! For "one line per reconnect or gap, rate-limited on floods": a flapping connection logs its
//! first few reconnects each window and a count of the rest, never thousands of lines. Time is
//! passed in, so tests count lines exactly. The key table is bounded by `keys_max`; when full,
//! expired keys are dropped, and lines for new keys beyond it are suppressed and counted under
//! [`RateLimitedLog::overflow_suppressed`].

use std::collections::HashMap;
use std::hash::Hash;

/// Default lines per key per window: 5, enough to see a pattern starting.
pub const LINES_MAX_DEFAULT: u32 = 5;
/// Default window: 60 s, so a steady flood logs one summary a minute.
pub const INTERVAL_NS_DEFAULT: u64 = 60_000_000_000;
/// Default keys tracked: 4,096 (connections × kinds of a large gatherer) — a few hundred KiB.
pub const KEYS_MAX_DEFAULT: usize = 4_096;

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log it. `suppressed` lines of this key were dropped in the window(s) before; if not 0,
    /// log "suppressed K similar messages" with it.
    Emit {
        /// Lines suppressed since the last emitted one.
        suppressed: u64,
    },
    /// Drop it (counted).
    Suppress,
}

#[derive(Debug)]
struct Window {
    start_ns: u64,
    emitted: u32,
    suppressed: u64,
}

/// The limiter; one per thread that logs (no locks).
#[derive(Debug)]
pub struct RateLimitedLog<K> {
    lines_max: u32,
    interval_ns: u64,
    keys_max: usize,
    windows: HashMap<K, Window>,
    overflow_suppressed: u64,
}

impl<K: Hash + Eq + Clone> RateLimitedLog<K> {
    /// A limiter with explicit bounds.
    pub fn new(lines_max: u32, interval_ns: u64, keys_max: usize) -> Self {
        assert!(
            lines_max >= 1 && interval_ns >= 1 && keys_max >= 1,
            "rate limit bounds must be ≥ 1"
        );
        RateLimitedLog {
            lines_max,
            interval_ns,
            keys_max,
            windows: HashMap::new(),
            overflow_suppressed: 0,
        }
    }

    /// Lines dropped because the key table was full.
    pub fn overflow_suppressed(&self) -> u64 {
        self.overflow_suppressed
    }

    /// Decides one line for `key` at `now_ns`.
    pub fn check(&mut self, key: &K, now_ns: u64) -> Decision {
        if !self.windows.contains_key(key) && self.windows.len() >= self.keys_max {
            let interval_ns = self.interval_ns;
            // A window with suppressed lines is kept until its key logs again to report them.
            self.windows
                .retain(|_, w| w.suppressed > 0 || now_ns.saturating_sub(w.start_ns) < interval_ns);
            if self.windows.len() >= self.keys_max {
                self.overflow_suppressed = self.overflow_suppressed.saturating_add(1);
                return Decision::Suppress;
            }
        }
        let window = self.windows.entry(key.clone()).or_insert(Window {
            start_ns: now_ns,
            emitted: 0,
            suppressed: 0,
        });
        if now_ns.saturating_sub(window.start_ns) >= self.interval_ns {
            window.start_ns = now_ns;
            window.emitted = 0;
        }
        if window.emitted < self.lines_max {
            window.emitted += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            Decision::Emit { suppressed }
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
            Decision::Suppress
        }
    }

    /// Logs `message` at WARN through `tracing` unless rate-limited; returns the decision.
    pub fn warn(&mut self, key: &K, now_ns: u64, message: std::fmt::Arguments<'_>) -> Decision {
        let decision = self.check(key, now_ns);
        match decision {
            Decision::Emit { suppressed: 0 } => tracing::warn!("{message}"),
            Decision::Emit { suppressed } => {
                tracing::warn!("{message} (suppressed {suppressed} similar messages)");
            }
            Decision::Suppress => {}
        }
        decision
    }
}

impl<K: Hash + Eq + Clone> Default for RateLimitedLog<K> {
    fn default() -> Self {
        Self::new(LINES_MAX_DEFAULT, INTERVAL_NS_DEFAULT, KEYS_MAX_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn at_most_n_per_window_then_a_summary_count() {
        let mut log = RateLimitedLog::new(3, 10 * S, 16);
        let key = "reconnect conn-1";
        let decisions: Vec<Decision> = (0..10).map(|i| log.check(&key, i * S / 10)).collect();
        let emitted = decisions.iter().filter(|d| matches!(d, Decision::Emit { .. })).count();
        assert_eq!(emitted, 3);
        assert_eq!(decisions[..3], [Decision::Emit { suppressed: 0 }; 3]);
        assert!(decisions[3..].iter().all(|d| *d == Decision::Suppress));
        // Still inside the window (it started at 0): suppressed.
        assert_eq!(log.check(&key, 10 * S - 1), Decision::Suppress);
        // Next window: the first line carries the 8 suppressed ones, once.
        assert_eq!(log.check(&key, 10 * S), Decision::Emit { suppressed: 8 });
        assert_eq!(log.check(&key, 10 * S + 1), Decision::Emit { suppressed: 0 });
        assert_eq!(log.warn(&key, 10 * S + 2, format_args!("x")), Decision::Emit { suppressed: 0 });
        assert_eq!(log.warn(&key, 10 * S + 3, format_args!("x")), Decision::Suppress);
    }

    #[test]
    fn keys_are_limited_independently() {
        let mut log = RateLimitedLog::new(1, S, 16);
        assert_eq!(log.check(&1u32, 0), Decision::Emit { suppressed: 0 });
        assert_eq!(log.check(&2u32, 0), Decision::Emit { suppressed: 0 });
        assert_eq!(log.check(&1u32, 1), Decision::Suppress);
        assert_eq!(log.check(&2u32, 1), Decision::Suppress);
        assert_eq!(log.check(&2u32, 2), Decision::Suppress);
        assert_eq!(log.check(&1u32, S), Decision::Emit { suppressed: 1 });
        assert_eq!(log.check(&2u32, S), Decision::Emit { suppressed: 2 });
    }

    #[test]
    fn the_key_table_is_bounded() {
        let mut log = RateLimitedLog::new(1, S, 2);
        assert_eq!(log.check(&1u32, 0), Decision::Emit { suppressed: 0 });
        assert_eq!(log.check(&2u32, 0), Decision::Emit { suppressed: 0 });
        // Full, nothing expired: a third key is suppressed and counted.
        assert_eq!(log.check(&3u32, 1), Decision::Suppress);
        assert_eq!(log.overflow_suppressed(), 1);
        // Key 1 has a suppressed line to report, so it survives pruning; key 2 expires.
        assert_eq!(log.check(&1u32, 2), Decision::Suppress);
        assert_eq!(log.check(&3u32, S), Decision::Emit { suppressed: 0 });
        assert_eq!(log.check(&1u32, S), Decision::Emit { suppressed: 1 });
        assert_eq!(log.overflow_suppressed(), 1);
    }
}
