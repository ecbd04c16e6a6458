//! The gatherer side of kdp: the Kalshi wire protocol, request signing and sessions.
//!
//! Only this crate knows Kalshi's wire format. Everything downstream sees the normalized events
//! of `kdp_engine::event`.

pub mod auth;
pub mod gatherer;
pub mod poller;
pub mod registry;
pub mod rest;
pub mod session;
pub mod store;
pub mod wire;
