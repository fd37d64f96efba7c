//! PostgreSQL md5 password authentication (both directions) and cleartext password checks.

use md5::{Digest, Md5};

use super::Secret;
use super::scram_common::{self, ct_eq};

/// md5(password || user) as 16 bytes: the secret PostgreSQL stores as `"md5" + hex`.
pub fn md5_secret(user: &str, password: &str) -> [u8; 16] {
    md5_secret_bytes(user, password.as_bytes())
}

fn md5_secret_bytes(user: &str, password: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(password);
    h.update(user.as_bytes());
    h.finalize().into()
}

/// The PasswordMessage body PostgreSQL expects for AuthenticationMD5Password:
/// `"md5" + hex(md5(hex(secret) || salt))`, lowercase hex.
pub fn md5_response(secret: &[u8; 16], salt: [u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(hex(secret).as_bytes());
    h.update(salt);
    let digest: [u8; 16] = h.finalize().into();
    format!("md5{}", hex(&digest))
}

/// Checks a client's md5 PasswordMessage against a stored Plain or Md5 secret (constant-time compare).
/// Scram secrets cannot verify md5 responses: false. Empty passwords never match (PgBouncer refuses them too).
/// `response` may carry the message's terminating NUL.
pub fn verify_md5(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let response = strip_nul(response);
    let stored = match secret {
        Secret::Plain(p) if !p.is_empty() => md5_secret(user, p),
        Secret::Md5(m) => *m,
        Secret::Plain(_) | Secret::Scram(_) => return false,
    };
    ct_eq(md5_response(&stored, salt).as_bytes(), response)
}

/// Checks a cleartext PasswordMessage against any kind of secret, with constant-time compares.
/// Plain: compare; Md5: hash with the user name then compare; Scram: derive with the secret's salt and iterations
/// and compare StoredKey and ServerKey. Empty passwords never match. `password` may carry the terminating NUL.
pub fn verify_plain(secret: &Secret, user: &str, password: &[u8]) -> bool {
    let password = strip_nul(password);
    if password.is_empty() {
        return false;
    }
    match secret {
        Secret::Plain(p) => !p.is_empty() && ct_eq(p.as_bytes(), password),
        Secret::Md5(m) => ct_eq(&md5_secret_bytes(user, password), m),
        Secret::Scram(s) => {
            let salted = scram_common::salted_password(password, &s.salt, s.iterations);
            let stored = scram_common::sha256(&scram_common::client_key(&salted));
            let server = scram_common::server_key(&salted);
            // Non-short-circuiting `&` so the time taken does not reveal which key matched.
            ct_eq(&stored, &s.stored_key) & ct_eq(&server, &s.server_key)
        }
    }
}

/// PasswordMessage bodies are NUL-terminated strings; accept them with or without the terminator.
fn strip_nul(b: &[u8]) -> &[u8] {
    b.strip_suffix(&[0]).unwrap_or(b)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}
