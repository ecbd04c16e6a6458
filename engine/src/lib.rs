//! kdp runtime shared by every component: domain types, named limits, PostgreSQL helpers.
//!
//! `engine` knows nothing of Kalshi's wire format (that is `ingest`) and nothing of merge rules
//! (that is `dedup`). It holds what several stages share: the normalized event model, the named
//! bounds, and database plumbing.

pub mod event;
pub mod pg;
pub mod telemetry;
