//! The deduplicator: merges the gatherer streams into one exact history in production
//! (DESIGN §3 "Dedup", §4; issue 5).
//!
//! - [`row`]: what a reader hands over, one owned row of a gatherer table with its gseq.
//! - [`merge`]: the pure merge core ([`merge::MergeCore`]): occurrence ordinals (`occ`), the
//!   seen-key index (`index`), batches with per-gatherer cursors.
//! - [`sink`]: one production transaction per batch (binary COPY, cursors, COMMIT), with the
//!   unique-constraint backstop and the lost-COMMIT check.
//! - [`schema`]: the production schema's migrations.
//! - [`crash`]: named crash points for the crash tests (off unless `KDP_DEDUP_CRASH_AT` is set).
//! - [`ledger`]: the coverage ledger (per market per minute counts, per-gatherer uncovered
//!   intervals, coverage gaps), written with each batch ([`sink::Sink::write_with_ledger`]).
//! - [`verify`]: `kdp verify`'s pure check of DESIGN §4's invariants; [`inspect`]: the SQL
//!   reads under `kdp verify` and `kdp coverage`.
//!
//! - [`query`]: `kdp book` (a market's order book at a time: nearest snapshot + merged deltas)
//!   and `kdp trades`, with their exact table / CSV / JSON output.
//! - [`metadata`]: series, events and markets from REST into production on a schedule
//!   (upsert, latest wins), through the gatherer's token bucket.
//!
//! Not here yet (issue 5): readers (LISTEN/NOTIFY), the `kdp dedup` command.

pub mod config;
pub mod crash;
mod index;
pub mod inspect;
pub mod ledger;
pub mod limits;
pub mod merge;
pub mod metadata;
mod occ;
pub mod query;
pub mod reader;
pub mod row;
pub mod schema;
pub mod service;
pub mod sink;
pub mod telemetry;
pub mod verify;
