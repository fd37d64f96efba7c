//! SCRAM-SHA-256 hostile inputs: every malformed message must be an error value, never a panic.

use super::super::{ScramClient, ScramError, ScramServer, Secret};

fn server() -> ScramServer {
    ScramServer::new(&Secret::Scram(Secret::scram_from_password(
        "pw", b"salt", 2,
    )))
    .unwrap()
}

fn client_first_err(data: &[u8]) -> ScramError {
    server().client_first("SCRAM-SHA-256", data).unwrap_err()
}

#[test]
fn client_first_malformed() {
    let long_nonce = format!("n,,n=,r={}", "a".repeat(2000));
    let huge = format!("n,,n=,r={}", "a".repeat(9000));
    let cases: &[&[u8]] = &[
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=,r=abc",
        b"nn,,n=,r=abc",
        b"n,a=admin,n=,r=abc",
        b"n,,r=abc",
        b"n,,n=,",
        b"n,,n=",
        b"n,,n=,r=",
        b"n,,n=,r=ab,c",
        b"n,,n=,r=a b",
        b"n,,n=,r=ab\x01",
        b"n,,n=,r=\xc3\xa9",
        b"n,,m=ext,n=,r=abc",
        b"n,,n=,r=abc,m=x",
        b"n,,n=,r=abc,",
        b"n,,n=,r=abc,=x",
        b"n,,n=,r=abc,1=x",
        b"n,,n=,r=abc,p=x",
        b"n,,r=abc,n=",
        b"n,,nope",
        b"n,,n=,r=abc\xff",
        b"\xff\xfe\xfd",
        b",,,,,,",
        b"y",
        b"y,,n=,x=1",
        long_nonce.as_bytes(),
        huge.as_bytes(),
    ];
    for &c in cases {
        assert!(
            matches!(client_first_err(c), ScramError::Malformed(_)),
            "{:?}",
            String::from_utf8_lossy(c)
        );
    }
    assert_eq!(
        client_first_err(b"p=tls-server-end-point,,n=,r=abc"),
        ScramError::ChannelBinding
    );
    let mut s = server();
    assert_eq!(
        s.client_first("SCRAM-SHA-256-PLUS", b"n,,n=,r=abc"),
        Err(ScramError::ChannelBinding)
    );
    let mut s = server();
    assert!(matches!(
        s.client_first("SCRAM-SHA-1", b"n,,n=,r=abc"),
        Err(ScramError::Malformed(_))
    ));
    // A 1024-byte nonce is still fine.
    let ok = format!("n,,n=,r={}", "a".repeat(1024));
    assert!(
        server()
            .client_first("SCRAM-SHA-256", ok.as_bytes())
            .is_ok()
    );
}

/// A server that has answered client-first "n,,n=,r=cnonce", plus the combined nonce.
fn server_after_first(gs2: &str) -> (ScramServer, String) {
    let mut s = server();
    let first = s
        .client_first("SCRAM-SHA-256", format!("{gs2}n=,r=cnonce").as_bytes())
        .unwrap();
    let first = String::from_utf8(first).unwrap();
    let nonce = first[2..].split(',').next().unwrap().to_owned();
    (s, nonce)
}

/// Builds a client-final message from (combined nonce, a well-formed proof).
type MakeFinal = fn(&str, &str) -> String;

#[test]
fn client_final_malformed() {
    let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cases: Vec<(&str, MakeFinal, Option<ScramError>)> = vec![
        ("empty", |_, _| String::new(), None),
        ("no commas", |_, _| "garbage".into(), None),
        ("no proof", |n, _| format!("c=biws,r={n}"), None),
        ("no c", |n, p| format!("r={n},p={p}"), None),
        ("no r", |_, p| format!("c=biws,p={p}"), None),
        ("order", |n, p| format!("r={n},c=biws,p={p}"), None),
        ("cbind y", |n, p| format!("c=eSws,r={n},p={p}"), None),
        ("cbind bad b64", |n, p| format!("c=b!ws,r={n},p={p}"), None),
        (
            "cbind p",
            |n, p| format!("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={n},p={p}"),
            None,
        ),
        (
            "wrong nonce",
            |_, p| format!("c=biws,r=cnonceXYZ,p={p}"),
            None,
        ),
        (
            "client nonce only",
            |_, p| format!("c=biws,r=cnonce,p={p}"),
            None,
        ),
        (
            "nonce prefix",
            |n, p| format!("c=biws,r={},p={p}", &n[..n.len() - 1]),
            None,
        ),
        ("nonce longer", |n, p| format!("c=biws,r={n}x,p={p}"), None),
        (
            "huge nonce",
            |_, p| format!("c=biws,r={},p={p}", "a".repeat(2000)),
            None,
        ),
        (
            "proof not last",
            |n, p| format!("c=biws,r={n},p={p},x=1"),
            None,
        ),
        (
            "two proofs",
            |n, p| format!("c=biws,r={n},p={p},p={p}"),
            None,
        ),
        ("m ext", |n, p| format!("c=biws,r={n},m=1,p={p}"), None),
        ("bad ext", |n, p| format!("c=biws,r={n},junk,p={p}"), None),
        ("bad b64 proof", |n, _| format!("c=biws,r={n},p=!!!!"), None),
        ("b64 no pad", |n, _| format!("c=biws,r={n},p=AAA"), None),
        (
            "empty proof",
            |n, _| format!("c=biws,r={n},p="),
            Some(ScramError::BadProof),
        ),
        (
            "31 bytes",
            |n, _| format!("c=biws,r={n},p={}", p31_of()),
            Some(ScramError::BadProof),
        ),
        (
            "33 bytes",
            |n, _| format!("c=biws,r={n},p={}", p33_of()),
            Some(ScramError::BadProof),
        ),
        (
            "wrong proof",
            |n, p| format!("c=biws,r={n},p={p}"),
            Some(ScramError::BadProof),
        ),
        (
            "trailing comma",
            |n, p| format!("c=biws,r={n},p={p},"),
            None,
        ),
        (
            "9000 bytes",
            |n, p| format!("c=biws,r={n},x={},p={p}", "a".repeat(9000)),
            None,
        ),
    ];
    for (name, make, expected) in cases {
        let (mut s, nonce) = server_after_first("n,,");
        let msg = make(&nonce, proof);
        let err = s.client_final(msg.as_bytes()).unwrap_err();
        match expected {
            Some(e) => assert_eq!(err, e, "{name}"),
            None => assert!(matches!(err, ScramError::Malformed(_)), "{name}: {err:?}"),
        }
        assert_eq!(s.client_key(), None, "{name}");
        // The exchange is over after an error.
        assert_eq!(
            s.client_final(msg.as_bytes()),
            Err(ScramError::OutOfOrder),
            "{name}"
        );
    }
    // "y,," must be echoed as eSws, not biws.
    let (mut s, nonce) = server_after_first("y,,");
    let err = s.client_final(format!("c=biws,r={nonce},p={proof}").as_bytes());
    assert!(matches!(err, Err(ScramError::Malformed(_))));
    let (mut s, _) = server_after_first("n,,");
    assert!(matches!(
        s.client_final(b"c=biws,r=\xff\xfe,p=AAAA"),
        Err(ScramError::Malformed(_))
    ));
}

fn p31_of() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([0u8; 31])
}

fn p33_of() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([0u8; 33])
}

#[test]
fn server_out_of_order() {
    let mut s = server();
    assert_eq!(
        s.client_final(b"c=biws,r=x,p=AAAA"),
        Err(ScramError::OutOfOrder)
    );
    let mut s = server();
    s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
    assert_eq!(
        s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc"),
        Err(ScramError::OutOfOrder)
    );
    // After a malformed first message the exchange cannot be resumed either.
    let mut s = server();
    assert!(s.client_first("SCRAM-SHA-256", b"").is_err());
    assert_eq!(
        s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc"),
        Err(ScramError::OutOfOrder)
    );
}

/// A client that has sent "n,,n=,r=NONCE".
fn client_after_first() -> ScramClient {
    let mut c = ScramClient::with_password_user_nonce("pw", "", "NONCE");
    c.client_first();
    c
}

#[test]
fn client_server_first_malformed() {
    let big = format!("r=NONCEx,s=c2FsdA==,i=1,x={}", "a".repeat(9000));
    let cases: &[&[u8]] = &[
        b"",
        b"garbage",
        b"r=NONCEsrv",
        b"r=NONCEsrv,s=c2FsdA==",
        b"s=c2FsdA==,r=NONCEsrv,i=1",
        b"r=NONCEsrv,i=1,s=c2FsdA==",
        b"r=NONCE,s=c2FsdA==,i=1",
        b"r=OTHERsrv,s=c2FsdA==,i=1",
        b"r=NONC,s=c2FsdA==,i=1",
        b"r=NONCE s,s=c2FsdA==,i=1",
        b"r=NONCEsrv,s=!!!,i=1",
        b"r=NONCEsrv,s=,i=1",
        b"r=NONCEsrv,s=c2FsdA==,i=0",
        b"r=NONCEsrv,s=c2FsdA==,i=-1",
        b"r=NONCEsrv,s=c2FsdA==,i=+1",
        b"r=NONCEsrv,s=c2FsdA==,i=",
        b"r=NONCEsrv,s=c2FsdA==,i=99999999999",
        // Fits in u32 but would stall the worker thread deriving the key.
        b"r=NONCEsrv,s=c2FsdA==,i=4000000000",
        b"r=NONCEsrv,s=c2FsdA==,i=1048577",
        b"r=NONCEsrv,s=c2FsdA==,i=1x",
        b"r=NONCEsrv,s=c2FsdA==,i=1,",
        b"r=NONCEsrv,s=c2FsdA==,i=1,m=x",
        b"m=x,r=NONCEsrv,s=c2FsdA==,i=1",
        b"r=NONCEsrv\xff,s=c2FsdA==,i=1",
        big.as_bytes(),
    ];
    for &c in cases {
        let err = client_after_first().server_first(c).unwrap_err();
        assert!(
            matches!(err, ScramError::Malformed(_)),
            "{:?}",
            String::from_utf8_lossy(c)
        );
    }
    let err = client_after_first()
        .server_first(b"e=other-error")
        .unwrap_err();
    assert_eq!(err, ScramError::BadProof);
    // Accepted: extensions after i=.
    assert!(
        client_after_first()
            .server_first(b"r=NONCEsrv,s=c2FsdA==,i=1,x=y")
            .is_ok()
    );
}

#[test]
fn client_server_final_malformed() {
    let make = || {
        let mut c = client_after_first();
        c.server_first(b"r=NONCEsrv,s=c2FsdA==,i=1").unwrap();
        c
    };
    let good_len_wrong = format!("v={}", p31_of());
    let cases: Vec<(&[u8], ScramError)> = vec![
        (b"", ScramError::Malformed("")),
        (b"v=", ScramError::BadProof),
        (b"v=!!", ScramError::Malformed("")),
        (b"x=abc", ScramError::Malformed("")),
        (b"v=AAAA,junk", ScramError::Malformed("")),
        (b"\xff", ScramError::Malformed("")),
        (good_len_wrong.as_bytes(), ScramError::BadProof),
        (
            b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ScramError::BadProof,
        ),
        (b"e=invalid-proof", ScramError::BadProof),
        (b"e=channel-bindings-dont-match", ScramError::ChannelBinding),
    ];
    for (msg, expected) in cases {
        let err = make().server_final(msg).unwrap_err();
        match expected {
            ScramError::Malformed(_) => assert!(matches!(err, ScramError::Malformed(_)), "{err:?}"),
            e => assert_eq!(err, e, "{:?}", String::from_utf8_lossy(msg)),
        }
    }
    let huge = vec![b'v'; 9000];
    assert!(matches!(
        make().server_final(&huge),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn client_out_of_order() {
    let mut c = ScramClient::with_password("pw");
    assert_eq!(
        c.server_first(b"r=x,s=c2FsdA==,i=1"),
        Err(ScramError::OutOfOrder)
    );
    assert_eq!(c.server_final(b"v=AAAA"), Err(ScramError::OutOfOrder));
    let mut c = client_after_first();
    assert_eq!(c.server_final(b"v=AAAA"), Err(ScramError::OutOfOrder));
}

/// Tiny deterministic PRNG so the mutation test is reproducible without extra crates.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    for _ in 0..=rng.below(4) {
        let alphabet = b",=nyprcsivxm\xff\x00aA+/";
        match rng.below(4) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m.remove(i);
            }
            1 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, alphabet[rng.below(alphabet.len())]);
            }
            2 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = alphabet[rng.below(alphabet.len())];
            }
            _ => m.truncate(rng.below(m.len() + 1)),
        }
    }
    m
}

#[test]
fn mutation_fuzz_never_panics() {
    let secret = Secret::Scram(Secret::scram_from_password("pw", b"salt", 1));
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        // Server role: mutate each client message of an otherwise honest exchange.
        let mut client = ScramClient::with_password("pw");
        let mut s = ScramServer::new(&secret).unwrap();
        let cf = mutate(&mut rng, &client.client_first());
        if let Ok(sf) = s.client_first("SCRAM-SHA-256", &cf)
            && let Ok(fin) = client.server_first(&sf)
        {
            let _ = s.client_final(&mutate(&mut rng, &fin));
        }
        // Client role: mutate each server message.
        let mut client = ScramClient::with_password("pw");
        let mut s = ScramServer::new(&secret).unwrap();
        if let Ok(sf) = s.client_first("SCRAM-SHA-256", &client.client_first())
            && let Ok(fin) = client.server_first(&mutate(&mut rng, &sf))
            && let Ok(sfin) = s.client_final(&fin)
        {
            let _ = client.server_final(&mutate(&mut rng, &sfin));
        }
    }
}
