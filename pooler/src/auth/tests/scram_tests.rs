//! SCRAM-SHA-256 happy paths: RFC 7677 vector, round trips, pass-through, interop with postgres-protocol.

use super::super::{ScramClient, ScramError, ScramSecret, ScramServer, Secret};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_secret() -> ScramSecret {
    let salt = STANDARD.decode(RFC_SALT).unwrap();
    Secret::scram_from_password("pencil", &salt, 4096)
}

#[test]
fn rfc7677_client() {
    let mut c = ScramClient::with_password_user_nonce("pencil", "user", RFC_CLIENT_NONCE);
    assert_eq!(c.client_first(), RFC_CLIENT_FIRST.as_bytes());
    let fin = c.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(fin).unwrap(), RFC_CLIENT_FINAL);
    c.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
}

#[test]
fn rfc7677_server() {
    let mut s = ScramServer::with_server_nonce(rfc_secret(), RFC_SERVER_NONCE);
    let first = s
        .client_first("SCRAM-SHA-256", RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(String::from_utf8(first).unwrap(), RFC_SERVER_FIRST);
    let fin = s.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(fin).unwrap(), RFC_SERVER_FINAL);
    assert!(s.client_key().is_some());
}

#[test]
fn rfc7677_server_rejects_tampered_signature_on_client() {
    let mut c = ScramClient::with_password_user_nonce("pencil", "user", RFC_CLIENT_NONCE);
    c.client_first();
    c.server_first(RFC_SERVER_FIRST.as_bytes()).unwrap();
    let bad = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(c.server_final(bad.as_bytes()), Err(ScramError::BadProof));
}

/// Runs a whole exchange; returns the server (for client_key) or the first error.
fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> Result<(), ScramError> {
    let first = server.client_first("SCRAM-SHA-256", &client.client_first())?;
    let fin = client.server_first(&first)?;
    let server_final = server.client_final(&fin)?;
    client.server_final(&server_final)
}

#[test]
fn round_trip_plain_secret() {
    let secret = Secret::Plain("correct horse".into());
    let mut server = ScramServer::new(&secret).unwrap();
    exchange(
        &mut ScramClient::with_password("correct horse"),
        &mut server,
    )
    .unwrap();
    assert!(server.client_key().is_some());
}

#[test]
fn round_trip_scram_secret() {
    let secret = Secret::Scram(Secret::scram_from_password("correct horse", b"salty", 4096));
    let mut server = ScramServer::new(&secret).unwrap();
    exchange(
        &mut ScramClient::with_password("correct horse"),
        &mut server,
    )
    .unwrap();
}

#[test]
fn wrong_password_is_bad_proof() {
    for secret in [
        Secret::Plain("right".into()),
        Secret::Scram(Secret::scram_from_password("right", b"salty", 4096)),
    ] {
        let mut server = ScramServer::new(&secret).unwrap();
        let r = exchange(&mut ScramClient::with_password("wrong"), &mut server);
        assert_eq!(r, Err(ScramError::BadProof));
        assert_eq!(server.client_key(), None);
    }
}

#[test]
fn md5_secret_cannot_do_scram() {
    assert!(ScramServer::new(&Secret::Md5([0; 16])).is_none());
}

#[test]
fn empty_plain_password_always_fails() {
    let mut server = ScramServer::new(&Secret::Plain(String::new())).unwrap();
    let r = exchange(&mut ScramClient::with_password(""), &mut server);
    assert_eq!(r, Err(ScramError::BadProof));
}

#[test]
fn mock_exchange_fails_with_stable_salt() {
    let first = |user: &str| {
        let mut s = ScramServer::mock(user);
        let msg = s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
        let msg = String::from_utf8(msg).unwrap();
        msg.split(',').nth(1).unwrap().to_owned()
    };
    assert_eq!(first("ghost"), first("ghost"));
    assert_ne!(first("ghost"), first("phantom"));
    let mut s = ScramServer::mock("ghost");
    let r = exchange(&mut ScramClient::with_password("anything"), &mut s);
    assert_eq!(r, Err(ScramError::BadProof));
}

#[test]
fn pass_through_with_recovered_client_key() {
    // The auth file holds only the SCRAM secret; PostgreSQL holds the same secret.
    let secret = Secret::scram_from_password("s3cret", b"pg-salt-16-bytes", 4096);
    let mut front = ScramServer::new(&Secret::Scram(secret.clone())).unwrap();
    exchange(&mut ScramClient::with_password("s3cret"), &mut front).unwrap();
    let client_key = front.client_key().unwrap();
    assert_eq!(
        super::super::scram_common::sha256(&client_key),
        secret.stored_key
    );

    let mut backend = ScramServer::new(&Secret::Scram(secret.clone())).unwrap();
    let mut upstream = ScramClient::with_keys(client_key, secret.server_key);
    exchange(&mut upstream, &mut backend).unwrap();

    // With a wrong ServerKey the login itself works but the server's signature does not verify.
    let mut backend = ScramServer::new(&Secret::Scram(secret.clone())).unwrap();
    let mut bad_sk = secret.server_key;
    bad_sk[0] ^= 0x80;
    let r = exchange(
        &mut ScramClient::with_keys(client_key, bad_sk),
        &mut backend,
    );
    assert_eq!(r, Err(ScramError::BadProof));
    assert!(backend.client_key().is_some());
}

#[test]
fn postgres_protocol_client_against_our_server() {
    let pp_secret = postgres_protocol::password::scram_sha_256(b"interop pw");
    let parsed = Secret::parse(&pp_secret);
    let Secret::Scram(ref scram) = parsed else {
        panic!("not parsed as SCRAM")
    };
    assert_eq!(scram.to_secret_string(), pp_secret);
    for secret in [parsed.clone(), Secret::Plain("interop pw".into())] {
        for cb in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
            let mut server = ScramServer::new(&secret).unwrap();
            let mut client = ScramSha256::new(b"interop pw", cb);
            let first = server
                .client_first("SCRAM-SHA-256", client.message())
                .unwrap();
            client.update(&first).unwrap();
            let fin = server.client_final(client.message()).unwrap();
            client.finish(&fin).unwrap();
        }
        let mut server = ScramServer::new(&secret).unwrap();
        let mut client = ScramSha256::new(b"not it", ChannelBinding::unsupported());
        let first = server
            .client_first("SCRAM-SHA-256", client.message())
            .unwrap();
        client.update(&first).unwrap();
        assert_eq!(
            server.client_final(client.message()),
            Err(ScramError::BadProof)
        );
    }
}

#[test]
fn our_secret_matches_postgres_protocol_format() {
    let s = Secret::scram_from_password("pw", &[7; 16], 4096);
    let text = s.to_secret_string();
    assert!(text.starts_with("SCRAM-SHA-256$4096:BwcHBwcHBwcHBwcHBwcHBw==$"));
    assert_eq!(Secret::parse(&text), Secret::Scram(s));
}

#[test]
fn mechanisms_list() {
    assert_eq!(ScramServer::mechanisms(), b"SCRAM-SHA-256\0\0");
}

#[test]
fn nonce_properties() {
    let mut c = ScramClient::with_password("x");
    let first = String::from_utf8(c.client_first()).unwrap();
    let nonce = first.strip_prefix("n,,n=,r=").unwrap();
    assert_eq!(STANDARD.decode(nonce).unwrap().len(), 24);
    let mut s = ScramServer::new(&Secret::Plain("x".into())).unwrap();
    let sf = String::from_utf8(s.client_first("SCRAM-SHA-256", first.as_bytes()).unwrap()).unwrap();
    let full = sf.strip_prefix("r=").unwrap().split(',').next().unwrap();
    let server_part = full.strip_prefix(nonce).unwrap();
    assert_eq!(STANDARD.decode(server_part).unwrap().len(), 18);
    // Random salt of 16 bytes, 4096 iterations for a Plain secret.
    assert!(sf.ends_with(",i=4096"));
    let salt = sf.split(",s=").nth(1).unwrap().split(',').next().unwrap();
    assert_eq!(STANDARD.decode(salt).unwrap().len(), 16);
}

#[test]
fn server_accepts_extensions_and_ignores_username() {
    let secret = Secret::Scram(Secret::scram_from_password("pw", b"salt", 16));
    let mut s = ScramServer::new(&secret).unwrap();
    assert!(
        s.client_first("SCRAM-SHA-256", b"n,,n=someone=2Celse,r=abc,x=ext")
            .is_ok()
    );
}

#[test]
fn debug_has_no_key_material() {
    let s = ScramServer::new(&Secret::Plain("pw".into())).unwrap();
    let c = ScramClient::with_keys([0xab; 32], [0xcd; 32]);
    let text = format!("{s:?} {c:?}");
    assert!(!text.contains("171") && !text.contains("205") && !text.contains("pw\""));
}
