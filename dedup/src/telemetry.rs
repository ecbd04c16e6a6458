//! The deduplicator's metrics (`/metrics`) and health report (`/health`), on the engine's
//! telemetry (one [`Recorder`] owned by the merge thread, published once a second; the HTTP
//! thread reads the readers' and the merge thread's relaxed atomics for `/health`).
//!
//! Series names are fixed by `deploy/prometheus/alerts.yml`: `kdp_dedup_lag_rows{gatherer}`,
//! `kdp_dedup_lag_seconds{gatherer}`, `kdp_dedup_gatherer_connected{gatherer}`,
//! `kdp_dedup_rows_merged_total`, `kdp_dedup_duplicates_dropped_total`,
//! `kdp_dedup_last_commit_age_seconds`, `kdp_dedup_commit_latency_us` (a summary, like the
//! gatherer's histograms). Gauges also carry the engine's `shard="merge"` label (their recorder).

use kdp_engine::telemetry::http::HealthReport;
use kdp_engine::telemetry::{
    CounterId, GaugeId, HistogramId, HistogramSpec, Schema, SchemaBuilder,
};
use serde::Serialize;

/// Production COMMIT latency: the whole `Sink::write` (COPY + cursors + COMMIT). 1 µs to 60 s:
/// a batch takes tens of ms; a production outage's retries are not in it (each attempt is).
pub const COMMIT_LATENCY_US: HistogramSpec = HistogramSpec {
    name: "kdp_dedup_commit_latency_us",
    help: "Production batch write (COPY, cursors, COMMIT), microseconds.",
    low: 1,
    high: 60_000_000,
    sigfig: 3,
};

/// Rows per committed production batch: up to 1,048,576 (above the catch-up maximum of
/// 65,536 with room if it is raised); 2 significant figures read batch sizing.
pub const BATCH_ROWS: HistogramSpec = HistogramSpec {
    name: "kdp_dedup_batch_rows",
    help: "Rows per committed production batch.",
    low: 1,
    high: 1_048_576,
    sigfig: 2,
};

/// Exchange time → committed in production, per merged delta, trade and ticker. 1 µs to 1 h:
/// the p99 target is 100 ms, and a catch-up after an outage must still show as values.
pub const EXCH_TO_COMMIT_US: HistogramSpec = HistogramSpec {
    name: "kdp_dedup_exch_to_commit_us",
    help: "Exchange event time to its row committed in production, microseconds (negative \
           skew recorded as 0).",
    low: 1,
    high: 3_600_000_000,
    sigfig: 3,
};

/// Gatherer receive time → committed in production, per merged row with a receive time.
pub const RECV_TO_COMMIT_US: HistogramSpec = HistogramSpec {
    name: "kdp_dedup_recv_to_commit_us",
    help: "Gatherer receive time to the row committed in production, microseconds.",
    low: 1,
    high: 3_600_000_000,
    sigfig: 3,
};

/// One gatherer's series.
#[derive(Debug, Clone, Copy)]
pub struct GathererMetrics {
    /// `kdp_dedup_lag_rows`.
    pub lag_rows: GaugeId,
    /// `kdp_dedup_lag_seconds`.
    pub lag_seconds: GaugeId,
    /// `kdp_dedup_gatherer_connected`.
    pub connected: GaugeId,
    /// `kdp_dedup_ring_occupancy_rows`.
    pub ring_rows: GaugeId,
    /// `kdp_dedup_rows_read_total`.
    pub rows_read: CounterId,
    /// `kdp_dedup_reader_failures_total`.
    pub failures: CounterId,
}

/// The series the merge thread records.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Per gatherer, in config order.
    pub gatherers: Vec<GathererMetrics>,
    /// `kdp_dedup_rows_merged_total`: rows committed to production.
    pub rows_merged: CounterId,
    /// `kdp_dedup_duplicates_dropped_total`: rows another gatherer (or production, or the same
    /// gatherer's repeated ticker frame) delivered first.
    pub duplicates: CounterId,
    /// `kdp_dedup_batches_total`.
    pub batches: CounterId,
    /// `kdp_dedup_batches_staged_total`: batches redone through staging + ON CONFLICT.
    pub batches_staged: CounterId,
    /// `kdp_dedup_rows_conflicted_total`: rows the staging path found already in production.
    pub rows_conflicted: CounterId,
    /// `kdp_dedup_sink_failures_total`.
    pub sink_failures: CounterId,
    /// `kdp_dedup_last_commit_age_seconds`.
    pub last_commit_age: GaugeId,
    /// `kdp_dedup_production_connected`.
    pub production_connected: GaugeId,
    /// `kdp_dedup_catch_up`.
    pub catch_up: GaugeId,
    /// `kdp_dedup_index_keys`.
    pub index_keys: GaugeId,
    /// `kdp_dedup_commit_latency_us`.
    pub commit_latency_us: HistogramId,
    /// `kdp_dedup_batch_rows`.
    pub batch_rows: HistogramId,
    /// `kdp_dedup_exch_to_commit_us`.
    pub exch_to_commit_us: HistogramId,
    /// `kdp_dedup_recv_to_commit_us`.
    pub recv_to_commit_us: HistogramId,
}

/// Declares the dedup's series for gatherers `names`.
pub fn schema(names: &[String]) -> (Schema, Metrics) {
    let mut b = SchemaBuilder::new();
    let gatherers = names
        .iter()
        .map(|name| {
            let l = [("gatherer", name.as_str())];
            GathererMetrics {
                lag_rows: b.gauge(
                    "kdp_dedup_lag_rows",
                    "Rows committed in the gatherer database and not yet merged into production.",
                    &l,
                ),
                lag_seconds: b.gauge(
                    "kdp_dedup_lag_seconds",
                    "Age of the oldest gatherer commit not yet merged into production, seconds.",
                    &l,
                ),
                connected: b.gauge(
                    "kdp_dedup_gatherer_connected",
                    "1 when the reader is connected to the gatherer database.",
                    &l,
                ),
                ring_rows: b.gauge(
                    "kdp_dedup_ring_occupancy_rows",
                    "Rows read from the gatherer waiting on its ring for the merge.",
                    &l,
                ),
                rows_read: b.counter(
                    "kdp_dedup_rows_read_total",
                    "Rows read from the gatherer database.",
                    &l,
                ),
                failures: b.counter(
                    "kdp_dedup_reader_failures_total",
                    "Failed connections or reads of the gatherer database (each retried).",
                    &l,
                ),
            }
        })
        .collect();
    let rows_merged =
        b.counter("kdp_dedup_rows_merged_total", "Rows committed to production.", &[]);
    let duplicates = b.counter(
        "kdp_dedup_duplicates_dropped_total",
        "Rows dropped because another gatherer, production or a repeated frame delivered them \
         first.",
        &[],
    );
    let batches = b.counter("kdp_dedup_batches_total", "Batches committed to production.", &[]);
    let batches_staged = b.counter(
        "kdp_dedup_batches_staged_total",
        "Batches redone through staging + ON CONFLICT after a unique violation.",
        &[],
    );
    let rows_conflicted = b.counter(
        "kdp_dedup_rows_conflicted_total",
        "Rows the staging path found already in production.",
        &[],
    );
    let sink_failures = b.counter(
        "kdp_dedup_sink_failures_total",
        "Failed production batch attempts (each retried).",
        &[],
    );
    let last_commit_age = b.gauge(
        "kdp_dedup_last_commit_age_seconds",
        "Seconds since the last production commit (since start before the first).",
        &[],
    );
    let production_connected = b.gauge(
        "kdp_dedup_production_connected",
        "1 when the last production attempt succeeded.",
        &[],
    );
    let catch_up = b.gauge("kdp_dedup_catch_up", "1 while in catch-up mode (large batches).", &[]);
    let index_keys = b.gauge("kdp_dedup_index_keys", "Keys held by the seen-key index.", &[]);
    let commit_latency_us = b.histogram(COMMIT_LATENCY_US, &[]);
    let batch_rows = b.histogram(BATCH_ROWS, &[]);
    let exch_to_commit_us = b.histogram(EXCH_TO_COMMIT_US, &[]);
    let recv_to_commit_us = b.histogram(RECV_TO_COMMIT_US, &[]);
    let metrics = Metrics {
        gatherers,
        rows_merged,
        duplicates,
        batches,
        batches_staged,
        rows_conflicted,
        sink_failures,
        last_commit_age,
        production_connected,
        catch_up,
        index_keys,
        commit_latency_us,
        batch_rows,
        exch_to_commit_us,
        recv_to_commit_us,
    };
    (b.build(), metrics)
}

/// One gatherer in `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GathererHealth {
    /// Its name.
    pub name: String,
    /// Its cursor slot.
    pub id: u8,
    /// The reader is connected.
    pub connected: bool,
    /// Rows committed there and not yet in production.
    pub lag_rows: u64,
    /// Age of the oldest of those, seconds.
    pub lag_seconds: u64,
    /// The gatherer's last committed gseq, as last seen.
    pub head_gseq: i64,
    /// The last gseq read.
    pub read_gseq: i64,
    /// Production's cursor for it.
    pub committed_gseq: i64,
    /// The last reader failure.
    pub last_error: Option<String>,
}

/// Production in `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductionHealth {
    /// The last production attempt (connect, write, check) succeeded.
    pub connected: bool,
    /// Seconds since the last commit (`None`: none yet).
    pub last_commit_age_seconds: Option<u64>,
    /// Batches committed since start.
    pub batches_committed: u64,
}

/// The `/health` JSON: 503 when production is down, no gatherer is connected, or the merge
/// thread has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The merge thread runs.
    pub running: bool,
    /// Catch-up mode (large batches) is on.
    pub catch_up: bool,
    /// Production.
    pub production: ProductionHealth,
    /// Every configured gatherer.
    pub gatherers: Vec<GathererHealth>,
    /// Why the merge thread stopped, if it did on an error.
    pub fatal: Option<String>,
}

impl HealthReport for Health {
    fn healthy(&self) -> bool {
        self.running && self.production.connected && self.gatherers.iter().any(|g| g.connected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gatherer(connected: bool) -> GathererHealth {
        GathererHealth {
            name: "a".into(),
            id: 0,
            connected,
            lag_rows: 0,
            lag_seconds: 0,
            head_gseq: 0,
            read_gseq: 0,
            committed_gseq: 0,
            last_error: None,
        }
    }

    #[test]
    fn health_is_503_without_production_or_gatherers() {
        let production = ProductionHealth {
            connected: true,
            last_commit_age_seconds: None,
            batches_committed: 0,
        };
        let h = Health {
            running: true,
            catch_up: false,
            production: production.clone(),
            gatherers: vec![gatherer(false), gatherer(true)],
            fatal: None,
        };
        assert!(h.healthy());
        assert!(!Health { gatherers: vec![gatherer(false)], ..h.clone() }.healthy());
        assert!(
            !Health {
                production: ProductionHealth { connected: false, ..production },
                ..h.clone()
            }
            .healthy()
        );
        assert!(!Health { running: false, ..h }.healthy());
    }

    #[test]
    fn the_alerted_series_exist() {
        let (schema, _) = schema(&["a".to_owned(), "b".to_owned()]);
        let mut t = kdp_engine::telemetry::Telemetry::new(schema);
        let mut r = t.recorder("merge", 0);
        r.publish(0);
        let text = t.exporter().render_prometheus();
        for series in [
            "kdp_dedup_lag_rows{shard=\"merge\",gatherer=\"a\"} 0",
            "kdp_dedup_lag_seconds{shard=\"merge\",gatherer=\"b\"} 0",
            "kdp_dedup_gatherer_connected{shard=\"merge\",gatherer=\"a\"} 0",
            "kdp_dedup_rows_merged_total 0",
            "kdp_dedup_duplicates_dropped_total 0",
            "kdp_dedup_last_commit_age_seconds{shard=\"merge\"} 0",
            "kdp_dedup_commit_latency_us{quantile=\"0.99\"} NaN",
            "kdp_dedup_commit_latency_us_count 0",
            "kdp_dedup_rows_read_total{gatherer=\"b\"} 0",
            "kdp_dedup_batch_rows_count 0",
            "kdp_dedup_exch_to_commit_us_count 0",
            "kdp_dedup_recv_to_commit_us_count 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
}
