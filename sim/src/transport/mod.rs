//! The simulator's network side: TLS, signed-handshake verification, WebSocket sessions, the hub
//! that runs the exchange, fault injection and the REST server.

pub mod auth;
pub mod tls;
