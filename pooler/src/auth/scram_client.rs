//! SCRAM-SHA-256 client role: logs in to PostgreSQL from a password or from recovered keys (SCRAM pass-through).

use std::fmt;

use super::ScramError;
use super::scram_common::{
    self, Key, b64_decode, b64_encode, ct_eq, expect_attr, hmac_sha256, is_printable_nonce,
    message_str, parse_iterations, split_attr,
};

/// The highest iteration count accepted from a server (PostgreSQL's default is 4096). The
/// key derivation runs on the worker thread, so a hostile or broken server asking for
/// billions would stall every client of that worker.
pub const MAX_SERVER_ITERATIONS: u32 = 1 << 20;

/// Raw bytes of randomness in our nonce (libpq uses 18; more does not hurt).
const CLIENT_NONCE_BYTES: usize = 24;

/// Client side of one SCRAM-SHA-256 exchange: `client_first`, `server_first`, `server_final`.
pub struct ScramClient {
    credentials: Credentials,
    /// Empty in real use (like libpq: PostgreSQL takes the user from the startup packet); set by tests only.
    user: String,
    nonce: String,
    state: State,
}

enum Credentials {
    Password(Vec<u8>),
    /// Pass-through: ClientKey recovered from the client's proof, ServerKey from the stored secret.
    Keys {
        client_key: Key,
        server_key: Key,
    },
}

enum State {
    Initial,
    SentClientFirst { client_first_bare: String },
    SentClientFinal { server_signature: Key },
    Finished,
}

// No password or key material in Debug output.
impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentClientFirst { .. } => "sent client-first",
            State::SentClientFinal { .. } => "sent client-final",
            State::Finished => "finished",
        };
        let creds = match self.credentials {
            Credentials::Password(_) => "password",
            Credentials::Keys { .. } => "keys",
        };
        f.debug_struct("ScramClient")
            .field("credentials", &creds)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// Uses the raw password bytes (no SASLprep: see `scram_common::salted_password`).
    pub fn with_password(password: &str) -> ScramClient {
        let creds = Credentials::Password(password.as_bytes().to_vec());
        ScramClient::build(creds, "", scram_common::random_nonce(CLIENT_NONCE_BYTES))
    }

    pub fn with_keys(client_key: [u8; 32], server_key: [u8; 32]) -> ScramClient {
        let creds = Credentials::Keys {
            client_key,
            server_key,
        };
        ScramClient::build(creds, "", scram_common::random_nonce(CLIENT_NONCE_BYTES))
    }

    /// Test hook: fixed user name and nonce (so RFC test vectors can be reproduced). The user name must already
    /// be SCRAM-escaped ("=2C" for ',', "=3D" for '=').
    #[cfg(test)]
    pub(crate) fn with_password_user_nonce(password: &str, user: &str, nonce: &str) -> ScramClient {
        let creds = Credentials::Password(password.as_bytes().to_vec());
        ScramClient::build(creds, user, nonce.to_owned())
    }

    fn build(credentials: Credentials, user: &str, nonce: String) -> ScramClient {
        ScramClient {
            credentials,
            user: user.to_owned(),
            nonce,
            state: State::Initial,
        }
    }

    /// client-first-message ("n,,n=,r=<nonce>"), to send in SASLInitialResponse with mechanism "SCRAM-SHA-256".
    /// Calling it again restarts the exchange with the same nonce.
    pub fn client_first(&mut self) -> Vec<u8> {
        // "n": we do not do channel binding and do not claim the server lacks it either way.
        let client_first_bare = format!("n={},r={}", self.user, self.nonce);
        let msg = format!("n,,{client_first_bare}");
        self.state = State::SentClientFirst { client_first_bare };
        msg.into_bytes()
    }

    /// Given the server-first-message, returns the client-final-message. With keys, the server's salt and
    /// iteration count are validated but unused.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentClientFirst { client_first_bare } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let server_first = message_str(data)?;
        if server_first.starts_with("e=") {
            return Err(server_error(server_first));
        }
        let mut attrs = server_first.split(',');
        let nonce = expect_attr(&mut attrs, 'r', "missing nonce")?;
        let salt = expect_attr(&mut attrs, 's', "missing salt")?;
        let iterations = expect_attr(&mut attrs, 'i', "missing iteration count")?;
        for a in attrs {
            match split_attr(a) {
                Some(('m', _)) => {
                    return Err(ScramError::Malformed(
                        "mandatory extensions are not supported",
                    ));
                }
                Some(_) => {}
                None => return Err(ScramError::Malformed("invalid attribute")),
            }
        }
        // The server must extend our nonce with its own non-empty part, or it is replaying an old exchange.
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(self.nonce.as_str()) {
            return Err(ScramError::Malformed(
                "server nonce does not extend the client nonce",
            ));
        }
        if !is_printable_nonce(nonce) {
            return Err(ScramError::Malformed("invalid nonce"));
        }
        let salt = b64_decode(salt)
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::Malformed("invalid salt"))?;
        let iterations =
            parse_iterations(iterations).ok_or(ScramError::Malformed("invalid iteration count"))?;
        if iterations > MAX_SERVER_ITERATIONS {
            return Err(ScramError::Malformed("iteration count too large"));
        }

        let (client_key, server_key) = match &self.credentials {
            Credentials::Password(p) => {
                let salted = scram_common::salted_password(p, &salt, iterations);
                (
                    scram_common::client_key(&salted),
                    scram_common::server_key(&salted),
                )
            }
            Credentials::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };
        let stored_key = scram_common::sha256(&client_key);
        // "biws" = base64("n,,"), the gs2 header we sent.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof = scram_common::xor(&client_key, &client_signature);
        let server_signature = hmac_sha256(&server_key, auth_message.as_bytes());
        self.state = State::SentClientFinal { server_signature };
        Ok(format!("{without_proof},p={}", b64_encode(&proof)).into_bytes())
    }

    /// Verifies the server signature in the server-final-message; an "e=" message is an error.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let State::SentClientFinal { server_signature } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = message_str(data)?;
        if msg.starts_with("e=") {
            return Err(server_error(msg));
        }
        let mut attrs = msg.split(',');
        let verifier = expect_attr(&mut attrs, 'v', "missing server signature")?;
        if attrs.any(|a| split_attr(a).is_none()) {
            return Err(ScramError::Malformed("invalid attribute"));
        }
        let verifier = b64_decode(verifier).ok_or(ScramError::Malformed("invalid base64 in v="))?;
        // A wrong signature means the server does not know our secret: treat it like a failed login.
        if !ct_eq(&verifier, &server_signature) {
            return Err(ScramError::BadProof);
        }
        Ok(())
    }
}

/// Maps a server-error ("e=...") to our error type: channel-binding problems keep their meaning, everything
/// else (invalid-proof, unknown-user, ...) is an authentication failure.
fn server_error(msg: &str) -> ScramError {
    let reason = msg.trim_start_matches("e=");
    if reason.contains("channel-binding") || reason.contains("channel-bindings") {
        ScramError::ChannelBinding
    } else {
        ScramError::BadProof
    }
}
