//! The merge core's named bounds, each with the reason for its value.

/// Most gatherer streams one merge core takes: the seen-key bitmap is one byte.
pub const GATHERERS_MAX: usize = 8;

/// How a [`crate::merge::MergeCore`] is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeLimits {
    /// Keys each seen-key index (one per event kind) holds before it evicts its oldest key.
    /// 1,000,000 delta keys take about 130 MB (map slot + eviction queue entry) and cover about
    /// 100 s of the exchange at 10,000 events/s: far more than the slack, so the limit is only
    /// reached while a live gatherer lags far behind. Evicting at the limit is lossless: a later
    /// delivery of an evicted key is emitted again and production's unique constraint absorbs it
    /// (counted by the sink as a conflict).
    pub index_keys_max: usize,
    /// How far behind the slowest live gatherer's progress a key may fall before it is evicted,
    /// ns. Gatherers receive one exchange frame within milliseconds of each other; 10 s also
    /// covers a reader's batch lag and a short reconnect. A gatherer later than this re-delivers
    /// keys the index has forgotten: emitted again and absorbed by the unique constraint.
    pub watermark_slack_ns: i64,
    /// Rows a batch holds before [`crate::merge::MergeCore::batch_full`] says to hand it to the
    /// sink: 8,192 rows are about 35 ms of binary COPY at 240k rows/s, as for the gatherer writer.
    pub batch_rows_max: usize,
}

impl MergeLimits {
    /// The production defaults.
    pub const DEFAULT: MergeLimits = MergeLimits {
        index_keys_max: 1_000_000,
        watermark_slack_ns: 10_000_000_000,
        batch_rows_max: 8_192,
    };

    /// Checks the limits are usable.
    pub fn check(&self) -> Result<(), String> {
        if self.index_keys_max == 0 {
            return Err("index_keys_max must be at least 1".into());
        }
        if self.watermark_slack_ns < 0 {
            return Err(format!(
                "watermark_slack_ns must be >= 0, got {}",
                self.watermark_slack_ns
            ));
        }
        if self.batch_rows_max == 0 {
            return Err("batch_rows_max must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for MergeLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
