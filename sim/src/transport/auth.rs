//! The simulator's own check of Kalshi's signed-request headers, written directly on the `rsa`
//! and `ed25519-dalek` crates (never on kdp-ingest's signer, so a misreading of the scheme shared
//! by both sides cannot hide behind green tests).
//!
//! Scheme: `KALSHI-ACCESS-KEY` names a configured public key, `KALSHI-ACCESS-TIMESTAMP` is Unix
//! milliseconds (within [`AUTH_CLOCK_SKEW_MS_MAX`] of the simulator's clock), and
//! `KALSHI-ACCESS-SIGNATURE` is standard base64 of a signature over
//! `timestamp + "GET" + path` (path without its query): RSA-PSS with SHA-256, MGF1-SHA-256 and a
//! 32-byte salt, or plain Ed25519.
//!
//! Where it sits: the WebSocket handshake (and the REST server, for signed requests) calls
//! [`KeyStore::verify`]; a failure becomes an HTTP 401 whose JSON body ([`AuthReject::body`])
//! says why, before any WebSocket frame. [`generate_demo_key`] makes an Ed25519 key pair for
//! `kdp sim --gen-key`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::pkcs8::LineEnding;
use rsa::signature::Verifier as _;
use sha2::Sha256;
use tokio_tungstenite::tungstenite::http::HeaderMap;

/// Header naming the API key id.
pub const HEADER_KEY: &str = "KALSHI-ACCESS-KEY";
/// Header carrying the request time in Unix milliseconds.
pub const HEADER_TIMESTAMP: &str = "KALSHI-ACCESS-TIMESTAMP";
/// Header carrying the base64 signature.
pub const HEADER_SIGNATURE: &str = "KALSHI-ACCESS-SIGNATURE";

/// Largest accepted distance between the request timestamp and the simulator's clock, either
/// way. Kalshi does not publish its window; 30 s covers real clock drift between hosts on one
/// machine or network, while a replayed or cached header from a previous run (minutes old) is
/// refused.
pub const AUTH_CLOCK_SKEW_MS_MAX: u64 = 30_000;

/// RSA-PSS salt length Kalshi requires: the SHA-256 digest length.
pub const RSA_PSS_SALT_BYTES: usize = 32;

/// Longest header value looked at. Key ids are UUIDs, timestamps 13 digits, a 4096-bit RSA
/// signature is 684 base64 characters; anything longer is refused unread.
const HEADER_BYTES_MAX: usize = 1024;

/// A configured public key.
#[derive(Clone)]
pub enum PublicKey {
    /// RSA: verified with RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt).
    Rsa(Box<rsa::RsaPublicKey>),
    /// Ed25519: verified strictly.
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PublicKey::Rsa(_) => "PublicKey::Rsa",
            PublicKey::Ed25519(_) => "PublicKey::Ed25519",
        })
    }
}

/// Why a public key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("public key PEM is neither an SPKI Ed25519/RSA key nor a PKCS#1 RSA key ({detail})")]
pub struct KeyError {
    detail: String,
}

impl PublicKey {
    /// Reads `BEGIN PUBLIC KEY` (SPKI, Ed25519 or RSA) or `BEGIN RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::Ed25519(Box::new(key)));
        }
        match rsa::RsaPublicKey::from_public_key_pem(pem) {
            Ok(key) => Ok(PublicKey::Rsa(Box::new(key))),
            Err(spki) => rsa::RsaPublicKey::from_pkcs1_pem(pem)
                .map(|key| PublicKey::Rsa(Box::new(key)))
                .map_err(|pkcs1| KeyError { detail: format!("SPKI: {spki}; PKCS#1: {pkcs1}") }),
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), AuthReject> {
        match self {
            PublicKey::Rsa(key) => {
                let verifier = rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(
                    key.as_ref().clone(),
                    RSA_PSS_SALT_BYTES,
                );
                let signature = rsa::pss::Signature::try_from(signature)
                    .map_err(|_| AuthReject::BadSignature)?;
                verifier.verify(message, &signature).map_err(|_| AuthReject::BadSignature)
            }
            PublicKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| AuthReject::BadSignature)?;
                key.verify_strict(message, &signature).map_err(|_| AuthReject::BadSignature)
            }
        }
    }
}

/// Why a request was refused with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthReject {
    /// A `KALSHI-ACCESS-*` header is absent, not text, or too long.
    #[error("header {0} is missing or malformed")]
    MissingHeader(&'static str),
    /// The key id is not configured.
    #[error("unknown API key id")]
    UnknownKey,
    /// The timestamp is not decimal milliseconds.
    #[error("KALSHI-ACCESS-TIMESTAMP is not Unix milliseconds")]
    BadTimestamp,
    /// The timestamp is too far from the simulator's clock.
    #[error(
        "KALSHI-ACCESS-TIMESTAMP is {skew_ms} ms away from the server clock (at most {AUTH_CLOCK_SKEW_MS_MAX} ms accepted)"
    )]
    StaleTimestamp {
        /// Distance from the server clock.
        skew_ms: u64,
    },
    /// The signature is not standard base64.
    #[error("KALSHI-ACCESS-SIGNATURE is not standard base64")]
    SignatureEncoding,
    /// The signature does not verify.
    #[error("signature does not match timestamp + method + path for this key")]
    BadSignature,
    /// Injected fault: refused as if the signature were bad.
    #[error("signature does not match timestamp + method + path for this key (injected fault)")]
    InjectedFault,
}

impl AuthReject {
    /// Stable machine-readable code for the body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthReject::MissingHeader(_) => "missing_auth_header",
            AuthReject::UnknownKey => "unknown_api_key",
            AuthReject::BadTimestamp => "bad_timestamp",
            AuthReject::StaleTimestamp { .. } => "stale_timestamp",
            AuthReject::SignatureEncoding => "bad_signature_encoding",
            AuthReject::BadSignature | AuthReject::InjectedFault => "invalid_signature",
        }
    }

    /// The 401 body: `{"error":{"code":..,"message":..}}`, the nested shape live Kalshi sends.
    pub fn body(&self) -> String {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}}).to_string()
    }
}

/// The configured keys: API key id → public key.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    keys: HashMap<String, PublicKey>,
}

impl KeyStore {
    /// An empty store (every signed request is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a key.
    pub fn insert(&mut self, key_id: impl Into<String>, key: PublicKey) {
        self.keys.insert(key_id.into(), key);
    }

    /// Adds a key from PEM text.
    pub fn insert_pem(&mut self, key_id: impl Into<String>, pem: &str) -> Result<(), KeyError> {
        self.insert(key_id, PublicKey::from_pem(pem)?);
        Ok(())
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the three headers of a `method` request to `path` (a query string is ignored)
    /// received at `now_ms`. Returns the key id on success.
    pub fn verify<'h>(
        &self,
        headers: &'h HeaderMap,
        method: &str,
        path: &str,
        now_ms: u64,
    ) -> Result<&'h str, AuthReject> {
        let key_id = header(headers, HEADER_KEY)?;
        let timestamp = header(headers, HEADER_TIMESTAMP)?;
        let signature_b64 = header(headers, HEADER_SIGNATURE)?;
        let key = self.keys.get(key_id).ok_or(AuthReject::UnknownKey)?;
        if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthReject::BadTimestamp);
        }
        let timestamp_ms: u64 = timestamp.parse().map_err(|_| AuthReject::BadTimestamp)?;
        let skew_ms = timestamp_ms.abs_diff(now_ms);
        if skew_ms > AUTH_CLOCK_SKEW_MS_MAX {
            return Err(AuthReject::StaleTimestamp { skew_ms });
        }
        let signature = BASE64.decode(signature_b64).map_err(|_| AuthReject::SignatureEncoding)?;
        let path = path.split_once('?').map_or(path, |(path, _query)| path);
        let mut message = String::with_capacity(timestamp.len() + method.len() + path.len());
        message.push_str(timestamp);
        message.push_str(method);
        message.push_str(path);
        key.verify(message.as_bytes(), &signature)?;
        Ok(key_id)
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, AuthReject> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= HEADER_BYTES_MAX)
        .ok_or(AuthReject::MissingHeader(name))
}

/// An Ed25519 key pair in PEM: what `kdp sim --gen-key` writes.
pub struct DemoKey {
    /// PKCS#8 (`BEGIN PRIVATE KEY`): give to the client (file mode 600).
    pub private_pkcs8_pem: String,
    /// SPKI (`BEGIN PUBLIC KEY`): give to the simulator.
    pub public_spki_pem: String,
}

impl std::fmt::Debug for DemoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoKey")
            .field("public_spki_pem", &self.public_spki_pem)
            .field("private_pkcs8_pem", &"<redacted>")
            .finish()
    }
}

/// Why a demo key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("could not generate an Ed25519 demo key: {0}")]
pub struct GenKeyError(String);

/// A fresh Ed25519 key pair from the operating system's generator (through ring, via rcgen),
/// re-encoded as a plain PKCS#8 v1 private key and an SPKI public key.
pub fn generate_demo_key() -> Result<DemoKey, GenKeyError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| GenKeyError(e.to_string()))?;
    let signing = ed25519_dalek::SigningKey::from_pkcs8_der(pair.serialized_der())
        .map_err(|e| GenKeyError(e.to_string()))?;
    let private_pkcs8_pem =
        signing.to_pkcs8_pem(LineEnding::LF).map_err(|e| GenKeyError(e.to_string()))?.to_string();
    let public_spki_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| GenKeyError(e.to_string()))?;
    Ok(DemoKey { private_pkcs8_pem, public_spki_pem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    const NOW_MS: u64 = 1_790_000_000_000;
    const PATH: &str = "/trade-api/ws/v2";

    fn signed(signing: &ed25519_dalek::SigningKey, ts_ms: u64, path: &str) -> HeaderMap {
        let message = format!("{ts_ms}GET{path}");
        let sig = BASE64.encode(signing.sign(message.as_bytes()).to_bytes());
        let mut h = HeaderMap::new();
        h.insert(HEADER_KEY, HeaderValue::from_static("key-1"));
        h.insert(HEADER_TIMESTAMP, HeaderValue::from_str(&ts_ms.to_string()).expect("ts"));
        h.insert(HEADER_SIGNATURE, HeaderValue::from_str(&sig).expect("sig"));
        h
    }

    fn store_and_key() -> (KeyStore, ed25519_dalek::SigningKey) {
        let demo = generate_demo_key().expect("gen");
        let signing =
            ed25519_dalek::SigningKey::from_pkcs8_pem(&demo.private_pkcs8_pem).expect("private");
        let mut store = KeyStore::new();
        store.insert_pem("key-1", &demo.public_spki_pem).expect("public");
        (store, signing)
    }

    #[test]
    fn demo_key_signs_and_verifies_with_query_ignored() {
        let (store, signing) = store_and_key();
        let h = signed(&signing, NOW_MS, PATH);
        assert_eq!(store.verify(&h, "GET", "/trade-api/ws/v2?x=1", NOW_MS + 5), Ok("key-1"));
    }

    #[test]
    fn each_failure_is_named() {
        let (store, signing) = store_and_key();
        let h = signed(&signing, NOW_MS, PATH);
        assert_eq!(store.verify(&h, "GET", "/other", NOW_MS), Err(AuthReject::BadSignature));
        assert_eq!(
            store.verify(&h, "GET", PATH, NOW_MS + AUTH_CLOCK_SKEW_MS_MAX + 1),
            Err(AuthReject::StaleTimestamp { skew_ms: AUTH_CLOCK_SKEW_MS_MAX + 1 })
        );
        let mut missing = h.clone();
        missing.remove(HEADER_SIGNATURE);
        assert_eq!(
            store.verify(&missing, "GET", PATH, NOW_MS),
            Err(AuthReject::MissingHeader(HEADER_SIGNATURE))
        );
        let mut unknown = h.clone();
        unknown.insert(HEADER_KEY, HeaderValue::from_static("key-2"));
        assert_eq!(store.verify(&unknown, "GET", PATH, NOW_MS), Err(AuthReject::UnknownKey));
        let mut garbled = h;
        garbled.insert(HEADER_SIGNATURE, HeaderValue::from_static("%%%"));
        assert_eq!(store.verify(&garbled, "GET", PATH, NOW_MS), Err(AuthReject::SignatureEncoding));
        let body: serde_json::Value =
            serde_json::from_str(&AuthReject::BadSignature.body()).expect("json");
        assert_eq!(body["error"]["code"], "invalid_signature");
    }
}
