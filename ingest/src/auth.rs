//! Kalshi request signing: keys from PEM, the signed message, the three `KALSHI-ACCESS-*` headers.
//!
//! Every REST request and the WebSocket upgrade request carry a key id, a timestamp in Unix
//! milliseconds and a signature over `timestamp_ms + METHOD + path` (path from the host root,
//! query string stripped, no separators). RSA keys sign with RSA-PSS (SHA-256, MGF1-SHA-256,
//! 32-byte salt); Ed25519 keys sign the message bytes directly. The signature travels as
//! standard base64 with padding.
//!
//! Flow: a session loads a [`Signer`] once at start-up ([`Signer::from_pem_file`] checks that
//! the key file is private to its owner), then calls [`Signer::headers`] with the clock reading
//! it took for each request; nothing here reads the clock. The exchange simulator checks those
//! headers with a [`Verifier`] built from the public key.
//!
//! Secrets: the RSA and Ed25519 key types zeroize themselves on drop, the PEM text and the DER
//! bytes read from disk are held in zeroizing buffers, and `Debug` prints the key id and the key
//! kind only.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, Verifier as _};
use rand_core::OsRng;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use rsa::pkcs8::der::pem;
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use rsa::pkcs8::{ObjectIdentifier, PrivateKeyInfo};
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use rsa::traits::PublicKeyParts as _;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Header carrying the API key id (a UUID issued by Kalshi).
pub const HEADER_ACCESS_KEY: &str = "KALSHI-ACCESS-KEY";
/// Header carrying the request timestamp in Unix milliseconds, as a decimal string.
pub const HEADER_ACCESS_TIMESTAMP: &str = "KALSHI-ACCESS-TIMESTAMP";
/// Header carrying the base64 signature over `timestamp_ms + METHOD + path`.
pub const HEADER_ACCESS_SIGNATURE: &str = "KALSHI-ACCESS-SIGNATURE";

/// RSA-PSS salt length in bytes: Kalshi requires salt length = SHA-256 digest length. The
/// verifier accepts this length only.
pub const RSA_PSS_SALT_BYTES: usize = 32;
/// Smallest RSA modulus accepted. Kalshi issues 2048-bit keys; anything shorter is breakable
/// and can only be a wrong or home-made key.
pub const RSA_KEY_BITS_MIN: usize = 2048;
/// Largest key file read. A 4096-bit RSA key in PEM is about 3.3 KiB; a bigger file is not a key
/// and is refused before it is read into memory.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Longest HTTP method accepted in the signed message (`OPTIONS` has 7 letters).
pub const METHOD_BYTES_MAX: usize = 16;
/// Longest API key id accepted. Kalshi key ids are UUIDs (36 characters).
pub const KEY_ID_BYTES_MAX: usize = 128;

const REDACTED: &str = "<redacted>";
const ED25519_SIGNATURE_BYTES: usize = 64;

/// What went wrong while loading a key, signing or verifying, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The key file does not exist.
    #[error("key file {} does not exist; check the configured key path", .path.display())]
    KeyFileMissing { path: PathBuf },
    /// The key file exists but could not be opened or read.
    #[error(
        "cannot read key file {}: {source}; check that it is a regular file readable by this user",
        .path.display()
    )]
    KeyFileRead { path: PathBuf, source: io::Error },
    /// The private key file can be read or written by group or others.
    #[error(
        "key file {path} has mode {mode:04o}, so group or others can read or write it; \
         restrict it with `chmod 600 {path}`",
        path = .path.display(),
        mode = .mode
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    /// The key file is larger than any key could be.
    #[error(
        "key file {} is larger than {bytes_max} bytes, so it is not a PEM key; check the key path",
        .path.display()
    )]
    KeyFileTooLarge { path: PathBuf, bytes_max: u64 },
    /// The key file is not UTF-8 text (DER or some other binary format).
    #[error(
        "key file {} is not PEM text (not UTF-8); if it is binary DER, convert it with \
         `openssl pkey -in KEY -inform DER -out KEY.pem`",
        .path.display()
    )]
    KeyFileNotUtf8 { path: PathBuf },
    /// No valid PEM block was found.
    #[error(
        "{origin}: no valid PEM block ({detail}); expected {expected}, as written by Kalshi or \
         openssl"
    )]
    MalformedPem { origin: String, detail: String, expected: &'static str },
    /// The private key is protected by a passphrase.
    #[error(
        "{origin}: the private key is encrypted with a passphrase, which kdp does not support; \
         write a decrypted copy with `openssl pkey -in KEY -out KEY.plain`, then \
         `chmod 600 KEY.plain` and point kdp at it"
    )]
    EncryptedKey { origin: String },
    /// The PEM block is of another kind than the one needed (e.g. a public key given as the
    /// private key).
    #[error(
        "{origin}: found a `{label}` PEM block, expected {expected}; check which file is meant"
    )]
    UnexpectedPemLabel { origin: String, label: String, expected: &'static str },
    /// The key uses an algorithm other than RSA or Ed25519.
    #[error(
        "{origin}: key algorithm {name} (OID {oid}) is not supported; Kalshi API keys are RSA \
         (rsaEncryption) or Ed25519, create one of those on the Kalshi API keys page"
    )]
    UnsupportedAlgorithm { origin: String, oid: String, name: &'static str },
    /// The PEM armour is fine but its contents are not a valid key.
    #[error(
        "{origin}: the {what} could not be decoded ({detail}); the file is damaged or \
         truncated, download or export the key again"
    )]
    MalformedKey { origin: String, what: &'static str, detail: String },
    /// The RSA key is shorter than [`RSA_KEY_BITS_MIN`].
    #[error(
        "{origin}: RSA key has {bits} bits, at least {bits_min} are required; use the 2048-bit \
         key issued by Kalshi",
        bits_min = RSA_KEY_BITS_MIN
    )]
    RsaKeyTooSmall { origin: String, bits: usize },
    /// The API key id is empty, too long, or not usable as an HTTP header value.
    #[error(
        "API key id {key_id:?} is not valid (must be 1..={KEY_ID_BYTES_MAX} visible ASCII \
         characters); copy the key id (a UUID) from the Kalshi API keys page"
    )]
    InvalidKeyId { key_id: String },
    /// The HTTP method is empty, too long, or not made of ASCII letters.
    #[error(
        "HTTP method {method:?} is not valid (must be 1..={METHOD_BYTES_MAX} ASCII letters, \
         e.g. GET); this is a bug in the caller"
    )]
    InvalidMethod { method: String },
    /// The path does not start at the host root.
    #[error(
        "request path {path:?} does not start with `/`; pass the path from the host root \
         (e.g. /trade-api/ws/v2), not a full URL; this is a bug in the caller"
    )]
    InvalidPath { path: String },
    /// Signing failed inside the RSA implementation (e.g. the OS random generator failed).
    #[error("{kind} signing failed ({detail}); check that the OS random generator works")]
    Signing { kind: KeyKind, detail: String },
    /// The signature is not standard base64 with padding.
    #[error(
        "signature is not standard base64 with padding ({detail}); the client encoded it wrongly"
    )]
    SignatureEncoding { detail: String },
    /// The signature has the wrong length for the key.
    #[error(
        "signature is {bytes} bytes, a {kind} key of this size makes {expected_bytes}-byte \
         signatures; the client signs with another key"
    )]
    SignatureLength { kind: KeyKind, bytes: usize, expected_bytes: usize },
    /// The signature does not match the message and the public key.
    #[error(
        "{kind} signature does not verify: the key pair, the signed message \
         (timestamp_ms + METHOD + path without query) or the signature scheme differs"
    )]
    SignatureMismatch { kind: KeyKind },
}

/// The two kinds of Kalshi API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA key, signatures are RSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
    Rsa,
    /// Ed25519 key, signatures are plain Ed25519 (64 bytes).
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA",
            Self::Ed25519 => "Ed25519",
        })
    }
}

/// Builds the signed message: `timestamp_ms` in decimal, the method in upper case, and the path
/// from the host root with the query string stripped, e.g. `1703123456789GET/trade-api/ws/v2`.
pub fn signing_message(
    timestamp_ms: u64,
    method: &str,
    path_with_query: &str,
) -> Result<String, AuthError> {
    let method_valid = !method.is_empty()
        && method.len() <= METHOD_BYTES_MAX
        && method.bytes().all(|b| b.is_ascii_alphabetic());
    if !method_valid {
        return Err(AuthError::InvalidMethod { method: method.to_owned() });
    }
    if !path_with_query.starts_with('/') {
        return Err(AuthError::InvalidPath { path: path_with_query.to_owned() });
    }
    let path = path_with_query.split_once('?').map_or(path_with_query, |(path, _query)| path);
    let mut message = timestamp_ms.to_string();
    message.reserve(method.len() + path.len());
    message.push_str(&method.to_ascii_uppercase());
    message.push_str(path);
    Ok(message)
}

/// The three authentication headers of one request.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthHeaders {
    /// Value of `KALSHI-ACCESS-KEY`.
    pub key_id: String,
    /// Value of `KALSHI-ACCESS-TIMESTAMP` (Unix milliseconds, decimal).
    pub timestamp_ms: String,
    /// Value of `KALSHI-ACCESS-SIGNATURE` (standard base64 with padding).
    pub signature_b64: String,
}

impl AuthHeaders {
    /// The headers as `(name, value)` pairs, ready to add to a request.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (HEADER_ACCESS_KEY, &self.key_id),
            (HEADER_ACCESS_TIMESTAMP, &self.timestamp_ms),
            (HEADER_ACCESS_SIGNATURE, &self.signature_b64),
        ]
    }
}

/// The signature is a bearer credential until its timestamp expires, so logs do not get it.
impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("key_id", &self.key_id)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("signature_b64", &format_args!("{REDACTED}"))
            .finish()
    }
}

enum SigningKey {
    Rsa(Box<rsa::pss::BlindedSigningKey<Sha256>>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// Signs Kalshi requests with one API key. Holds the private key; `Debug` shows the key id and
/// the key kind only.
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("kind", &self.kind())
            .field("key", &format_args!("{REDACTED}"))
            .finish()
    }
}

impl Signer {
    /// Loads the private key from PEM text: PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8
    /// (`BEGIN PRIVATE KEY`, RSA or Ed25519, told apart by the algorithm OID).
    pub fn from_pem(key_id: &str, pem: &str) -> Result<Self, AuthError> {
        let key_id = valid_key_id(key_id)?;
        let key = parse_private_pem(pem, "private key PEM")?;
        Ok(Self { key_id, key })
    }

    /// Loads the private key from a PEM file. Refuses a file that group or others can read or
    /// write (fix: `chmod 600 PATH`).
    pub fn from_pem_file(key_id: &str, path: &Path) -> Result<Self, AuthError> {
        let key_id = valid_key_id(key_id)?;
        let text = read_pem_file(path, FileSecrecy::OwnerOnly)?;
        let origin = format!("key file {}", path.display());
        let pem = std::str::from_utf8(&text)
            .map_err(|_| AuthError::KeyFileNotUtf8 { path: path.to_owned() })?;
        let key = parse_private_pem(pem, &origin)?;
        Ok(Self { key_id, key })
    }

    /// The API key id sent in `KALSHI-ACCESS-KEY`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether this is an RSA or an Ed25519 key.
    pub fn kind(&self) -> KeyKind {
        match self.key {
            SigningKey::Rsa(_) => KeyKind::Rsa,
            SigningKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Signs raw message bytes; returns the signature as standard base64 with padding. RSA
    /// signatures use a fresh random salt from the OS generator.
    pub fn sign(&self, message: &[u8]) -> Result<String, AuthError> {
        let signature = match &self.key {
            SigningKey::Rsa(key) => key
                .try_sign_with_rng(&mut OsRng, message)
                .map_err(|e| AuthError::Signing { kind: KeyKind::Rsa, detail: e.to_string() })?
                .to_vec(),
            SigningKey::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
        };
        Ok(BASE64.encode(signature))
    }

    /// The three headers for a request made at `now_ms` (Unix milliseconds, read by the caller).
    /// `path_with_query` is the path from the host root; a query string is left out of the
    /// signed message.
    pub fn headers(
        &self,
        method: &str,
        path_with_query: &str,
        now_ms: u64,
    ) -> Result<AuthHeaders, AuthError> {
        let message = signing_message(now_ms, method, path_with_query)?;
        Ok(AuthHeaders {
            key_id: self.key_id.clone(),
            timestamp_ms: now_ms.to_string(),
            signature_b64: self.sign(message.as_bytes())?,
        })
    }

    /// The verifier for this key's public half.
    pub fn verifier(&self) -> Verifier {
        let key = match &self.key {
            SigningKey::Rsa(key) => {
                VerifyingKey::Rsa(Box::new(rsa::pss::VerifyingKey::new_with_salt_len(
                    AsRef::<rsa::RsaPrivateKey>::as_ref(key.as_ref()).to_public_key(),
                    RSA_PSS_SALT_BYTES,
                )))
            }
            SigningKey::Ed25519(key) => VerifyingKey::Ed25519(Box::new(key.verifying_key())),
        };
        Verifier { key }
    }
}

enum VerifyingKey {
    Rsa(Box<rsa::pss::VerifyingKey<Sha256>>),
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

/// Checks Kalshi request signatures against a public key. RSA signatures must use
/// MGF1-SHA-256 and a salt of exactly [`RSA_PSS_SALT_BYTES`]; Ed25519 signatures are checked
/// strictly (non-canonical or small-order encodings are refused).
pub struct Verifier {
    key: VerifyingKey,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("kind", &self.kind()).finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads a public key from PEM text: SPKI (`BEGIN PUBLIC KEY`, RSA or Ed25519) or PKCS#1
    /// (`BEGIN RSA PUBLIC KEY`).
    pub fn from_public_pem(pem: &str) -> Result<Self, AuthError> {
        parse_public_pem(pem, "public key PEM")
    }

    /// Loads a public key from a PEM file (no permission check: the key is public).
    pub fn from_public_pem_file(path: &Path) -> Result<Self, AuthError> {
        let text = read_pem_file(path, FileSecrecy::Public)?;
        let pem = std::str::from_utf8(&text)
            .map_err(|_| AuthError::KeyFileNotUtf8 { path: path.to_owned() })?;
        parse_public_pem(pem, &format!("key file {}", path.display()))
    }

    /// Whether this is an RSA or an Ed25519 key.
    pub fn kind(&self) -> KeyKind {
        match self.key {
            VerifyingKey::Rsa(_) => KeyKind::Rsa,
            VerifyingKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Checks a base64 signature over raw message bytes.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), AuthError> {
        let signature = BASE64
            .decode(signature_b64)
            .map_err(|e| AuthError::SignatureEncoding { detail: e.to_string() })?;
        match &self.key {
            VerifyingKey::Rsa(key) => {
                let expected_bytes = AsRef::<rsa::RsaPublicKey>::as_ref(key.as_ref()).size();
                if signature.len() != expected_bytes {
                    return Err(AuthError::SignatureLength {
                        kind: KeyKind::Rsa,
                        bytes: signature.len(),
                        expected_bytes,
                    });
                }
                let signature = rsa::pss::Signature::try_from(signature.as_slice())
                    .map_err(|_| AuthError::SignatureMismatch { kind: KeyKind::Rsa })?;
                key.verify(message, &signature)
                    .map_err(|_| AuthError::SignatureMismatch { kind: KeyKind::Rsa })
            }
            VerifyingKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_slice(&signature).map_err(|_| {
                    AuthError::SignatureLength {
                        kind: KeyKind::Ed25519,
                        bytes: signature.len(),
                        expected_bytes: ED25519_SIGNATURE_BYTES,
                    }
                })?;
                key.verify_strict(message, &signature)
                    .map_err(|_| AuthError::SignatureMismatch { kind: KeyKind::Ed25519 })
            }
        }
    }

    /// Checks the signature of a request: rebuilds the message with [`signing_message`] and
    /// verifies it.
    pub fn verify_request(
        &self,
        timestamp_ms: u64,
        method: &str,
        path_with_query: &str,
        signature_b64: &str,
    ) -> Result<(), AuthError> {
        let message = signing_message(timestamp_ms, method, path_with_query)?;
        self.verify(message.as_bytes(), signature_b64)
    }
}

fn valid_key_id(key_id: &str) -> Result<String, AuthError> {
    let valid = !key_id.is_empty()
        && key_id.len() <= KEY_ID_BYTES_MAX
        && key_id.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(key_id.to_owned())
    } else {
        Err(AuthError::InvalidKeyId { key_id: key_id.to_owned() })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileSecrecy {
    /// A private key: refuse the file if group or others may read or write it.
    OwnerOnly,
    /// A public key: any mode.
    Public,
}

/// Reads a PEM file into a zeroizing buffer, bounded by [`KEY_FILE_BYTES_MAX`]. The mode is
/// checked on the opened file, so it is the mode of the bytes actually read.
fn read_pem_file(path: &Path, secrecy: FileSecrecy) -> Result<Zeroizing<Vec<u8>>, AuthError> {
    let read_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            AuthError::KeyFileMissing { path: path.to_owned() }
        } else {
            AuthError::KeyFileRead { path: path.to_owned(), source }
        }
    };
    let file = File::open(path).map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(read_error(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")));
    }
    if secrecy == FileSecrecy::OwnerOnly {
        check_owner_only(path, &metadata)?;
    }
    if metadata.len() > KEY_FILE_BYTES_MAX {
        return Err(AuthError::KeyFileTooLarge {
            path: path.to_owned(),
            bytes_max: KEY_FILE_BYTES_MAX,
        });
    }
    // Capacity for the whole file up front (plus one byte to see end of file): the buffer never
    // reallocates, so no unzeroized copy of the key is left behind in freed memory.
    let capacity = usize::try_from(KEY_FILE_BYTES_MAX + 1).unwrap_or(usize::MAX);
    let mut text = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(KEY_FILE_BYTES_MAX + 1).read_to_end(&mut text).map_err(read_error)?;
    if text.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(AuthError::KeyFileTooLarge {
            path: path.to_owned(),
            bytes_max: KEY_FILE_BYTES_MAX,
        });
    }
    Ok(text)
}

#[cfg(unix)]
fn check_owner_only(path: &Path, metadata: &std::fs::Metadata) -> Result<(), AuthError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AuthError::KeyFilePermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), AuthError> {
    Ok(())
}

const PRIVATE_EXPECTED: &str =
    "`-----BEGIN PRIVATE KEY-----` (PKCS#8) or `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1)";
const PUBLIC_EXPECTED: &str =
    "`-----BEGIN PUBLIC KEY-----` (SPKI) or `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1)";

/// The first PEM block of `text`, without surrounding text (openssl may write comments or bag
/// attributes before it).
fn first_pem_block<'a>(
    text: &'a str,
    origin: &str,
    expected: &'static str,
) -> Result<&'a str, AuthError> {
    let malformed = |detail: &str| AuthError::MalformedPem {
        origin: origin.to_owned(),
        detail: detail.to_owned(),
        expected,
    };
    let begin = text.find("-----BEGIN ").ok_or_else(|| malformed("no `-----BEGIN` line"))?;
    let block = &text[begin..];
    let end_line = block.find("-----END ").ok_or_else(|| malformed("no `-----END` line"))?;
    let after_end_line = &block[end_line + "-----END ".len()..];
    let end_close =
        after_end_line.find("-----").ok_or_else(|| malformed("unterminated `-----END` line"))?;
    Ok(&block[..end_line + "-----END ".len() + end_close + "-----".len()])
}

/// Decodes one PEM block into its label and DER bytes. The DER buffer is allocated once at its
/// final size and zeroized on drop. DER validity is left to the key parsers, so that "not PEM"
/// and "PEM holding something that is not a key" are reported apart.
fn decode_pem(block: &str) -> Result<(&str, Zeroizing<Vec<u8>>), pem::Error> {
    let mut decoder = pem::Decoder::new(block.as_bytes())?;
    let label = decoder.type_label();
    let mut der = Zeroizing::new(vec![0u8; decoder.remaining_len()]);
    decoder.decode(&mut der)?;
    Ok((label, der))
}

fn parse_private_pem(text: &str, origin: &str) -> Result<SigningKey, AuthError> {
    let block = first_pem_block(text, origin, PRIVATE_EXPECTED)?;
    // Legacy OpenSSL encryption of PKCS#1 keys: RFC 1421 headers inside the block.
    if block.contains("Proc-Type:") && block.contains("ENCRYPTED") {
        return Err(AuthError::EncryptedKey { origin: origin.to_owned() });
    }
    let (label, der) = decode_pem(block).map_err(|e| AuthError::MalformedPem {
        origin: origin.to_owned(),
        detail: e.to_string(),
        expected: PRIVATE_EXPECTED,
    })?;
    let malformed_key = |what: &'static str, detail: String| AuthError::MalformedKey {
        origin: origin.to_owned(),
        what,
        detail,
    };
    match label {
        "RSA PRIVATE KEY" => {
            let key = rsa::RsaPrivateKey::from_pkcs1_der(der.as_slice())
                .map_err(|e| malformed_key("PKCS#1 RSA private key", e.to_string()))?;
            rsa_signing_key(key, origin)
        }
        "PRIVATE KEY" => {
            let info = PrivateKeyInfo::try_from(der.as_slice())
                .map_err(|e| malformed_key("PKCS#8 private key", e.to_string()))?;
            let oid = info.algorithm.oid;
            if oid == rsa::pkcs1::ALGORITHM_OID {
                let key = rsa::RsaPrivateKey::try_from(info)
                    .map_err(|e| malformed_key("PKCS#8 RSA private key", e.to_string()))?;
                rsa_signing_key(key, origin)
            } else if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(der.as_slice())
                    .map_err(|e| malformed_key("PKCS#8 Ed25519 private key", e.to_string()))?;
                Ok(SigningKey::Ed25519(Box::new(key)))
            } else {
                Err(unsupported_algorithm(oid, origin))
            }
        }
        "ENCRYPTED PRIVATE KEY" => Err(AuthError::EncryptedKey { origin: origin.to_owned() }),
        other => Err(AuthError::UnexpectedPemLabel {
            origin: origin.to_owned(),
            label: other.to_owned(),
            expected: PRIVATE_EXPECTED,
        }),
    }
}

fn rsa_signing_key(key: rsa::RsaPrivateKey, origin: &str) -> Result<SigningKey, AuthError> {
    let bits = key.size() * 8;
    if bits < RSA_KEY_BITS_MIN {
        return Err(AuthError::RsaKeyTooSmall { origin: origin.to_owned(), bits });
    }
    key.validate().map_err(|e| AuthError::MalformedKey {
        origin: origin.to_owned(),
        what: "RSA private key",
        detail: e.to_string(),
    })?;
    Ok(SigningKey::Rsa(Box::new(rsa::pss::BlindedSigningKey::new_with_salt_len(
        key,
        RSA_PSS_SALT_BYTES,
    ))))
}

fn parse_public_pem(text: &str, origin: &str) -> Result<Verifier, AuthError> {
    let block = first_pem_block(text, origin, PUBLIC_EXPECTED)?;
    let (label, der) = decode_pem(block).map_err(|e| AuthError::MalformedPem {
        origin: origin.to_owned(),
        detail: e.to_string(),
        expected: PUBLIC_EXPECTED,
    })?;
    let malformed_key = |what: &'static str, detail: String| AuthError::MalformedKey {
        origin: origin.to_owned(),
        what,
        detail,
    };
    let key = match label {
        "RSA PUBLIC KEY" => rsa::RsaPublicKey::from_pkcs1_der(der.as_slice())
            .map_err(|e| malformed_key("PKCS#1 RSA public key", e.to_string()))
            .and_then(|key| rsa_verifying_key(key, origin))?,
        "PUBLIC KEY" => {
            let info = SubjectPublicKeyInfoRef::try_from(der.as_slice())
                .map_err(|e| malformed_key("SPKI public key", e.to_string()))?;
            let oid = info.algorithm.oid;
            if oid == rsa::pkcs1::ALGORITHM_OID {
                rsa::RsaPublicKey::try_from(info)
                    .map_err(|e| malformed_key("SPKI RSA public key", e.to_string()))
                    .and_then(|key| rsa_verifying_key(key, origin))?
            } else if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
                let key = ed25519_dalek::VerifyingKey::from_public_key_der(der.as_slice())
                    .map_err(|e| malformed_key("SPKI Ed25519 public key", e.to_string()))?;
                VerifyingKey::Ed25519(Box::new(key))
            } else {
                return Err(unsupported_algorithm(oid, origin));
            }
        }
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
            return Err(AuthError::UnexpectedPemLabel {
                origin: origin.to_owned(),
                label: label.to_owned(),
                expected: "a public key; never hand a private key to the verifier, extract the \
                           public key with `openssl pkey -in KEY -pubout -out KEY.pub`",
            });
        }
        other => {
            return Err(AuthError::UnexpectedPemLabel {
                origin: origin.to_owned(),
                label: other.to_owned(),
                expected: PUBLIC_EXPECTED,
            });
        }
    };
    Ok(Verifier { key })
}

fn rsa_verifying_key(key: rsa::RsaPublicKey, origin: &str) -> Result<VerifyingKey, AuthError> {
    let bits = key.size() * 8;
    if bits < RSA_KEY_BITS_MIN {
        return Err(AuthError::RsaKeyTooSmall { origin: origin.to_owned(), bits });
    }
    Ok(VerifyingKey::Rsa(Box::new(rsa::pss::VerifyingKey::new_with_salt_len(
        key,
        RSA_PSS_SALT_BYTES,
    ))))
}

fn unsupported_algorithm(oid: ObjectIdentifier, origin: &str) -> AuthError {
    let name = match oid.to_string().as_str() {
        "1.2.840.113549.1.1.10" => "RSASSA-PSS (PSS-restricted RSA key)",
        "1.2.840.10045.2.1" => "EC (ECDSA)",
        "1.3.101.113" => "Ed448",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.2.840.10040.4.1" => "DSA",
        _ => "unknown",
    };
    AuthError::UnsupportedAlgorithm { origin: origin.to_owned(), oid: oid.to_string(), name }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1 test 2: secret key, public key, message 0x72, signature.
    const RFC8032_SECRET: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    const RFC8032_PUBLIC: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const RFC8032_SIGNATURE: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                                     085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("test vector is hex"))
            .collect()
    }

    fn rfc8032_signer() -> Signer {
        let secret: [u8; 32] =
            hex_bytes(RFC8032_SECRET).try_into().expect("test vector secret is 32 bytes");
        Signer {
            key_id: "test-key".to_owned(),
            key: SigningKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&secret))),
        }
    }

    #[test]
    fn ed25519_signature_matches_rfc8032_vector() {
        let signer = rfc8032_signer();
        let signature = signer.sign(&[0x72]).expect("Ed25519 signing cannot fail");
        assert_eq!(BASE64.decode(&signature).expect("base64"), hex_bytes(RFC8032_SIGNATURE));
        let verifier = signer.verifier();
        match &verifier.key {
            VerifyingKey::Ed25519(key) => {
                assert_eq!(key.to_bytes().to_vec(), hex_bytes(RFC8032_PUBLIC))
            }
            VerifyingKey::Rsa(_) => panic!("verifier of an Ed25519 signer must be Ed25519"),
        }
        verifier.verify(&[0x72], &signature).expect("own signature verifies");
        assert!(matches!(
            verifier.verify(&[0x73], &signature),
            Err(AuthError::SignatureMismatch { kind: KeyKind::Ed25519 })
        ));
    }

    #[test]
    fn signer_and_verifier_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Signer>();
        shareable::<Verifier>();
    }

    #[test]
    fn debug_shows_key_id_and_kind_only() {
        let signer = rfc8032_signer();
        let debug = format!("{signer:?}");
        assert_eq!(debug, r#"Signer { key_id: "test-key", kind: Ed25519, key: <redacted> }"#);
        let alternate = format!("{signer:#?}");
        let secret = hex_bytes(RFC8032_SECRET);
        for rendering in [
            RFC8032_SECRET.to_owned(),
            RFC8032_SECRET.to_ascii_uppercase(),
            format!("{secret:?}"),
            BASE64.encode(&secret),
        ] {
            assert!(!debug.contains(&rendering) && !alternate.contains(&rendering));
        }
        let headers = signer.headers("get", "/trade-api/ws/v2", 1).expect("headers");
        assert_eq!(
            format!("{headers:?}"),
            r#"AuthHeaders { key_id: "test-key", timestamp_ms: "1", signature_b64: <redacted> }"#
        );
    }
}
