//! The telemetry HTTP endpoint: /metrics, /health (200 and 503 with the JSON), 404, 405.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kdp_engine::telemetry::http::{HealthReport, HttpServer};
use kdp_engine::telemetry::{SchemaBuilder, Telemetry};
use serde::Serialize;

/// Bound on every socket wait: a broken server fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize)]
struct Health {
    healthy: bool,
    sessions_up: u32,
    last_frame_age_ms: u64,
}

impl HealthReport for Health {
    fn healthy(&self) -> bool {
        self.healthy
    }
}

fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    (status, head.to_owned(), body.to_owned())
}

#[test]
fn metrics_health_and_unknown_paths() {
    let mut schema = SchemaBuilder::new();
    let frames = schema.counter("kdp_frames_total", "Frames received.", &[]);
    let mut t = Telemetry::new(schema.build());
    let mut r = t.recorder("0", 0);
    r.add(frames, 41);
    r.incr(frames);
    r.publish(0);

    let healthy = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&healthy);
    let server = HttpServer::start(
        "127.0.0.1:0",
        t.exporter(),
        move || Health {
            healthy: flag.load(Ordering::SeqCst),
            sessions_up: 3,
            last_frame_age_ms: 12,
        },
        None,
    )
    .expect("server starts");
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    let (status, head, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert_eq!(
        body,
        "# HELP kdp_frames_total Frames received.\n# TYPE kdp_frames_total counter\nkdp_frames_total 42\n"
    );

    let (status, head, body) = get(addr, "GET", "/health");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    assert_eq!(body, r#"{"healthy":true,"sessions_up":3,"last_frame_age_ms":12}"#);

    healthy.store(false, Ordering::SeqCst);
    let (status, _, body) = get(addr, "GET", "/health");
    assert_eq!(status, 503);
    assert_eq!(body, r#"{"healthy":false,"sessions_up":3,"last_frame_age_ms":12}"#);

    assert_eq!(get(addr, "GET", "/nope").0, 404);
    assert_eq!(get(addr, "GET", "/").0, 404);
    assert_eq!(get(addr, "POST", "/metrics").0, 405);
    server.shutdown();
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let t = Telemetry::new(SchemaBuilder::new().build());
    let err = HttpServer::start(
        &addr,
        t.exporter(),
        || Health { healthy: true, sessions_up: 0, last_frame_age_ms: 0 },
        None,
    )
    .expect_err("address in use");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("telemetry HTTP server cannot listen on {addr}: ")), "{msg}");
    assert!(msg.ends_with("; choose a free address"), "{msg}");
}
