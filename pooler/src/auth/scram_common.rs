//! Primitives shared by the SCRAM-SHA-256 server and client roles: key derivation, encoding, attribute parsing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::ScramError;

/// The only SASL mechanism we speak; -PLUS (channel binding) is never offered.
pub(crate) const MECHANISM: &str = "SCRAM-SHA-256";
/// Upper bound for any SCRAM message in either direction. Real messages are < 300 bytes; the cap keeps a hostile
/// peer from making us buffer, decode and HMAC megabytes.
pub(crate) const MAX_MESSAGE_LEN: usize = 8192;
/// Longest client nonce we accept (PostgreSQL clients send 18-24 characters).
pub(crate) const MAX_NONCE_LEN: usize = 1024;
/// Iteration count and salt length used when we derive a SCRAM secret ourselves (PostgreSQL's defaults).
pub(crate) const DEFAULT_ITERATIONS: u32 = 4096;
pub(crate) const DEFAULT_SALT_LEN: usize = 16;

pub(crate) type Key = [u8; 32];

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Key {
    // HMAC is defined for keys of any length (long keys are hashed), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// Hi() of RFC 5802, i.e. PBKDF2-HMAC-SHA256 with a 32-byte output.
///
/// Limitation: PostgreSQL runs the password through SASLprep (RFC 4013) first and falls back to the raw bytes when
/// the password is not UTF-8 or SASLprep rejects it. We always use the raw bytes: identical for every ASCII password
/// (SASLprep maps nothing in ASCII and prohibits only control characters, which triggers the raw fallback) and for
/// non-ASCII passwords already in NFKC form without mapped characters; other non-ASCII passwords derive different
/// keys than PostgreSQL would and so fail to authenticate.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

pub(crate) fn client_key(salted: &Key) -> Key {
    hmac_sha256(salted, b"Client Key")
}

pub(crate) fn server_key(salted: &Key) -> Key {
    hmac_sha256(salted, b"Server Key")
}

pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Equality whose running time does not depend on where the inputs differ (only on their lengths), so a remote
/// peer cannot learn a secret byte by byte from response timing.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the optimizer from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

pub(crate) fn b64_encode(data: &[u8]) -> String {
    B64.encode(data)
}

pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

/// `n` bytes from the thread-local CSPRNG (ChaCha seeded from the OS), base64-encoded: a nonce made only of
/// printable characters other than ','.
pub(crate) fn random_nonce(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    b64_encode(&bytes)
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes[..]);
    bytes
}

/// Common entry checks for every SCRAM message: size cap, then UTF-8 (all SCRAM syntax is ASCII; the username and
/// extension values may be UTF-8).
pub(crate) fn message_str(data: &[u8]) -> Result<&str, ScramError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(data).map_err(|_| ScramError::Malformed("message is not valid UTF-8"))
}

/// Takes the next comma-separated attribute, which must be `name=value`, from `rest`; returns the value.
pub(crate) fn expect_attr<'a>(
    rest: &mut std::str::Split<'a, char>,
    name: char,
    missing: &'static str,
) -> Result<&'a str, ScramError> {
    let part = rest.next().ok_or(ScramError::Malformed(missing))?;
    match split_attr(part) {
        Some((n, value)) if n == name => Ok(value),
        Some(('m', _)) => Err(ScramError::Malformed(
            "mandatory extensions are not supported",
        )),
        _ => Err(ScramError::Malformed(missing)),
    }
}

/// Splits `x=value` where `x` is an ASCII letter, as in RFC 5802's `attr-val`.
pub(crate) fn split_attr(part: &str) -> Option<(char, &str)> {
    let mut chars = part.chars();
    let name = chars.next().filter(char::is_ascii_alphabetic)?;
    let value = chars.as_str().strip_prefix('=')?;
    Some((name, value))
}

/// RFC 5802 `printable`: 0x21-0x7E except ','. Nonces must consist of these.
pub(crate) fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parses an iteration count: plain decimal digits, at least 1.
pub(crate) fn parse_iterations(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&i| i >= 1)
}
