//! The gatherer's metrics (`/metrics`) and health report (`/health`).
//!
//! Every shard owns a [`ShardTelemetry`] (its own [`Recorder`], shared by the shard's sessions on
//! the shard's thread through a `RefCell`: no atomics, no locks) and publishes it on the
//! recorder's timer from the shard's executor loop; the writer owns a
//! [`WriterTelemetry`](crate::store::writer::WriterTelemetry). The health report reads the
//! shards' relaxed counters and the writer's published stats on the HTTP thread only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kdp_engine::event::Event;
use kdp_engine::telemetry::http::HealthReport;
use kdp_engine::telemetry::metrics::{EXCH_TO_RECV_US, FRAME_RECV_TO_COMMIT_US, WRITER_BATCH_ROWS};
use kdp_engine::telemetry::{CounterId, GaugeId, HistogramId, Recorder, Schema, SchemaBuilder};
use serde::Serialize;

use crate::store::writer::{WriterStats, WriterTelemetry};

/// Event types counted in `kdp_events_total{type=...}`, in [`ShardMetrics::events`] order.
pub const EVENT_TYPES: [&str; 5] = ["delta", "trade", "ticker", "snapshot", "lifecycle"];

/// Window of `gaps_last_minute` in `/health`, in one-second buckets.
pub const GAP_WINDOW_S: usize = 60;

/// The series a shard records.
#[derive(Debug, Clone, Copy)]
pub struct ShardMetrics {
    frames: CounterId,
    events: [CounterId; EVENT_TYPES.len()],
    gaps: CounterId,
    reconnects: CounterId,
    resyncs: CounterId,
    ring_occupancy: GaugeId,
    sessions_up: GaugeId,
    markets_subscribed: GaugeId,
    exch_to_recv_us: HistogramId,
}

/// A shard's gauges, set at every tick of its executor loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ShardGauges {
    /// Records on the shard's ring.
    pub ring_len: usize,
    /// The shard's sessions connected now.
    pub sessions_up: u64,
    /// Markets on the shard's connected sessions.
    pub markets_subscribed: u64,
}

/// The series the writer records.
#[derive(Debug, Clone, Copy)]
pub struct WriterMetrics {
    rows_committed: CounterId,
    batch_rows: HistogramId,
    recv_to_commit_us: HistogramId,
}

impl WriterMetrics {
    /// The writer's telemetry around its own recorder.
    pub fn telemetry(self, recorder: Recorder) -> WriterTelemetry {
        WriterTelemetry {
            recorder,
            rows_committed: self.rows_committed,
            batch_rows: self.batch_rows,
            recv_to_commit_us: self.recv_to_commit_us,
        }
    }
}

/// Declares the gatherer's series.
pub fn schema() -> (Schema, ShardMetrics, WriterMetrics) {
    let mut b = SchemaBuilder::new();
    let frames = b.counter(
        "kdp_frames_received_total",
        "WebSocket data frames received, before parsing.",
        &[],
    );
    let events = EVENT_TYPES.map(|t| {
        b.counter(
            "kdp_events_total",
            "Accepted events handed to the writer, by type.",
            &[("type", t)],
        )
    });
    let gaps = b.counter(
        "kdp_gaps_total",
        "Gap markers recorded (sequence gaps, lost subscriptions, disconnects).",
        &[],
    );
    let reconnects =
        b.counter("kdp_reconnects_total", "Sessions connected again after a lost connection.", &[]);
    let resyncs =
        b.counter("kdp_resyncs_total", "Book resyncs (get_snapshot) queued after gaps.", &[]);
    let ring_occupancy = b.gauge(
        "kdp_ring_occupancy_records",
        "Records waiting on the shard's ring for the writer.",
        &[],
    );
    // The /health figures as gauges, per shard (the writer's recorder reports 0: filter
    // shard!="writer" or sum over shards).
    let sessions_up = b.gauge(
        "kdp_sessions_up",
        "WebSocket sessions connected now (the registry's lifecycle session included).",
        &[],
    );
    let markets_subscribed =
        b.gauge("kdp_markets_subscribed", "Markets on the shard's connected sessions.", &[]);
    let exch_to_recv_us = b.histogram(EXCH_TO_RECV_US, &[]);
    let rows_committed =
        b.counter("kdp_rows_committed_total", "Rows committed to the gatherer database.", &[]);
    let batch_rows = b.histogram(WRITER_BATCH_ROWS, &[]);
    let recv_to_commit_us = b.histogram(FRAME_RECV_TO_COMMIT_US, &[]);
    let shard = ShardMetrics {
        frames,
        events,
        gaps,
        reconnects,
        resyncs,
        ring_occupancy,
        sessions_up,
        markets_subscribed,
        exch_to_recv_us,
    };
    (b.build(), shard, WriterMetrics { rows_committed, batch_rows, recv_to_commit_us })
}

/// Wall-clock ns since the epoch (the clock of `ts_recv_ns`).
pub(crate) fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One shard's recorder and series.
#[derive(Debug)]
pub struct ShardTelemetry {
    recorder: Recorder,
    ids: ShardMetrics,
}

impl ShardTelemetry {
    /// Wraps a recorder made from the schema of [`schema`].
    pub fn new(recorder: Recorder, ids: ShardMetrics) -> Self {
        ShardTelemetry { recorder, ids }
    }

    pub(crate) fn frame(&mut self) {
        self.recorder.incr(self.ids.frames);
    }

    /// Counts `event` by type and records exchange time → received when it carries one
    /// (negative skew, our clock behind, is recorded as 0).
    pub(crate) fn event(&mut self, event: &Event<'_>, ts_recv_ns: u64) {
        let (kind, ts_exch_ns) = match event {
            Event::Delta(d) => (0, Some(d.ts_exch_ns)),
            Event::Trade(t) => (1, Some(t.ts_exch_ns)),
            Event::Ticker(t) => (2, Some(t.ts_exch_ns)),
            Event::Snapshot(_) => (3, None),
            Event::MarketLifecycle(_) | Event::EventLifecycle(_) => (4, None),
        };
        self.recorder.incr(self.ids.events[kind]);
        if let Some(exch) = ts_exch_ns {
            let exch = u64::try_from(exch).unwrap_or(0);
            self.recorder.record(self.ids.exch_to_recv_us, ts_recv_ns.saturating_sub(exch) / 1_000);
        }
    }

    pub(crate) fn gap(&mut self) {
        self.recorder.incr(self.ids.gaps);
    }

    pub(crate) fn reconnect(&mut self) {
        self.recorder.incr(self.ids.reconnects);
    }

    pub(crate) fn resyncs(&mut self, n: u64) {
        self.recorder.add(self.ids.resyncs, n);
    }

    /// Sets the gauges and publishes if the interval passed (`force`: publish now).
    pub(crate) fn tick(&mut self, gauges: ShardGauges, now_ns: u64, force: bool) {
        let ids = self.ids;
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let ring = u64::try_from(gauges.ring_len).unwrap_or(u64::MAX);
        self.recorder.set(ids.ring_occupancy, as_i64(ring));
        self.recorder.set(ids.sessions_up, as_i64(gauges.sessions_up));
        self.recorder.set(ids.markets_subscribed, as_i64(gauges.markets_subscribed));
        if force {
            self.recorder.publish(now_ns);
        } else {
            self.recorder.publish_if_due(now_ns);
        }
    }
}

/// Gaps per second over the last [`GAP_WINDOW_S`] seconds. Written by one shard thread only,
/// read by the health endpoint (relaxed: a count read mid-update is off by one gap at most).
#[derive(Debug)]
pub struct GapWindow {
    second: [AtomicU64; GAP_WINDOW_S],
    count: [AtomicU64; GAP_WINDOW_S],
}

impl Default for GapWindow {
    fn default() -> Self {
        GapWindow {
            second: [const { AtomicU64::new(u64::MAX) }; GAP_WINDOW_S],
            count: [const { AtomicU64::new(0) }; GAP_WINDOW_S],
        }
    }
}

impl GapWindow {
    /// Counts a gap at wall-clock second `now_s` (single writer).
    pub fn note(&self, now_s: u64) {
        let i = bucket(now_s);
        if self.second[i].load(Ordering::Relaxed) != now_s {
            self.count[i].store(0, Ordering::Relaxed);
            self.second[i].store(now_s, Ordering::Release);
        }
        self.count[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Gaps in the [`GAP_WINDOW_S`] seconds up to `now_s`.
    pub fn last_window(&self, now_s: u64) -> u64 {
        self.second
            .iter()
            .zip(&self.count)
            .filter(|(s, _)| {
                let s = s.load(Ordering::Acquire);
                s <= now_s && now_s - s < GAP_WINDOW_S as u64
            })
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

fn bucket(second: u64) -> usize {
    usize::try_from(second % GAP_WINDOW_S as u64).unwrap_or(0)
}

/// What the shards contribute to `/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardHealth {
    /// Sessions the shard runs.
    pub sessions: u64,
    /// Sessions connected now.
    pub sessions_up: u64,
    /// Markets on connected sessions.
    pub markets_subscribed: u64,
    /// Wall-clock ns of the shard's last frame (0: none yet).
    pub last_frame_ns: u64,
    /// Gaps in the last [`GAP_WINDOW_S`] seconds.
    pub gaps_last_minute: u64,
}

/// The writer's part of `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriterHealth {
    /// The writer thread runs.
    pub running: bool,
    /// Rows drained from the rings, not yet committed.
    pub rows_buffered: usize,
    /// The last committed gseq (0: none yet).
    pub last_committed_gseq: i64,
    /// Age of the last commit, ms (`None`: nothing committed yet).
    pub last_commit_age_ms: Option<u64>,
}

/// The `/health` JSON: 503 when no session is up or the writer is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Sessions connected now, over all shards.
    pub sessions_up: u64,
    /// Sessions configured.
    pub sessions: u64,
    /// Markets on connected sessions.
    pub markets_subscribed: u64,
    /// Age of the newest frame of any shard, ms (`None`: no frame yet).
    pub last_frame_age_ms: Option<u64>,
    /// Writer lag.
    pub writer: WriterHealth,
    /// Gap markers recorded in the last minute.
    pub gaps_last_minute: u64,
}

impl Health {
    /// Combines the shards' and the writer's state at wall-clock `now_ns`.
    pub fn new(
        shards: &[ShardHealth],
        writer: &WriterStats,
        writer_running: bool,
        now_ns: u64,
    ) -> Health {
        let age_ms = |at_ns: u64| (at_ns > 0).then(|| now_ns.saturating_sub(at_ns) / 1_000_000);
        let last_frame_ns = shards.iter().map(|s| s.last_frame_ns).max().unwrap_or(0);
        Health {
            sessions_up: shards.iter().map(|s| s.sessions_up).sum(),
            sessions: shards.iter().map(|s| s.sessions).sum(),
            markets_subscribed: shards.iter().map(|s| s.markets_subscribed).sum(),
            last_frame_age_ms: age_ms(last_frame_ns),
            writer: WriterHealth {
                running: writer_running,
                rows_buffered: writer.buffered_rows,
                last_committed_gseq: writer.last_committed_gseq,
                last_commit_age_ms: age_ms(writer.last_commit_ns),
            },
            gaps_last_minute: shards.iter().map(|s| s.gaps_last_minute).sum(),
        }
    }
}

impl HealthReport for Health {
    fn healthy(&self) -> bool {
        self.sessions_up > 0 && self.writer.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_window_counts_the_last_minute_only() {
        let w = GapWindow::default();
        w.note(1_000);
        w.note(1_000);
        w.note(1_030);
        assert_eq!(w.last_window(1_030), 3);
        assert_eq!(w.last_window(1_059), 3);
        assert_eq!(w.last_window(1_060), 1);
        w.note(1_060); // same bucket as 1_000: its old count is replaced
        assert_eq!(w.last_window(1_060), 2);
        assert_eq!(w.last_window(1_200), 0);
    }

    #[test]
    fn health_is_503_without_sessions_or_writer() {
        let up = ShardHealth {
            sessions: 2,
            sessions_up: 1,
            markets_subscribed: 6,
            last_frame_ns: 5_000_000,
            gaps_last_minute: 1,
        };
        let writer =
            WriterStats { last_commit_ns: 2_000_000, buffered_rows: 3, ..WriterStats::default() };
        let h = Health::new(&[up, ShardHealth::default()], &writer, true, 9_000_000);
        assert_eq!((h.sessions_up, h.sessions, h.markets_subscribed), (1, 2, 6));
        assert_eq!(h.last_frame_age_ms, Some(4));
        assert_eq!(h.writer.last_commit_age_ms, Some(7));
        assert_eq!(h.writer.rows_buffered, 3);
        assert!(h.healthy());
        assert!(!Health::new(&[up], &writer, false, 9_000_000).healthy());
        let down = ShardHealth { sessions_up: 0, ..up };
        assert!(!Health::new(&[down], &writer, true, 9_000_000).healthy());
        assert_eq!(Health::new(&[], &WriterStats::default(), true, 1).last_frame_age_ms, None);
    }
}
