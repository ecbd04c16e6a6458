//! Request signing checked against a second implementation: the `openssl` command line makes the
//! keys, verifies our signatures and signs messages for our verifier. Also the key-loading
//! errors (file mode, missing file, bad PEM, encrypted and unsupported keys) and `Debug`
//! redaction. These tests never skip: without `openssl` on PATH they fail and say so.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kdp_ingest::auth::{
    AuthError, HEADER_ACCESS_KEY, HEADER_ACCESS_SIGNATURE, HEADER_ACCESS_TIMESTAMP, KeyKind,
    Signer, Verifier, signing_message,
};

const KEY_ID: &str = "a952bcbe-ec3b-4b5b-b8f9-11dae589608c";
const TS_MS: u64 = 1_703_123_456_789;
const WS_PATH: &str = "/trade-api/ws/v2";
const WS_MESSAGE: &str = "1703123456789GET/trade-api/ws/v2";

/// A scratch directory where openssl runs.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create a temporary directory") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_openssl(&self, args: &[&str]) -> Output {
        Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap_or_else(
            |e| {
                panic!(
                    "cannot run `openssl` ({e}); the auth interop tests need the openssl command \
                     line on PATH (apt-get install openssl) and do not skip without it"
                )
            },
        )
    }

    /// Runs openssl and requires success.
    fn openssl(&self, args: &[&str]) {
        let out = self.run_openssl(args);
        assert!(
            out.status.success(),
            "openssl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs openssl and reports whether it succeeded (for verifications expected to fail).
    fn openssl_succeeds(&self, args: &[&str]) -> bool {
        self.run_openssl(args).status.success()
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).expect("write test file");
        chmod(&path, mode);
        path
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).expect("read file written by openssl")
    }

    fn read_string(&self, name: &str) -> String {
        String::from_utf8(self.read(name)).expect("openssl wrote PEM text")
    }

    /// Writes `{name}.pub` (SPKI) next to the private key `name`.
    fn public_key(&self, name: &str) -> String {
        let public = format!("{name}.pub");
        self.openssl(&["pkey", "-in", name, "-pubout", "-out", &public]);
        public
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod test file");
}

/// Keys made once per test binary: RSA-2048 as PKCS#1 and PKCS#8, Ed25519 as PKCS#8, each with
/// its SPKI public key, all mode 0600.
struct Keys {
    lab: Lab,
}

const RSA_PKCS1: &str = "rsa_pkcs1.pem";
const RSA_PKCS8: &str = "rsa_pkcs8.pem";
const ED25519: &str = "ed25519.pem";

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let lab = Lab::new();
        lab.openssl(&["genrsa", "-traditional", "-out", RSA_PKCS1, "2048"]);
        lab.openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", RSA_PKCS1, "-out", RSA_PKCS8]);
        lab.openssl(&["genpkey", "-algorithm", "ed25519", "-out", ED25519]);
        for (name, label) in [
            (RSA_PKCS1, "-----BEGIN RSA PRIVATE KEY-----"),
            (RSA_PKCS8, "-----BEGIN PRIVATE KEY-----"),
            (ED25519, "-----BEGIN PRIVATE KEY-----"),
        ] {
            assert!(lab.read_string(name).starts_with(label), "{name} is not in {label} form");
            chmod(&lab.path(name), 0o600);
            lab.public_key(name);
        }
        Keys { lab }
    })
}

fn signer(name: &str) -> Signer {
    Signer::from_pem_file(KEY_ID, &keys().lab.path(name)).expect("load key made by openssl")
}

fn verifier(public_name: &str) -> Verifier {
    Verifier::from_public_pem_file(&keys().lab.path(public_name))
        .expect("load public key made by openssl")
}

// ---- the signed message -------------------------------------------------------------------

#[test]
fn message_is_timestamp_method_path_without_query() {
    assert_eq!(signing_message(TS_MS, "GET", WS_PATH).expect("valid"), WS_MESSAGE);
    assert_eq!(
        signing_message(TS_MS, "get", "/trade-api/v2/portfolio/balance?limit=5&cursor=a?b")
            .expect("valid"),
        "1703123456789GET/trade-api/v2/portfolio/balance"
    );
    assert_eq!(signing_message(0, "Post", "/x?").expect("valid"), "0POST/x");
    assert_eq!(
        signing_message(u64::MAX, "delete", "/").expect("valid"),
        "18446744073709551615DELETE/"
    );
}

#[test]
fn message_refuses_bad_method_and_path() {
    for method in ["", "G ET", "GET\r\n", "GÉT", "AVERYLONGMETHODNAME"] {
        assert!(
            matches!(signing_message(TS_MS, method, WS_PATH), Err(AuthError::InvalidMethod { .. })),
            "method {method:?} accepted"
        );
    }
    for path in ["", "trade-api/ws/v2", "wss://api.elections.kalshi.com/trade-api/ws/v2"] {
        assert!(
            matches!(signing_message(TS_MS, "GET", path), Err(AuthError::InvalidPath { .. })),
            "path {path:?} accepted"
        );
    }
}

#[test]
fn headers_carry_key_id_timestamp_and_signature() {
    for (name, kind, signature_bytes) in [
        (RSA_PKCS1, KeyKind::Rsa, 256),
        (RSA_PKCS8, KeyKind::Rsa, 256),
        (ED25519, KeyKind::Ed25519, 64),
    ] {
        let signer = signer(name);
        assert_eq!(signer.kind(), kind);
        assert_eq!(signer.key_id(), KEY_ID);
        let headers = signer.headers("get", "/trade-api/ws/v2?x=1", TS_MS).expect("sign");
        let pairs = headers.pairs();
        assert_eq!(pairs[0], (HEADER_ACCESS_KEY, KEY_ID));
        assert_eq!(pairs[1], (HEADER_ACCESS_TIMESTAMP, "1703123456789"));
        assert_eq!(pairs[2].0, HEADER_ACCESS_SIGNATURE);
        assert_eq!(
            [pairs[0].0, pairs[1].0, pairs[2].0],
            ["KALSHI-ACCESS-KEY", "KALSHI-ACCESS-TIMESTAMP", "KALSHI-ACCESS-SIGNATURE"]
        );
        let signature = BASE64.decode(&headers.signature_b64).expect("standard padded base64");
        assert_eq!(signature.len(), signature_bytes, "{name}");
        signer
            .verifier()
            .verify(WS_MESSAGE.as_bytes(), &headers.signature_b64)
            .expect("own signature over the query-less message verifies");
    }
}

// ---- our signatures, openssl verifies -----------------------------------------------------

/// Signs the WS handshake message with our code and leaves `msg.txt` and `sig.bin` in a lab.
fn sign_ws_handshake(name: &str) -> Lab {
    let headers = signer(name).headers("GET", "/trade-api/ws/v2?ignored=1", TS_MS).expect("sign");
    let lab = Lab::new();
    lab.write("msg.txt", WS_MESSAGE.as_bytes(), 0o644);
    lab.write("sig.bin", &BASE64.decode(headers.signature_b64).expect("base64"), 0o644);
    let public = fs::read(keys().lab.path(&format!("{name}.pub"))).expect("public key");
    lab.write("pub.pem", &public, 0o644);
    lab
}

fn openssl_verifies_rsa_pss(lab: &Lab, salt_len: &str, mgf1_md: &str) -> bool {
    lab.openssl_succeeds(&[
        "dgst",
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        &format!("rsa_pss_saltlen:{salt_len}"),
        "-sigopt",
        &format!("rsa_mgf1_md:{mgf1_md}"),
        "-verify",
        "pub.pem",
        "-signature",
        "sig.bin",
        "msg.txt",
    ])
}

#[test]
fn rsa_signatures_verify_with_openssl_pss_sha256_mgf1_sha256_salt_32() {
    for name in [RSA_PKCS1, RSA_PKCS8] {
        let lab = sign_ws_handshake(name);
        assert!(openssl_verifies_rsa_pss(&lab, "32", "sha256"), "{name}: openssl rejects ours");
        // openssl checks an explicit salt length exactly: ours is 32, not 20 nor 64.
        assert!(!openssl_verifies_rsa_pss(&lab, "20", "sha256"), "{name}: salt is not 32");
        assert!(!openssl_verifies_rsa_pss(&lab, "64", "sha256"), "{name}: salt is not 32");
        // MGF1 uses SHA-256, not SHA-1.
        assert!(!openssl_verifies_rsa_pss(&lab, "32", "sha1"), "{name}: MGF1 is not SHA-256");
        // A different message does not verify: openssl really checks this message.
        lab.write("msg.txt", b"1703123456790GET/trade-api/ws/v2", 0o644);
        assert!(!openssl_verifies_rsa_pss(&lab, "32", "sha256"), "{name}: wrong message passes");
    }
}

#[test]
fn ed25519_signatures_verify_with_openssl() {
    let lab = sign_ws_handshake(ED25519);
    let verify = [
        "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg.txt",
        "-sigfile", "sig.bin",
    ];
    assert!(lab.openssl_succeeds(&verify), "openssl rejects our Ed25519 signature");
    lab.write("msg.txt", b"1703123456789GET/trade-api/ws/v3", 0o644);
    assert!(!lab.openssl_succeeds(&verify), "openssl accepts a signature of another message");
}

#[test]
fn ed25519_signature_is_byte_identical_to_openssl() {
    let ours = signer(ED25519).sign(WS_MESSAGE.as_bytes()).expect("sign");
    let lab = Lab::new();
    lab.write("msg.txt", WS_MESSAGE.as_bytes(), 0o644);
    let key = keys().lab.path(ED25519);
    let key = key.to_str().expect("utf-8 temp path");
    lab.openssl(&[
        "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", "msg.txt", "-out", "sig.bin",
    ]);
    assert_eq!(BASE64.decode(ours).expect("base64"), lab.read("sig.bin"));
}

#[test]
fn rsa_signatures_use_a_fresh_salt_each_time() {
    let signer = signer(RSA_PKCS8);
    let first = signer.sign(WS_MESSAGE.as_bytes()).expect("sign");
    let second = signer.sign(WS_MESSAGE.as_bytes()).expect("sign");
    assert_ne!(first, second);
    let verifier = signer.verifier();
    verifier.verify(WS_MESSAGE.as_bytes(), &first).expect("first verifies");
    verifier.verify(WS_MESSAGE.as_bytes(), &second).expect("second verifies");
}

// ---- openssl signatures, we verify --------------------------------------------------------

/// openssl signs `WS_MESSAGE` with the RSA key `name` and the given PSS options.
fn openssl_rsa_pss_signature(name: &str, salt_len: &str, mgf1_md: &str) -> String {
    let lab = Lab::new();
    lab.write("msg.txt", WS_MESSAGE.as_bytes(), 0o644);
    let key = keys().lab.path(name);
    lab.openssl(&[
        "dgst",
        "-sha256",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        &format!("rsa_pss_saltlen:{salt_len}"),
        "-sigopt",
        &format!("rsa_mgf1_md:{mgf1_md}"),
        "-sign",
        key.to_str().expect("utf-8 temp path"),
        "-out",
        "sig.bin",
        "msg.txt",
    ]);
    BASE64.encode(lab.read("sig.bin"))
}

#[test]
fn openssl_rsa_signatures_verify_with_ours_only_with_salt_32_and_mgf1_sha256() {
    for name in [RSA_PKCS1, RSA_PKCS8] {
        // Public key both as SPKI and as PKCS#1 `RSA PUBLIC KEY`.
        let rsa_public = format!("{name}.rsapub");
        let lab = &keys().lab;
        lab.openssl(&["rsa", "-in", name, "-RSAPublicKey_out", "-out", &rsa_public]);
        assert!(lab.read_string(&rsa_public).starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        for verifier in [verifier(&format!("{name}.pub")), verifier(&rsa_public)] {
            assert_eq!(verifier.kind(), KeyKind::Rsa);
            let good = openssl_rsa_pss_signature(name, "32", "sha256");
            verifier.verify_request(TS_MS, "get", "/trade-api/ws/v2?a=b", &good).expect("verifies");
            assert!(matches!(
                verifier.verify_request(TS_MS + 1, "GET", WS_PATH, &good),
                Err(AuthError::SignatureMismatch { kind: KeyKind::Rsa })
            ));
            for (salt_len, mgf1_md) in [("20", "sha256"), ("64", "sha256"), ("32", "sha1")] {
                let other = openssl_rsa_pss_signature(name, salt_len, mgf1_md);
                assert!(
                    matches!(
                        verifier.verify(WS_MESSAGE.as_bytes(), &other),
                        Err(AuthError::SignatureMismatch { kind: KeyKind::Rsa })
                    ),
                    "{name}: salt {salt_len} / MGF1-{mgf1_md} accepted"
                );
            }
        }
    }
}

#[test]
fn openssl_ed25519_signature_verifies_with_ours() {
    let lab = Lab::new();
    lab.write("msg.txt", WS_MESSAGE.as_bytes(), 0o644);
    let key = keys().lab.path(ED25519);
    let key = key.to_str().expect("utf-8 temp path");
    lab.openssl(&[
        "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", "msg.txt", "-out", "sig.bin",
    ]);
    let signature = BASE64.encode(lab.read("sig.bin"));
    let verifier = verifier(&format!("{ED25519}.pub"));
    assert_eq!(verifier.kind(), KeyKind::Ed25519);
    verifier.verify_request(TS_MS, "GET", WS_PATH, &signature).expect("verifies");
    assert!(matches!(
        verifier.verify_request(TS_MS, "POST", WS_PATH, &signature),
        Err(AuthError::SignatureMismatch { kind: KeyKind::Ed25519 })
    ));
}

#[test]
fn verifier_refuses_malformed_signatures() {
    let rsa = verifier(&format!("{RSA_PKCS8}.pub"));
    let ed = verifier(&format!("{ED25519}.pub"));
    for verifier in [&rsa, &ed] {
        assert!(matches!(
            verifier.verify(b"m", "not base64!"),
            Err(AuthError::SignatureEncoding { .. })
        ));
        // Unpadded base64 is not the standard encoding.
        assert!(matches!(verifier.verify(b"m", "AAA"), Err(AuthError::SignatureEncoding { .. })));
    }
    let short = BASE64.encode([0u8; 255]);
    assert!(matches!(
        rsa.verify(b"m", &short),
        Err(AuthError::SignatureLength { kind: KeyKind::Rsa, bytes: 255, expected_bytes: 256 })
    ));
    assert!(matches!(
        ed.verify(b"m", &BASE64.encode([0u8; 63])),
        Err(AuthError::SignatureLength { kind: KeyKind::Ed25519, bytes: 63, expected_bytes: 64 })
    ));
}

// ---- key files ----------------------------------------------------------------------------

/// A copy of key `name` in a fresh lab with the given mode.
fn key_copy(name: &str, mode: u32) -> (Lab, PathBuf) {
    let lab = Lab::new();
    let path = lab.write("key.pem", &keys().lab.read(name), mode);
    (lab, path)
}

#[test]
fn key_file_readable_by_others_is_refused_with_the_fix() {
    for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610] {
        let (_lab, path) = key_copy(RSA_PKCS1, mode);
        let err = Signer::from_pem_file(KEY_ID, &path).expect_err("group/other access refused");
        let p = path.display();
        assert_eq!(
            err.to_string(),
            format!(
                "key file {p} has mode {mode:04o}, so group or others can read or write it; \
                 restrict it with `chmod 600 {p}`"
            )
        );
        assert!(matches!(err, AuthError::KeyFilePermissions { mode: m, .. } if m == mode));
    }
}

#[test]
fn key_file_private_to_owner_is_accepted() {
    for mode in [0o600, 0o400] {
        let (_lab, path) = key_copy(ED25519, mode);
        let signer = Signer::from_pem_file(KEY_ID, &path).expect("owner-only key file loads");
        assert_eq!(signer.kind(), KeyKind::Ed25519);
    }
}

#[test]
fn missing_key_file_names_the_path() {
    let lab = Lab::new();
    let path = lab.path("nope.pem");
    let err = Signer::from_pem_file(KEY_ID, &path).expect_err("missing");
    assert!(matches!(err, AuthError::KeyFileMissing { .. }));
    assert_eq!(
        err.to_string(),
        format!("key file {} does not exist; check the configured key path", path.display())
    );
    let err = Verifier::from_public_pem_file(&path).expect_err("missing");
    assert!(matches!(err, AuthError::KeyFileMissing { .. }));
}

#[test]
fn directory_or_oversized_or_binary_key_file_is_refused() {
    let lab = Lab::new();
    chmod(lab.dir.path(), 0o700);
    assert!(matches!(
        Signer::from_pem_file(KEY_ID, lab.dir.path()),
        Err(AuthError::KeyFileRead { .. })
    ));
    let big = lab.write("big.pem", &vec![b'A'; 64 * 1024 + 1], 0o600);
    assert!(matches!(
        Signer::from_pem_file(KEY_ID, &big),
        Err(AuthError::KeyFileTooLarge { bytes_max: 65536, .. })
    ));
    let key = keys().lab.path(RSA_PKCS8);
    let der = lab.path("key.der");
    lab.openssl(&[
        "pkey",
        "-in",
        key.to_str().expect("utf-8 temp path"),
        "-outform",
        "DER",
        "-out",
        der.to_str().expect("utf-8 temp path"),
    ]);
    chmod(&der, 0o600);
    let err = Signer::from_pem_file(KEY_ID, &der).expect_err("DER refused");
    assert!(matches!(err, AuthError::KeyFileNotUtf8 { .. }), "{err}");
    assert!(err.to_string().contains("openssl pkey -in KEY -inform DER"), "{err}");
}

#[test]
fn garbage_pem_is_refused_with_what_was_expected() {
    let lab = Lab::new();
    let path = lab.write("key.pem", b"this is not a key\n", 0o600);
    let err = Signer::from_pem_file(KEY_ID, &path).expect_err("garbage");
    assert!(matches!(err, AuthError::MalformedPem { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "key file {}: no valid PEM block (no `-----BEGIN` line); expected \
             `-----BEGIN PRIVATE KEY-----` (PKCS#8) or `-----BEGIN RSA PRIVATE KEY-----` \
             (PKCS#1), as written by Kalshi or openssl",
            path.display()
        )
    );
    let bad_base64 = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
    assert!(matches!(Signer::from_pem(KEY_ID, bad_base64), Err(AuthError::MalformedPem { .. })));
    let unterminated = "-----BEGIN PRIVATE KEY-----\nAAAA\n";
    assert!(matches!(Signer::from_pem(KEY_ID, unterminated), Err(AuthError::MalformedPem { .. })));
    let not_der = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        BASE64.encode(b"definitely not DER")
    );
    let err = Signer::from_pem(KEY_ID, &not_der).expect_err("not DER");
    assert!(matches!(err, AuthError::MalformedKey { what: "PKCS#8 private key", .. }), "{err}");
    assert!(err.to_string().starts_with("private key PEM: the PKCS#8 private key could not"));
    let not_pkcs1 = not_der.replace("PRIVATE KEY", "RSA PRIVATE KEY");
    assert!(matches!(
        Signer::from_pem(KEY_ID, &not_pkcs1),
        Err(AuthError::MalformedKey { what: "PKCS#1 RSA private key", .. })
    ));
    assert!(matches!(Verifier::from_public_pem("garbage"), Err(AuthError::MalformedPem { .. })));
}

#[test]
fn text_around_the_pem_block_is_ignored() {
    let pem = keys().lab.read_string(RSA_PKCS1);
    let wrapped = format!("Bag Attributes\n    friendlyName: kalshi\n{pem}trailing words\n");
    let signer = Signer::from_pem(KEY_ID, &wrapped).expect("comment lines around PEM are fine");
    assert_eq!(signer.kind(), KeyKind::Rsa);
}

#[test]
fn encrypted_keys_are_refused_with_how_to_decrypt() {
    let lab = Lab::new();
    let rsa = keys().lab.path(RSA_PKCS1);
    let rsa = rsa.to_str().expect("utf-8 temp path");
    let ed = keys().lab.path(ED25519);
    let ed = ed.to_str().expect("utf-8 temp path");
    lab.openssl(&[
        "pkcs8", "-topk8", "-v2", "aes256", "-passout", "pass:x", "-in", rsa, "-out", "p8.pem",
    ]);
    lab.openssl(&[
        "pkcs8", "-topk8", "-v2", "aes256", "-passout", "pass:x", "-in", ed, "-out", "ed.pem",
    ]);
    lab.openssl(&[
        "rsa",
        "-aes256",
        "-traditional",
        "-passout",
        "pass:x",
        "-in",
        rsa,
        "-out",
        "p1.pem",
    ]);
    assert!(lab.read_string("p8.pem").starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(lab.read_string("p1.pem").contains("Proc-Type: 4,ENCRYPTED"));
    for name in ["p8.pem", "ed.pem", "p1.pem"] {
        let path = lab.path(name);
        chmod(&path, 0o600);
        let err = Signer::from_pem_file(KEY_ID, &path).expect_err("encrypted key refused");
        assert!(matches!(err, AuthError::EncryptedKey { .. }), "{name}: {err}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("key file {}: ", path.display())), "{message}");
        assert!(message.contains("openssl pkey -in KEY -out KEY.plain"), "{message}");
    }
}

#[test]
fn other_algorithms_and_small_rsa_keys_are_refused() {
    let lab = Lab::new();
    lab.openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "ec.pem",
    ]);
    lab.openssl(&["genpkey", "-algorithm", "ed448", "-out", "ed448.pem"]);
    lab.openssl(&["genrsa", "-out", "rsa1024.pem", "1024"]);
    for (name, oid) in [("ec.pem", "1.2.840.10045.2.1"), ("ed448.pem", "1.3.101.113")] {
        let err = Signer::from_pem(KEY_ID, &lab.read_string(name)).expect_err("refused");
        assert!(
            matches!(&err, AuthError::UnsupportedAlgorithm { oid: o, .. } if o == oid),
            "{name}: {err}"
        );
        let public = lab.public_key(name);
        let err = Verifier::from_public_pem(&lab.read_string(&public)).expect_err("refused");
        assert!(matches!(&err, AuthError::UnsupportedAlgorithm { oid: o, .. } if o == oid));
    }
    let err = Signer::from_pem(KEY_ID, &lab.read_string("rsa1024.pem")).expect_err("too small");
    assert!(matches!(err, AuthError::RsaKeyTooSmall { bits: 1024, .. }), "{err}");
    let public = lab.public_key("rsa1024.pem");
    let err = Verifier::from_public_pem(&lab.read_string(&public)).expect_err("too small");
    assert!(matches!(err, AuthError::RsaKeyTooSmall { bits: 1024, .. }), "{err}");
}

#[test]
fn public_and_private_keys_are_not_mixed_up() {
    let public = keys().lab.read_string(&format!("{RSA_PKCS8}.pub"));
    assert!(matches!(
        Signer::from_pem(KEY_ID, &public),
        Err(AuthError::UnexpectedPemLabel { label, .. }) if label == "PUBLIC KEY"
    ));
    let private = keys().lab.read_string(ED25519);
    let err = Verifier::from_public_pem(&private).expect_err("private key refused");
    assert!(matches!(&err, AuthError::UnexpectedPemLabel { label, .. } if label == "PRIVATE KEY"));
    assert!(err.to_string().contains("-pubout"), "{err}");
}

#[test]
fn invalid_key_ids_are_refused() {
    let pem = keys().lab.read_string(ED25519);
    for key_id in ["", "has space", "tab\there", "new\nline", &"x".repeat(129)] {
        assert!(
            matches!(Signer::from_pem(key_id, &pem), Err(AuthError::InvalidKeyId { .. })),
            "{key_id:?} accepted"
        );
    }
}

// ---- Debug never shows key material -------------------------------------------------------

#[test]
fn debug_shows_key_id_and_kind_but_no_key_material() {
    for (name, kind) in [(RSA_PKCS1, "Rsa"), (RSA_PKCS8, "Rsa"), (ED25519, "Ed25519")] {
        let signer = signer(name);
        let debug = format!("{signer:?}");
        assert_eq!(
            debug,
            format!(r#"Signer {{ key_id: "{KEY_ID}", kind: {kind}, key: <redacted> }}"#)
        );
        let pretty = format!("{signer:#?}");
        let pem = keys().lab.read_string(name);
        for line in pem.lines().filter(|line| !line.starts_with("-----")) {
            assert!(!pretty.contains(line), "{name}: Debug shows PEM line {line}");
        }
        assert_eq!(format!("{:?}", signer.verifier()), format!("Verifier {{ kind: {kind}, .. }}"));
        let headers = signer.headers("GET", WS_PATH, TS_MS).expect("sign");
        let debug = format!("{headers:?}");
        assert!(!debug.contains(&headers.signature_b64), "Debug shows the signature");
        assert_eq!(
            debug,
            format!(
                r#"AuthHeaders {{ key_id: "{KEY_ID}", timestamp_ms: "1703123456789", signature_b64: <redacted> }}"#
            )
        );
    }
}
