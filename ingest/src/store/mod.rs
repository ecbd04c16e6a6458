//! The gatherer store: shards push owned [`Record`]s onto bounded rings; one [`Writer`] thread
//! numbers them (`gseq`) and writes them into the gatherer's own PostgreSQL in binary COPY
//! batches, one transaction per batch, notifying [`NOTIFY_CHANNEL`] after each commit.
//!
//! ```text
//! shard ──push──► ArrayQueue<Record> ring ──┐
//! shard ──push──► ArrayQueue<Record> ring ──┼─► Writer: gseq → batch → COPY per table →
//! poller ─push──► ArrayQueue<Record> ring ──┘   INSERT batch, pg_notify, COMMIT
//! ```

pub mod limits;
pub mod record;
pub mod schema;
pub mod writer;

pub use limits::{RING_CAPACITY, WriterLimits};
pub use record::{
    DeltaRecord, EventLifecycleRecord, GapKind, GapMarker, MarketLifecycleRecord, Origin, RawFrame,
    RawReason, Record, SnapshotRecord, SnapshotSource, TickerRecord, TradeRecord,
};
pub use schema::{GATHERER, NOTIFY_CHANNEL};
pub use writer::{TableRows, Writer, WriterError, WriterOptions, WriterStats};
