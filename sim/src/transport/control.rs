//! The fault-control endpoint: a small HTTP/JSON server on its own loopback port that tests
//! (and operators of a demo) use to trigger faults at run time and to list live connections.
//!
//! Routes (bodies are JSON; answers are `{"ok":true}` or `{"error":".."}` with 404/400):
//! - `GET  /connections` → live connections: ids, subscriptions, counters
//! - `POST /faults/close {"conn":2,"code":1011}` (1006 = drop TCP without a close frame)
//! - `POST /faults/silence {"conn":2,"ms":3000}` (no data, no pings)
//! - `POST /faults/drop_next {"conn":2,"frames":3}` / `POST /faults/dup_next {..}`
//! - `POST /faults/overflow {"conn":2,"sid":1}` (error 25; `sid` omitted = every subscription)
//! - `POST /faults/outage {"ms":2000,"close_code":1006}` (handshakes refused with 503 and REST
//!   `GET /exchange/status` inactive with the resume time; `close_code` omitted = live
//!   connections are dropped with 1006, `0` = left alone)
//! - `POST /faults/reject_next {"handshakes":1}` (401 as if the signature were bad)
//! - `POST /faults/rest {"status":503,"count":3}` (the REST server answers 429/500/503)
//! - `POST /hub/advance {"events":100}` (manual clock only) → `{"exch_seq":..}`

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::faults::{Control, ControlError, Registry};
use super::hub::HubHandle;
use super::rest::{RestFault, RestFaults};

#[derive(Clone)]
struct Ctl {
    registry: Arc<Registry>,
    hub: HubHandle,
    rest: RestFaults,
}

/// The control router.
pub fn router(registry: Arc<Registry>, hub: HubHandle, rest: RestFaults) -> Router {
    Router::new()
        .route("/connections", get(connections))
        .route("/faults/close", post(close))
        .route("/faults/silence", post(silence))
        .route("/faults/drop_next", post(drop_next))
        .route("/faults/dup_next", post(dup_next))
        .route("/faults/overflow", post(overflow))
        .route("/faults/outage", post(outage))
        .route("/faults/reject_next", post(reject_next))
        .route("/faults/rest", post(rest_fault))
        .route("/hub/advance", post(advance))
        .with_state(Ctl { registry, hub, rest })
}

fn ok() -> Response {
    Json(serde_json::json!({"ok": true})).into_response()
}

fn fail(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({"error": message}))).into_response()
}

fn answer(result: Result<(), ControlError>) -> Response {
    match result {
        Ok(()) => ok(),
        Err(e @ ControlError::NoConnection(_)) => fail(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ControlError::PeriodTooLong(_)) => fail(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn connections(State(c): State<Ctl>) -> Response {
    Json(c.registry.connections()).into_response()
}

#[derive(Deserialize)]
struct CloseReq {
    conn: u64,
    code: u16,
}

async fn close(State(c): State<Ctl>, Json(r): Json<CloseReq>) -> Response {
    answer(c.registry.control(r.conn, Control::Close(r.code)).await)
}

#[derive(Deserialize)]
struct SilenceReq {
    conn: u64,
    ms: u64,
}

async fn silence(State(c): State<Ctl>, Json(r): Json<SilenceReq>) -> Response {
    let d = Duration::from_millis(r.ms);
    answer(c.registry.control(r.conn, Control::Silence(d)).await)
}

#[derive(Deserialize)]
struct FramesReq {
    conn: u64,
    frames: u64,
}

async fn drop_next(State(c): State<Ctl>, Json(r): Json<FramesReq>) -> Response {
    answer(c.registry.control(r.conn, Control::DropNext(r.frames)).await)
}

async fn dup_next(State(c): State<Ctl>, Json(r): Json<FramesReq>) -> Response {
    answer(c.registry.control(r.conn, Control::DupNext(r.frames)).await)
}

#[derive(Deserialize)]
struct OverflowReq {
    conn: u64,
    sid: Option<u64>,
}

async fn overflow(State(c): State<Ctl>, Json(r): Json<OverflowReq>) -> Response {
    answer(c.registry.control(r.conn, Control::Overflow(r.sid)).await)
}

#[derive(Deserialize)]
struct OutageReq {
    ms: u64,
    close_code: Option<u16>,
}

async fn outage(State(c): State<Ctl>, Json(r): Json<OutageReq>) -> Response {
    let close = match r.close_code {
        None => Some(1006),
        Some(0) => None,
        Some(code) => Some(code),
    };
    answer(c.registry.outage(Duration::from_millis(r.ms), close).await)
}

#[derive(Deserialize)]
struct RejectReq {
    handshakes: u64,
}

async fn reject_next(State(c): State<Ctl>, Json(r): Json<RejectReq>) -> Response {
    c.registry.reject_next(r.handshakes);
    ok()
}

#[derive(Deserialize)]
struct RestReq {
    status: u16,
    count: u32,
}

async fn rest_fault(State(c): State<Ctl>, Json(r): Json<RestReq>) -> Response {
    let fault = match r.status {
        429 => RestFault::TooManyRequests,
        500 => RestFault::InternalError,
        503 => RestFault::ServiceUnavailable,
        other => {
            return fail(StatusCode::BAD_REQUEST, format!("status {other}: use 429, 500 or 503"));
        }
    };
    c.rest.fail_next(r.count, fault);
    ok()
}

#[derive(Deserialize)]
struct AdvanceReq {
    events: u64,
}

async fn advance(State(c): State<Ctl>, Json(r): Json<AdvanceReq>) -> Response {
    match c.hub.advance(r.events).await {
        Ok(exch_seq) => Json(serde_json::json!({"exch_seq": exch_seq})).into_response(),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
