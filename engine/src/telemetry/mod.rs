//! Telemetry: metrics recorded on the hot path without locks, exported as Prometheus text and
//! as HdrHistogram interval logs; `/health` JSON; rate-limited log lines.
//!
//! Where it sits: every shard (a glommio executor) and the writer (a plain thread) own a
//! [`Recorder`]. Recording is a plain add into the recorder's own memory — no atomics, no locks.
//! Once per [`PUBLISH_INTERVAL_NS`] the owner calls [`Recorder::publish_if_due`], which hands a
//! [`Publication`] (cumulative counters, current gauges, the interval's histograms) to the
//! [`Exporter`] through a bounded channel with `try_send`; a full channel defers the publication
//! (the histograms keep accumulating locally and go out next time), so nothing is lost and the
//! hot path never waits. The exporter merges publications: counters summed over sources,
//! histograms added, gauges kept per source (`shard` label). The [`http::HttpServer`] thread
//! drains the channel every [`EXPORT_DRAIN_INTERVAL_MS`], serves `/metrics` and `/health`, and
//! (optionally) appends the drained interval histograms to an [`interval_log::IntervalLog`].
//!
//! Why publish-by-channel rather than shared atomics: HdrHistograms are not atomic, and a
//! per-shard copy sent once a second costs one allocation per histogram per second off the hot
//! path, while atomic counters would put cross-core cache traffic on every frame.

pub mod http;
pub mod interval_log;
pub mod metrics;
pub mod prometheus;
pub mod ratelimit;

pub use metrics::{
    CounterId, EXPORT_DRAIN_INTERVAL_MS, Exporter, GaugeId, HistogramId, HistogramSpec, Merged,
    PUBLISH_INTERVAL_NS, PUBLISH_QUEUE_CAPACITY, Publication, PublishOutcome, Recorder, Schema,
    SchemaBuilder, Telemetry,
};
pub use ratelimit::{Decision, RateLimitedLog};

/// Errors of the telemetry endpoints and the interval log.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The HTTP listener could not be opened.
    #[error("telemetry HTTP server cannot listen on {addr}: {reason}; choose a free address")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the server library said.
        reason: String,
    },
    /// Creating or writing an interval log file failed.
    #[error(
        "HdrHistogram interval log {path}: {source}; check the directory exists and is writable"
    )]
    LogIo {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A histogram could not be serialised (a bug: V2 serialisation of a valid histogram).
    #[error("HdrHistogram interval log: serialising histogram {tag} failed: {reason}")]
    Serialize {
        /// The histogram's tag (metric name).
        tag: String,
        /// What the serializer said.
        reason: String,
    },
}
