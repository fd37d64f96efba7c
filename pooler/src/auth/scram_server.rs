//! SCRAM-SHA-256 server role: authenticates a client against a stored secret (RFC 5802/7677, PostgreSQL dialect).

use std::fmt;
use std::sync::OnceLock;

use super::scram_common::{
    self, DEFAULT_ITERATIONS, DEFAULT_SALT_LEN, Key, MAX_NONCE_LEN, MECHANISM, b64_decode,
    b64_encode, ct_eq, expect_attr, hmac_sha256, is_printable_nonce, message_str, split_attr,
};
use super::{ScramError, ScramSecret, Secret};

/// Raw bytes of randomness in the server's part of the nonce (PostgreSQL uses 18 too).
const SERVER_NONCE_BYTES: usize = 18;

/// Server side of one SCRAM-SHA-256 exchange: `client_first`, then `client_final`. Any error ends the exchange.
pub struct ScramServer {
    secret: ScramSecret,
    /// Set for exchanges that must fail whatever the client sends (empty password, unknown user): the client still
    /// sees a normal-looking exchange and learns nothing about why.
    doomed: bool,
    /// Injected by tests; otherwise random.
    server_nonce: Option<String>,
    state: State,
    client_key: Option<Key>,
}

enum State {
    Initial,
    SentServerFirst {
        gs2_header: String,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Finished,
}

// No key material in Debug output.
impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentServerFirst { .. } => "sent server-first",
            State::Finished => "finished",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// `secret`: Plain (a SCRAM secret is derived with a random 16-byte salt and 4096 iterations, so the client
    /// still does real SCRAM) or Scram. Md5 secrets cannot do SCRAM: None. An empty Plain password yields an
    /// exchange that always ends in BadProof (PostgreSQL and PgBouncer never accept empty passwords).
    pub fn new(secret: &Secret) -> Option<ScramServer> {
        let (secret, doomed) = match secret {
            Secret::Plain(p) => {
                let salt = scram_common::random_bytes::<DEFAULT_SALT_LEN>();
                let derived = Secret::scram_from_password(p, &salt, DEFAULT_ITERATIONS);
                (derived, p.is_empty())
            }
            Secret::Scram(s) => (s.clone(), false),
            Secret::Md5(_) => return None,
        };
        Some(ScramServer::build(secret, doomed, None))
    }

    /// An exchange for a user that does not exist (or must not log in): it looks like a normal one, with a salt
    /// that is stable per user name within this process, and always ends in BadProof. Lets callers avoid revealing
    /// which user names exist, as PostgreSQL's mock authentication does.
    pub fn mock(user: &str) -> ScramServer {
        static MOCK_KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = MOCK_KEY.get_or_init(scram_common::random_bytes::<32>);
        let salt = hmac_sha256(key, user.as_bytes())[..DEFAULT_SALT_LEN].to_vec();
        let secret = ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        ScramServer::build(secret, true, None)
    }

    /// Test hook: fixed server nonce (so RFC test vectors can be reproduced).
    #[cfg(test)]
    pub(crate) fn with_server_nonce(secret: ScramSecret, server_nonce: &str) -> ScramServer {
        ScramServer::build(secret, false, Some(server_nonce.to_owned()))
    }

    fn build(secret: ScramSecret, doomed: bool, server_nonce: Option<String>) -> ScramServer {
        ScramServer {
            secret,
            doomed,
            server_nonce,
            state: State::Initial,
            client_key: None,
        }
    }

    /// Body of AuthenticationSASL: the mechanism list "SCRAM-SHA-256\0\0".
    pub fn mechanisms() -> &'static [u8] {
        b"SCRAM-SHA-256\0\0"
    }

    /// Takes the SASLInitialResponse's mechanism and data (client-first-message); returns the server-first-message
    /// for AuthenticationSASLContinue.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        // Whatever happens next, this exchange cannot be restarted: errors leave it Finished.
        if !matches!(
            std::mem::replace(&mut self.state, State::Finished),
            State::Initial
        ) {
            return Err(ScramError::OutOfOrder);
        }
        if mechanism != MECHANISM {
            return Err(if mechanism == "SCRAM-SHA-256-PLUS" {
                ScramError::ChannelBinding
            } else {
                ScramError::Malformed("unsupported SASL mechanism")
            });
        }
        let msg = message_str(data)?;
        let (gs2_header, bare) = split_gs2_header(msg)?;
        let client_nonce = parse_client_first_bare(bare)?;

        let server_nonce = match &self.server_nonce {
            Some(n) => n.clone(),
            None => scram_common::random_nonce(SERVER_NONCE_BYTES),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64_encode(&self.secret.salt),
            self.secret.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            gs2_header: gs2_header.to_owned(),
            nonce,
            client_first_bare: bare.to_owned(),
            server_first,
        };
        Ok(out)
    }

    /// Takes the client-final-message (SASLResponse data); returns the server-final-message ("v=...") for
    /// AuthenticationSASLFinal. On success the recovered ClientKey is available through `client_key()`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentServerFirst {
            gs2_header,
            nonce,
            client_first_bare,
            server_first,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = message_str(data)?;
        // The proof is the last attribute; everything before ",p=" is client-final-message-without-proof.
        let (without_proof, proof_b64) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;

        let mut attrs = without_proof.split(',');
        let cbind = expect_attr(&mut attrs, 'c', "missing channel-binding attribute")?;
        let cbind = b64_decode(cbind).ok_or(ScramError::Malformed("invalid base64 in c="))?;
        // Without channel binding, c= must echo the gs2 header the client sent first (so a downgrade is caught).
        if cbind != gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel-binding attribute does not match",
            ));
        }
        let client_nonce = expect_attr(&mut attrs, 'r', "missing nonce")?;
        if !ct_eq(client_nonce.as_bytes(), nonce.as_bytes()) {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        check_extensions(attrs)?;

        if proof_b64.contains(',') {
            return Err(ScramError::Malformed("proof must be the last attribute"));
        }
        let proof = b64_decode(proof_b64).ok_or(ScramError::Malformed("invalid base64 in p="))?;
        let proof: Key = proof.try_into().map_err(|_| ScramError::BadProof)?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_sha256(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = scram_common::xor(&proof, &client_signature);
        let matches = ct_eq(&scram_common::sha256(&client_key), &self.secret.stored_key);
        if !matches || self.doomed {
            return Err(ScramError::BadProof);
        }
        self.client_key = Some(client_key);
        let server_signature = hmac_sha256(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", b64_encode(&server_signature)).into_bytes())
    }

    /// The ClientKey recovered from a successful exchange (for SCRAM pass-through to PostgreSQL).
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.client_key
    }
}

/// Splits off the gs2 header ("n,," or "y,,"); returns (header, client-first-message-bare).
fn split_gs2_header(msg: &str) -> Result<(&str, &str), ScramError> {
    match msg.as_bytes().first() {
        Some(b'p') => return Err(ScramError::ChannelBinding),
        Some(b'n' | b'y') => {}
        _ => return Err(ScramError::Malformed("invalid channel-binding flag")),
    }
    if msg.as_bytes().get(1) != Some(&b',') {
        return Err(ScramError::Malformed("invalid channel-binding flag"));
    }
    // Authorization identities (a=...) are refused, as PostgreSQL does: the user comes from the startup packet.
    if msg.as_bytes().get(2) != Some(&b',') {
        return Err(ScramError::Malformed(
            "authorization identity is not supported",
        ));
    }
    Ok(msg.split_at(3))
}

/// Parses client-first-message-bare ("n=<user>,r=<nonce>[,ext...]"); returns the client nonce. The user name is
/// ignored: PostgreSQL takes it from the startup packet too.
fn parse_client_first_bare(bare: &str) -> Result<&str, ScramError> {
    let mut attrs = bare.split(',');
    expect_attr(&mut attrs, 'n', "missing user name")?;
    let nonce = expect_attr(&mut attrs, 'r', "missing nonce")?;
    if nonce.len() > MAX_NONCE_LEN {
        return Err(ScramError::Malformed("nonce too long"));
    }
    if !is_printable_nonce(nonce) {
        return Err(ScramError::Malformed("invalid nonce"));
    }
    check_extensions(attrs)?;
    Ok(nonce)
}

/// Optional extension attributes: each must be well-formed `x=value`; their meaning is ignored (RFC 5802).
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for a in attrs {
        match split_attr(a) {
            Some(('m', _)) => {
                return Err(ScramError::Malformed(
                    "mandatory extensions are not supported",
                ));
            }
            Some(('p', _)) => return Err(ScramError::Malformed("unexpected proof attribute")),
            Some(_) => {}
            None => return Err(ScramError::Malformed("invalid attribute")),
        }
    }
    Ok(())
}
