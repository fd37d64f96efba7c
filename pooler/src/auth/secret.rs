//! Stored password secrets (cleartext, md5, SCRAM-SHA-256) and their textual forms.

use std::fmt;

use super::scram_common::{self, b64_decode, b64_encode};

/// A secret as stored in a PgBouncer userlist.txt line (`"username" "secret"`) or a database entry's password.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Cleartext password.
    Plain(String),
    /// `"md5" + 32 hex digits` = md5(password || username).
    Md5([u8; 16]),
    /// `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    Scram(ScramSecret),
}

/// The verifier PostgreSQL keeps in pg_authid for SCRAM-SHA-256: enough to check a client proof and sign the
/// server-final message, not enough to log in elsewhere (that needs the ClientKey).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

// Debug is written by hand so that logging a config or a user never leaks a password or key material.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Md5(_) => f.write_str("Secret::Md5(..)"),
            Secret::Scram(s) => write!(f, "Secret::Scram({s:?})"),
        }
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Secret {
    /// Parses the secret column of userlist.txt (also used for `password` in a database entry).
    ///
    /// Like PostgreSQL's `get_password_type()` and PgBouncer, anything that is not a well-formed md5 or SCRAM
    /// secret is a cleartext password, so this never fails. [`Secret::try_parse`] is the strict variant.
    pub fn parse(s: &str) -> Secret {
        Secret::try_parse(s).unwrap_or_else(|_| Secret::Plain(s.to_owned()))
    }

    /// Like [`Secret::parse`], but a string that starts with `SCRAM-SHA-256$` and is not a valid SCRAM secret is
    /// an error (a pasted secret that got truncated should be reported, not silently become a password).
    /// The error message never contains the secret.
    pub fn try_parse(s: &str) -> Result<Secret, &'static str> {
        if let Some(md5) = parse_md5(s) {
            return Ok(Secret::Md5(md5));
        }
        if let Some(body) = s.strip_prefix(SCRAM_PREFIX) {
            return parse_scram_body(body).map(Secret::Scram);
        }
        Ok(Secret::Plain(s.to_owned()))
    }

    /// SCRAM secret derived from a cleartext password with the given salt and iteration count
    /// (raw password bytes, no SASLprep: see [`scram_common::salted_password`]).
    pub fn scram_from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        ScramSecret::from_password_bytes(password.as_bytes(), salt, iterations)
    }
}

impl ScramSecret {
    pub(crate) fn from_password_bytes(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramSecret {
        let salted = scram_common::salted_password(password, salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: scram_common::sha256(&scram_common::client_key(&salted)),
            server_key: scram_common::server_key(&salted),
        }
    }

    /// The textual form PostgreSQL stores (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`).
    /// Deliberately not `Display`, so it cannot end up in a log line by accident.
    pub fn to_secret_string(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            b64_encode(&self.salt),
            b64_encode(&self.stored_key),
            b64_encode(&self.server_key)
        )
    }
}

/// `md5` followed by exactly 32 lowercase hex digits (PostgreSQL's MD5_PASSWD_CHARSET is lowercase only, so an
/// uppercase variant is a cleartext password there too).
fn parse_md5(s: &str) -> Option<[u8; 16]> {
    let hex = s.strip_prefix("md5")?.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = (lower_hex_digit(pair[0])? << 4) | lower_hex_digit(pair[1])?;
    }
    Some(out)
}

fn lower_hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_scram_body(body: &str) -> Result<ScramSecret, &'static str> {
    let (params, keys) = body
        .split_once('$')
        .ok_or("SCRAM secret: missing '$' before the keys")?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or("SCRAM secret: missing ':' after the iteration count")?;
    let (stored_key, server_key) = keys
        .split_once(':')
        .ok_or("SCRAM secret: missing ':' between the keys")?;
    let iterations = scram_common::parse_iterations(iterations)
        .ok_or("SCRAM secret: invalid iteration count")?;
    let salt = b64_decode(salt)
        .filter(|s| !s.is_empty())
        .ok_or("SCRAM secret: invalid base64 salt")?;
    let stored_key = decode_key(stored_key).ok_or("SCRAM secret: invalid StoredKey")?;
    let server_key = decode_key(server_key).ok_or("SCRAM secret: invalid ServerKey")?;
    Ok(ScramSecret {
        iterations,
        salt,
        stored_key,
        server_key,
    })
}

fn decode_key(s: &str) -> Option<[u8; 32]> {
    b64_decode(s)?.try_into().ok()
}
