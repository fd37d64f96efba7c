//! md5 secrets and responses, cleartext verification against every secret kind, Debug hygiene.

use super::super::{Secret, md5_response, md5_secret, verify_md5, verify_plain};
use md5::{Digest, Md5};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn md5_secret_known_value() {
    let secret = md5_secret("postgres", "secret");
    // Computed independently: md5 over the concatenation "secret" || "postgres".
    let independent: [u8; 16] = Md5::digest(b"secretpostgres").into();
    assert_eq!(secret, independent);
    // What PostgreSQL stores in pg_authid for this user/password (md5sum of "secretpostgres", computed outside Rust).
    assert_eq!(
        format!("md5{}", hex(&secret)),
        "md553f48b7c4b76a86ce72276c5755f217d"
    );
    assert_eq!(
        format!("md5{}", hex(&secret)),
        postgres_protocol::password::md5(b"secret", "postgres")
    );
}

#[test]
fn md5_response_matches_definition() {
    let secret = md5_secret("postgres", "secret");
    let salt = [0x01, 0x02, 0x03, 0x04];
    let mut input = hex(&secret).into_bytes();
    input.extend_from_slice(&salt);
    let expected = format!("md5{}", hex(&Md5::digest(&input)));
    let got = md5_response(&secret, salt);
    assert_eq!(got, expected);
    assert_eq!(got.len(), 35);
    assert!(
        got[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[test]
fn verify_md5_plain_and_md5_secrets() {
    let salt = [9, 8, 7, 6];
    let resp = md5_response(&md5_secret("alice", "pw"), salt);
    let plain = Secret::Plain("pw".into());
    let md5 = Secret::parse(&format!("md5{}", hex(&md5_secret("alice", "pw"))));
    assert!(matches!(md5, Secret::Md5(_)));
    for s in [&plain, &md5] {
        assert!(verify_md5(s, "alice", salt, resp.as_bytes()));
        // With the PasswordMessage's NUL terminator.
        let mut nul = resp.clone().into_bytes();
        nul.push(0);
        assert!(verify_md5(s, "alice", salt, &nul));
        assert!(!verify_md5(s, "alice", [0; 4], resp.as_bytes()));
        assert!(!verify_md5(s, "alice", salt, &resp.as_bytes()[..34]));
        assert!(!verify_md5(s, "alice", salt, b""));
        assert!(!verify_md5(s, "alice", salt, &[0xff; 35]));
    }
    // A Plain secret is hashed with the user name, so another user's response does not match.
    assert!(!verify_md5(&plain, "bob", salt, resp.as_bytes()));
    let scram = Secret::Scram(Secret::scram_from_password("pw", b"salt", 1));
    assert!(!verify_md5(&scram, "alice", salt, resp.as_bytes()));
    // Empty stored passwords never match, even an md5 of the empty password.
    let empty = md5_response(&md5_secret("alice", ""), salt);
    assert!(!verify_md5(
        &Secret::Plain(String::new()),
        "alice",
        salt,
        empty.as_bytes()
    ));
}

#[test]
fn verify_plain_all_kinds() {
    let plain = Secret::Plain("hunter2".into());
    let md5 = Secret::Md5(md5_secret("bob", "hunter2"));
    let scram = Secret::Scram(Secret::scram_from_password(
        "hunter2",
        b"0123456789abcdef",
        64,
    ));
    for s in [&plain, &md5, &scram] {
        assert!(verify_plain(s, "bob", b"hunter2"), "{s:?}");
        assert!(verify_plain(s, "bob", b"hunter2\0"), "{s:?}");
        assert!(!verify_plain(s, "bob", b"hunter3"), "{s:?}");
        assert!(!verify_plain(s, "bob", b"hunter"), "{s:?}");
        assert!(!verify_plain(s, "bob", b""), "{s:?}");
        assert!(!verify_plain(s, "bob", &[0xff, 0xfe]), "{s:?}");
    }
    // Md5 depends on the user name; Plain and Scram do not.
    assert!(!verify_plain(&md5, "alice", b"hunter2"));
    assert!(verify_plain(&scram, "alice", b"hunter2"));
    assert!(!verify_plain(&Secret::Plain(String::new()), "bob", b""));
    // A SCRAM secret with the right StoredKey but a wrong ServerKey must not verify.
    let Secret::Scram(mut bad) = scram.clone() else {
        unreachable!()
    };
    bad.server_key[0] ^= 1;
    assert!(!verify_plain(&Secret::Scram(bad), "bob", b"hunter2"));
}

#[test]
fn debug_output_has_no_secrets() {
    let plain = Secret::Plain("TopSecretPassword".into());
    let md5 = Secret::Md5(md5_secret("u", "TopSecretPassword"));
    let scram = Secret::scram_from_password("TopSecretPassword", b"NaClNaClNaCl", 16);
    assert_eq!(format!("{plain:?}"), "Secret::Plain(..)");
    assert_eq!(format!("{md5:?}"), "Secret::Md5(..)");
    let text = format!("{:?} {scram:?}", Secret::Scram(scram.clone()));
    assert!(!text.contains("TopSecret"));
    assert!(!text.contains("NaCl"));
    assert!(!text.contains(&format!("{:?}", scram.stored_key[0..4].to_vec())));
    assert!(text.contains("iterations: 16"));
}
