//! Every bound of the gatherer store, in one place, each with the reason for its value.

use std::time::Duration;

/// Records one shard ring holds before its producer sees it full and stops reading its sockets
/// (backpressure, never a drop): at a busy shard's ~100k records/s, about 0.6 s of slack for a
/// writer busy committing, at ~130 bytes per slot (8 MiB per shard).
pub const RING_CAPACITY: usize = 65_536;

/// The writer's bounds. [`WriterLimits::default`] holds the production values; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    /// Rows per batch (one transaction). Binary COPY spreads the commit's fsync over the rows; at
    /// the ~240k rows/s COPY rate measured on a 2-core box, 8,192 rows commit in ~35 ms, which
    /// bounds the latency a full batch adds.
    pub batch_rows_max: usize,
    /// A batch is flushed once its oldest row has waited this long: "a few ms" keeps a quiet
    /// stream's latency low while capping commits (each an fsync) at 200/s.
    pub flush_age_ms_max: u64,
    /// Rows the writer holds in memory (numbered, not yet committed) while the database is
    /// unreachable or slow; beyond it the writer stops draining the rings, so producers see full
    /// rings (backpressure) and nothing is dropped. 1,000,000 rows (~130 MB) cover ~10 s of the
    /// whole exchange at 100k records/s: a database restart, not a long outage.
    pub buffer_rows_max: usize,
    /// First wait before reconnecting after a failure: a local server restarting is back in
    /// well under a second, so start short.
    pub backoff_ms_min: u64,
    /// Longest wait between reconnect attempts (the wait doubles from the minimum): once the
    /// database is back, writing resumes within this time; longer would only delay recovery.
    pub backoff_ms_max: u64,
    /// Bound on one connection attempt, so an unreachable host (packets dropped) cannot stall
    /// the writer longer than a refused connection would.
    pub connect_timeout_ms: u64,
    /// Longest sleep when the rings are empty: the latency an idle writer adds to the next
    /// record; 1 ms is far below the flush age and costs ~1,000 wake-ups/s.
    pub idle_park_us_max: u64,
    /// Longest time between two writes of the per-connection progress (`run_conn`), which says
    /// where a restart gap begins after a crash: a stale value only starts that gap earlier, so
    /// one upsert per connection per second (against ~200 commits/s) keeps it within a second
    /// of the truth at a negligible cost. A connection's first rows always write it at once.
    pub progress_interval_ms_max: u64,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self {
            batch_rows_max: 8_192,
            flush_age_ms_max: 5,
            buffer_rows_max: 1_000_000,
            backoff_ms_min: 100,
            backoff_ms_max: 5_000,
            connect_timeout_ms: 5_000,
            idle_park_us_max: 1_000,
            progress_interval_ms_max: 1_000,
        }
    }
}

impl WriterLimits {
    /// Checks the bounds are usable: non-zero batch and buffer, and min backoff ≤ max backoff.
    pub fn check(&self) -> Result<(), String> {
        if self.batch_rows_max == 0 || self.buffer_rows_max == 0 {
            return Err(format!(
                "batch_rows_max ({}) and buffer_rows_max ({}) must be at least 1",
                self.batch_rows_max, self.buffer_rows_max
            ));
        }
        if self.backoff_ms_min == 0 || self.backoff_ms_min > self.backoff_ms_max {
            return Err(format!(
                "backoff_ms_min ({}) must be at least 1 and at most backoff_ms_max ({})",
                self.backoff_ms_min, self.backoff_ms_max
            ));
        }
        Ok(())
    }

    pub(crate) fn flush_age(&self) -> Duration {
        Duration::from_millis(self.flush_age_ms_max)
    }

    pub(crate) fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.backoff_ms_min)
    }

    pub(crate) fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_ms_max)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms_max)
    }

    pub(crate) fn idle_park(&self) -> Duration {
        Duration::from_micros(self.idle_park_us_max)
    }
}
