//! kdp's Kalshi exchange simulator: a seeded, deterministic market, the exchange's WebSocket and
//! REST protocol on loopback, fault injection, and a ground-truth log that `kdp verify` compares
//! production against.
//!
//! - `market`: the pure market engine (its own data model, seeded randomness, books, orders,
//!   trades, tickers, lifecycle, in virtual time) and the ground-truth file format.
//! - `transport`: certificates, signed-handshake verification, WebSocket and HTTP plumbing.

pub mod market;
pub mod transport;
