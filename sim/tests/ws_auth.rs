//! Handshake authentication against the simulator's own verifier, driven by kdp's `Signer`
//! over real TLS WebSocket: RSA-PSS and Ed25519 keys are accepted; a wrong key, an unknown key
//! id, a stale timestamp, a garbled signature and missing headers are refused with 401 and a
//! JSON body naming the reason, before any frame. Also: wrong path (404), connection limit
//! (429), plain `ws`.

#![allow(clippy::unwrap_used)]

mod ws_support;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command as Process;
use std::sync::Arc;

use kdp_ingest::auth::Signer;
use kdp_sim::transport::auth::{AUTH_CLOCK_SKEW_MS_MAX, generate_demo_key};
use ws_support::{Handshake, Headers, KEY_ID, connect_ws, connect_wss, now_ms, start};

fn refused(h: Handshake) -> (u16, serde_json::Value) {
    match h {
        Handshake::Connected(_) => panic!("handshake accepted; expected a refusal"),
        Handshake::Refused(status, body) => {
            let json = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("refusal body is not JSON ({e}): {body}"));
            (status, json)
        }
    }
}

fn connected(h: Handshake) -> ws_support::Client {
    match h {
        Handshake::Connected(c) => c,
        Handshake::Refused(status, body) => panic!("refused: {status} {body}"),
    }
}

fn openssl(args: &[&str]) {
    let out = Process::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn rsa_and_ed25519_keys_from_openssl_are_accepted() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = keys.path().join("rsa.pem");
    let rsa_pub = keys.path().join("rsa.pub.pem");
    let ed = keys.path().join("ed.pem");
    let ed_pub = keys.path().join("ed.pub.pem");
    openssl(&["genrsa", "-out", rsa.to_str().unwrap(), "2048"]);
    openssl(&["rsa", "-in", rsa.to_str().unwrap(), "-pubout", "-out", rsa_pub.to_str().unwrap()]);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", ed.to_str().unwrap()]);
    openssl(&["pkey", "-in", ed.to_str().unwrap(), "-pubout", "-out", ed_pub.to_str().unwrap()]);
    for p in [&rsa, &ed] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let rsa_pem = std::fs::read_to_string(&rsa_pub).unwrap();
    let ed_pem = std::fs::read_to_string(&ed_pub).unwrap();
    let sim = start(1, |cfg| {
        cfg.keys.insert_pem("rsa-key", &rsa_pem).unwrap();
        cfg.keys.insert_pem("ed-key", &ed_pem).unwrap();
    })
    .await;
    let rsa_signer = Arc::new(Signer::from_pem_file("rsa-key", &rsa).unwrap());
    let ed_signer = Arc::new(Signer::from_pem_file("ed-key", &ed).unwrap());
    for signer in [rsa_signer, ed_signer] {
        let mut c = connected(connect_wss(&sim.handle, Headers::Signed(signer.clone())).await);
        assert!(c.barrier().await.is_empty(), "no frame before the first command");
    }
    // Plain ws with the generated demo key.
    let mut c = connected(connect_ws(&sim.handle, Headers::Signed(sim.signer.clone())).await);
    assert!(c.barrier().await.is_empty());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_are_refused_with_401_and_a_reason() {
    let sim = start(2, |_| {}).await;
    let other = generate_demo_key().unwrap();
    // Same key id, different private key: the signature does not verify.
    let wrong = Arc::new(Signer::from_pem(KEY_ID, &other.private_pkcs8_pem).unwrap());
    let (status, body) = refused(connect_wss(&sim.handle, Headers::Signed(wrong)).await);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_signature")));

    let unknown = Arc::new(Signer::from_pem("no-such-key", &other.private_pkcs8_pem).unwrap());
    let (status, body) = refused(connect_wss(&sim.handle, Headers::Signed(unknown)).await);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unknown_api_key")));

    let stale = now_ms() - AUTH_CLOCK_SKEW_MS_MAX - 60_000;
    let (status, body) =
        refused(connect_wss(&sim.handle, Headers::SignedAt(sim.signer.clone(), stale)).await);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("stale_timestamp")));

    // A valid signature of a different timestamp than the one sent.
    let ts = now_ms();
    let h = sim.signer.headers("GET", ws_support::PATH, ts - 1).unwrap();
    let raw = Headers::Raw(KEY_ID.into(), ts.to_string(), h.signature_b64.clone());
    let (status, body) = refused(connect_wss(&sim.handle, raw).await);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_signature")));

    let garbled = Headers::Raw(KEY_ID.into(), ts.to_string(), "not*base64".into());
    let (status, body) = refused(connect_wss(&sim.handle, garbled).await);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("bad_signature_encoding")));

    let (status, body) = refused(connect_wss(&sim.handle, Headers::None).await);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("missing_auth_header")));

    // After all that, a good handshake still works.
    connected(connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn connection_limit_and_wrong_path_are_http_errors() {
    let sim = start(3, |cfg| cfg.connections_max = 2).await;
    let mut a = connected(connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await);
    let _b = connected(connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await);
    let (status, body) =
        refused(connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await);
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_connections")));
    // Closing one frees its slot once the server has seen the close.
    a.send_close().await;
    let admitted = ws_support::within("a freed slot", async {
        loop {
            if let Handshake::Connected(c) =
                connect_wss(&sim.handle, Headers::Signed(sim.signer.clone())).await
            {
                return c;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(admitted);

    let wrong_path = ws_support::connect_wss_at(
        &sim.handle,
        "/trade-api/ws/v1",
        Headers::Signed(sim.signer.clone()),
    )
    .await;
    let (status, body) = refused(wrong_path);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    sim.handle.shutdown().await;
}
