//! The metric schema, the per-thread [`Recorder`] and the merging [`Exporter`].
//!
//! A [`Schema`] is declared once at start-up (names, help, labels, histogram bounds) and fixed;
//! recorders index plain vectors by the ids it hands out, so recording is an indexed add.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;

/// How often a recorder publishes: 1 s, the usual scrape resolution and interval-log period.
pub const PUBLISH_INTERVAL_NS: u64 = 1_000_000_000;

/// Publications queued between recorders and the exporter: 64 = 16 sources (shards + writer +
/// registry) × 4 s of slack if the exporter thread stalls; beyond that recorders defer.
pub const PUBLISH_QUEUE_CAPACITY: usize = 64;

/// How often the exporter thread drains the queue even without scrapes: half the publish
/// interval, so a queue that holds 4 publications per source never fills while it runs.
pub const EXPORT_DRAIN_INTERVAL_MS: u64 = 500;

/// Bounds of one histogram family. Values outside `[low, high]` are clamped on record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSpec {
    /// Metric name, unit last (`_us`, `_rows`).
    pub name: &'static str,
    /// One line of help text.
    pub help: &'static str,
    /// Lowest discernible value (≥ 1).
    pub low: u64,
    /// Highest trackable value; larger values are recorded as `high`.
    pub high: u64,
    /// Significant decimal figures kept (relative error ≤ 10^-sigfig).
    pub sigfig: u8,
}

/// Frame received from the socket → its row committed in the gatherer database. 1 µs to 60 s:
/// the p99 target is 20 ms and a database outage of up to a minute must still show as a value,
/// not a clamp; 3 significant figures (≤ 0.1 % error) resolve 20 ms to ±20 µs in ~50 KiB.
pub const FRAME_RECV_TO_COMMIT_US: HistogramSpec = HistogramSpec {
    name: "kdp_frame_recv_to_commit_us",
    help: "Frame received to its rows committed locally, microseconds.",
    low: 1,
    high: 60_000_000,
    sigfig: 3,
};

/// Exchange time → received. Exchange times are ms or µs; 1 µs to 10 min covers a lagging feed
/// and clock skew up to minutes; negative differences (our clock behind) are recorded as 0.
pub const EXCH_TO_RECV_US: HistogramSpec = HistogramSpec {
    name: "kdp_exch_to_recv_us",
    help: "Exchange event time to frame received, microseconds (negative skew recorded as 0).",
    low: 1,
    high: 600_000_000,
    sigfig: 3,
};

/// Rows per committed writer batch: 1 to 1,048,576 (above `batch_rows_max` = 8,192 with room if
/// that bound is raised); 2 significant figures are enough to read batch sizing.
pub const WRITER_BATCH_ROWS: HistogramSpec = HistogramSpec {
    name: "kdp_writer_batch_rows",
    help: "Rows per committed writer batch.",
    low: 1,
    high: 1_048_576,
    sigfig: 2,
};

/// Index of a counter series in a [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterId(usize);
/// Index of a gauge series in a [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugeId(usize);
/// Index of a histogram series in a [`Schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramId(usize);

/// One series: a family name, its help and this series' label pairs.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) labels: Vec<(&'static str, String)>,
}

/// Declares series; [`SchemaBuilder::build`] fixes them.
#[derive(Debug, Default)]
pub struct SchemaBuilder {
    counters: Vec<Series>,
    gauges: Vec<Series>,
    histograms: Vec<(HistogramSpec, Series)>,
}

/// The fixed set of series every recorder of one [`Telemetry`] shares.
#[derive(Debug)]
pub struct Schema {
    pub(crate) counters: Vec<Series>,
    pub(crate) gauges: Vec<Series>,
    pub(crate) histograms: Vec<(HistogramSpec, Series)>,
}

fn valid_name(name: &str, first_ok: fn(char) -> bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(first_ok) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

impl SchemaBuilder {
    /// An empty schema.
    pub fn new() -> Self {
        Self::default()
    }

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Series {
        assert!(
            valid_name(name, is_name_start),
            "metric name {name:?} is not [a-zA-Z_][a-zA-Z0-9_]*"
        );
        for (key, _) in labels {
            assert!(
                valid_name(key, is_name_start) && !key.starts_with("__"),
                "label name {key:?} of {name} is not a valid Prometheus label name"
            );
            assert!(
                *key != "shard" && *key != "quantile",
                "label {key:?} of {name} is reserved (set by the exporter)"
            );
        }
        let all =
            self.counters.iter().chain(&self.gauges).chain(self.histograms.iter().map(|(_, s)| s));
        for other in all {
            if other.name == name {
                assert!(other.help == help, "metric {name} declared twice with different help");
                let same = other.labels.len() == labels.len()
                    && other.labels.iter().zip(labels).all(|(a, b)| a.0 == b.0 && a.1 == b.1);
                assert!(!same, "series {name} {labels:?} declared twice");
            }
        }
        Series { name, help, labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect() }
    }

    fn assert_kind_unique(&self, name: &str, kind: usize) {
        let kinds = [
            self.counters.iter().any(|s| s.name == name),
            self.gauges.iter().any(|s| s.name == name),
            self.histograms.iter().any(|(_, s)| s.name == name),
        ];
        for (k, used) in kinds.iter().enumerate() {
            assert!(k == kind || !used, "metric {name} declared with two different types");
        }
    }

    /// A monotonically increasing counter; the name must end in `_total`.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> CounterId {
        assert!(name.ends_with("_total"), "counter {name} must end in _total");
        self.assert_kind_unique(name, 0);
        let series = self.series(name, help, labels);
        self.counters.push(series);
        CounterId(self.counters.len() - 1)
    }

    /// A gauge; exported per recorder with a `shard` label.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> GaugeId {
        self.assert_kind_unique(name, 1);
        let series = self.series(name, help, labels);
        self.gauges.push(series);
        GaugeId(self.gauges.len() - 1)
    }

    /// A histogram with the given bounds; exported as a summary merged over recorders.
    pub fn histogram(
        &mut self,
        spec: HistogramSpec,
        labels: &[(&'static str, &str)],
    ) -> HistogramId {
        assert!(
            spec.low >= 1 && spec.high >= spec.low.saturating_mul(2) && spec.sigfig <= 5,
            "histogram {} bounds invalid: low {} high {} sigfig {}",
            spec.name,
            spec.low,
            spec.high,
            spec.sigfig
        );
        self.assert_kind_unique(spec.name, 2);
        for (other, _) in &self.histograms {
            assert!(
                other.name != spec.name || other == &spec,
                "histogram {} declared twice with different bounds",
                spec.name
            );
        }
        let series = self.series(spec.name, spec.help, labels);
        self.histograms.push((spec, series));
        HistogramId(self.histograms.len() - 1)
    }

    /// Fixes the schema.
    pub fn build(self) -> Schema {
        Schema { counters: self.counters, gauges: self.gauges, histograms: self.histograms }
    }
}

impl Schema {
    pub(crate) fn new_histograms(&self) -> Vec<Histogram<u64>> {
        self.histograms
            .iter()
            .map(|(spec, _)| {
                // Bounds were checked in `SchemaBuilder::histogram`.
                Histogram::new_with_bounds(spec.low, spec.high, spec.sigfig)
                    .unwrap_or_else(|e| panic!("histogram {} bounds refused: {e}", spec.name))
            })
            .collect()
    }
}

/// What a recorder hands to the exporter once per interval.
#[derive(Debug)]
pub struct Publication {
    source: usize,
    counters: Vec<u64>,
    gauges: Vec<i64>,
    histograms: Vec<Histogram<u64>>,
    sums: Vec<u64>,
}

/// Result of [`Recorder::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Handed to the exporter; the interval histograms were reset.
    Sent,
    /// The queue was full: kept locally, merged into the next publication.
    Deferred,
    /// The exporter is gone (shutdown): nothing to publish to.
    Closed,
}

/// The per-thread (per-shard) recorder. Not `Sync`-shared: the owning thread records with
/// `&mut self`, so recording is an indexed add with no atomics and no locks.
#[derive(Debug)]
pub struct Recorder {
    source: usize,
    schema: Arc<Schema>,
    counters: Vec<u64>,
    gauges: Vec<i64>,
    histograms: Vec<Histogram<u64>>,
    sums: Vec<u64>,
    published_at_ns: u64,
    tx: SyncSender<Publication>,
}

impl Recorder {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&mut self, id: CounterId, n: u64) {
        let c = &mut self.counters[id.0];
        *c = c.saturating_add(n);
    }

    /// Adds 1 to a counter.
    #[inline]
    pub fn incr(&mut self, id: CounterId) {
        self.add(id, 1);
    }

    /// Sets a gauge.
    #[inline]
    pub fn set(&mut self, id: GaugeId, value: i64) {
        self.gauges[id.0] = value;
    }

    /// Records a value, clamped to the histogram's `[low, high]`; its exact sum is kept too.
    #[inline]
    pub fn record(&mut self, id: HistogramId, value: u64) {
        let (spec, _) = &self.schema.histograms[id.0];
        let clamped = value.min(spec.high);
        self.histograms[id.0].saturating_record(clamped);
        self.sums[id.0] = self.sums[id.0].saturating_add(clamped);
    }

    /// Publishes if [`PUBLISH_INTERVAL_NS`] passed since the last publication (`now_ns` from
    /// the caller's clock, so tests drive it).
    pub fn publish_if_due(&mut self, now_ns: u64) -> Option<PublishOutcome> {
        (now_ns.saturating_sub(self.published_at_ns) >= PUBLISH_INTERVAL_NS)
            .then(|| self.publish(now_ns))
    }

    /// Publishes now: cumulative counters, current gauges, and the histograms recorded since
    /// the last successful publication (then reset). Never blocks.
    pub fn publish(&mut self, now_ns: u64) -> PublishOutcome {
        let fresh = self.schema.new_histograms();
        let publication = Publication {
            source: self.source,
            counters: self.counters.clone(),
            gauges: self.gauges.clone(),
            histograms: std::mem::replace(&mut self.histograms, fresh),
            sums: std::mem::replace(&mut self.sums, vec![0; self.schema.histograms.len()]),
        };
        self.published_at_ns = now_ns;
        match self.tx.try_send(publication) {
            Ok(()) => PublishOutcome::Sent,
            Err(TrySendError::Full(back)) => {
                self.histograms = back.histograms;
                self.sums = back.sums;
                PublishOutcome::Deferred
            }
            Err(TrySendError::Disconnected(_)) => PublishOutcome::Closed,
        }
    }
}

/// The state merged over all recorders, as exported.
#[derive(Debug)]
pub struct Merged {
    /// Counter totals, summed over sources, in schema order.
    pub counters: Vec<u64>,
    /// Gauges per source: `(source name, values in schema order)`, in recorder creation order.
    pub gauges: Vec<(String, Vec<i64>)>,
    /// Histograms over the whole run, merged over sources, in schema order.
    pub histograms: Vec<Histogram<u64>>,
    /// Exact sums of the recorded (clamped) values, in schema order.
    pub sums: Vec<u64>,
}

#[derive(Debug)]
struct Collector {
    rx: Receiver<Publication>,
    sources: Vec<String>,
    counters: Vec<Vec<u64>>,
    gauges: Vec<Vec<i64>>,
    total: Vec<Histogram<u64>>,
    sums: Vec<u64>,
    interval: Vec<Histogram<u64>>,
}

impl Collector {
    fn drain(&mut self) {
        while let Ok(p) = self.rx.try_recv() {
            self.counters[p.source] = p.counters;
            self.gauges[p.source] = p.gauges;
            for (i, h) in p.histograms.iter().enumerate() {
                // Same bounds on both sides (one schema), so `add` cannot fail.
                self.total[i].add(h).unwrap_or_else(|e| panic!("merging histogram {i}: {e}"));
                self.interval[i].add(h).unwrap_or_else(|e| panic!("merging histogram {i}: {e}"));
                self.sums[i] = self.sums[i].saturating_add(p.sums[i]);
            }
        }
    }
}

/// Creates recorders and the exporter that merges them.
#[derive(Debug)]
pub struct Telemetry {
    schema: Arc<Schema>,
    tx: SyncSender<Publication>,
    exporter: Exporter,
}

/// The exporting side: merges publications for `/metrics` and the interval log. Cloneable; the
/// merge state sits behind a mutex that only exporting threads take (never a recorder).
#[derive(Debug, Clone)]
pub struct Exporter {
    schema: Arc<Schema>,
    collector: Arc<Mutex<Collector>>,
}

impl Telemetry {
    /// A telemetry hub for `schema`.
    pub fn new(schema: Schema) -> Self {
        let schema = Arc::new(schema);
        let (tx, rx) = sync_channel(PUBLISH_QUEUE_CAPACITY);
        let collector = Collector {
            rx,
            sources: Vec::new(),
            counters: Vec::new(),
            gauges: Vec::new(),
            total: schema.new_histograms(),
            sums: vec![0; schema.histograms.len()],
            interval: schema.new_histograms(),
        };
        let exporter =
            Exporter { schema: Arc::clone(&schema), collector: Arc::new(Mutex::new(collector)) };
        Telemetry { schema, tx, exporter }
    }

    /// A recorder for one thread; `source` becomes its `shard` label (`"0"`, `"writer"`).
    /// `now_ns` starts its first publication interval.
    pub fn recorder(&mut self, source: &str, now_ns: u64) -> Recorder {
        let mut c = self.exporter.lock();
        assert!(!c.sources.iter().any(|s| s == source), "two recorders named {source:?}");
        c.sources.push(source.to_owned());
        c.counters.push(vec![0; self.schema.counters.len()]);
        c.gauges.push(vec![0; self.schema.gauges.len()]);
        Recorder {
            source: c.sources.len() - 1,
            schema: Arc::clone(&self.schema),
            counters: vec![0; self.schema.counters.len()],
            gauges: vec![0; self.schema.gauges.len()],
            histograms: self.schema.new_histograms(),
            sums: vec![0; self.schema.histograms.len()],
            published_at_ns: now_ns,
            tx: self.tx.clone(),
        }
    }

    /// The exporting side.
    pub fn exporter(&self) -> Exporter {
        self.exporter.clone()
    }
}

impl Exporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Collector> {
        // A panic while merging leaves counts that are still valid sums; keep serving them.
        self.collector.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The schema the recorders share.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Receives every queued publication into the merged state.
    pub fn drain(&self) {
        self.lock().drain();
    }

    /// Drains, then returns the merged state.
    pub fn merged(&self) -> Merged {
        let mut c = self.lock();
        c.drain();
        let mut counters = vec![0u64; self.schema.counters.len()];
        for per_source in &c.counters {
            for (total, v) in counters.iter_mut().zip(per_source) {
                *total = total.saturating_add(*v);
            }
        }
        Merged {
            counters,
            gauges: c.sources.iter().cloned().zip(c.gauges.iter().cloned()).collect(),
            histograms: c.total.clone(),
            sums: c.sums.clone(),
        }
    }

    /// Drains, then takes the histograms merged since the last call (for the interval log),
    /// as `(tag, histogram)` in schema order. The tag is the metric name, followed by
    /// `{k=v;k=v}` when the series has labels (interval-log tags cannot hold `,`, space or
    /// line breaks; such characters in label values become `_`).
    pub fn take_interval(&self) -> Vec<(String, Histogram<u64>)> {
        let mut c = self.lock();
        c.drain();
        let fresh = self.schema.new_histograms();
        let taken = std::mem::replace(&mut c.interval, fresh);
        self.schema.histograms.iter().map(|(_, series)| interval_tag(series)).zip(taken).collect()
    }

    /// The Prometheus text exposition of the merged state.
    pub fn render_prometheus(&self) -> String {
        super::prometheus::render(&self.schema, &self.merged())
    }
}

fn interval_tag(series: &Series) -> String {
    let mut tag = series.name.to_owned();
    if !series.labels.is_empty() {
        tag.push('{');
        for (i, (k, v)) in series.labels.iter().enumerate() {
            if i > 0 {
                tag.push(';');
            }
            tag.push_str(k);
            tag.push('=');
            tag.extend(v.chars().map(|c| match c {
                ',' | ' ' | '\r' | '\n' => '_',
                c => c,
            }));
        }
        tag.push('}');
    }
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "counter kdp_frames must end in _total")]
    fn counters_end_in_total() {
        SchemaBuilder::new().counter("kdp_frames", "h", &[]);
    }

    #[test]
    #[should_panic(expected = "label \"shard\" of kdp_x_total is reserved")]
    fn shard_label_is_reserved() {
        SchemaBuilder::new().counter("kdp_x_total", "h", &[("shard", "1")]);
    }

    #[test]
    #[should_panic(expected = "metric kdp_x_total declared with two different types")]
    fn one_name_one_type() {
        let mut s = SchemaBuilder::new();
        s.counter("kdp_x_total", "h", &[]);
        s.gauge("kdp_x_total", "h", &[]);
    }

    #[test]
    #[should_panic(expected = "two recorders named \"0\"")]
    fn recorder_names_are_unique() {
        let mut t = Telemetry::new(SchemaBuilder::new().build());
        t.recorder("0", 0);
        t.recorder("0", 0);
    }

    #[test]
    fn values_above_the_bound_are_clamped() {
        let mut s = SchemaBuilder::new();
        let h = s.histogram(WRITER_BATCH_ROWS, &[]);
        let mut t = Telemetry::new(s.build());
        let mut r = t.recorder("writer", 0);
        r.record(h, u64::MAX);
        r.record(h, 0);
        assert_eq!(r.publish(0), PublishOutcome::Sent);
        let m = t.exporter().merged();
        assert_eq!(m.sums[0], WRITER_BATCH_ROWS.high);
        assert_eq!(m.histograms[0].len(), 2);
        assert_eq!(m.histograms[0].min(), 0);
        assert!(m.histograms[0].equivalent(m.histograms[0].max(), WRITER_BATCH_ROWS.high));
    }
}
