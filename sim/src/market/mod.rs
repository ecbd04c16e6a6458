//! The simulator's market: a pure, seeded, deterministic exchange in virtual time, and the
//! ground-truth log of what it sent.
//!
//! - [`model`]: the shared data model (events, catalog entries, books, ticker state).
//! - [`config`]: [`MarketConfig`] and the engine's named bounds.
//! - [`engine`]: [`Exchange`], the market engine (pull API and queries).
//! - [`truth`]: the ground-truth file format (writer, reader, PostgreSQL COPY rows).
//! - [`rng`]: the engine's own seeded generator (the stream never changes with a crate upgrade).
//!
//! Everything here is pure: no I/O except through the `Write`/`Read` handed to the truth
//! writer/reader, no wall clock, no threads, no floating point.

mod book;
mod catalog;
pub mod config;
pub mod engine;
mod grid;
pub mod model;
pub mod rng;
pub mod truth;
mod weights;

pub use config::{ConfigError, MarketConfig};
pub use engine::{EngineStats, Exchange, RecentTrade, TradePage, TradeQuery};
