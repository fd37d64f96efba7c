//! A server ErrorResponse without a SQLSTATE field (from a fake PostgreSQL), at login and after a query: relayed as an error, never a crash, a spin or a leak.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread;
use std::time::Duration;

/// Just enough of PostgreSQL: trust login, then simple queries. Database "refuse" is
/// refused at login, and a query containing "fail" fails, both with an ErrorResponse that
/// has no 'C' (SQLSTATE) field.
struct FakePg {
    port: u16,
    /// Connections open now.
    open: Arc<AtomicI64>,
}

fn message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(p.as_bytes());
        b.push(0);
    }
    b
}

/// ErrorResponse with severity and message only.
fn error_without_sqlstate(out: &mut Vec<u8>, severity: &str, text: &str) {
    let mut body = Vec::new();
    for (code, value) in [(b'S', severity), (b'V', severity), (b'M', text)] {
        body.push(code);
        body.extend_from_slice(&cstrs(&[value]));
    }
    body.push(0);
    message(out, b'E', &body);
}

impl FakePg {
    fn start() -> FakePg {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicI64::new(0));
        let counter = open.clone();
        thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let counter = counter.clone();
                thread::spawn(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(s);
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FakePg { port, open }
    }
}

fn serve(mut s: TcpStream) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
    s.read_exact(&mut body)?;
    let words: Vec<&[u8]> = body
        .get(4..)
        .unwrap_or_default()
        .split(|&b| b == 0)
        .collect();
    let database = words
        .chunks(2)
        .find(|kv| kv[0] == b"database")
        .and_then(|kv| kv.get(1))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let mut out = Vec::new();
    if database.as_deref() == Some("refuse") {
        error_without_sqlstate(&mut out, "FATAL", "fake refusal without a sqlstate");
        return s.write_all(&out);
    }
    message(&mut out, b'R', &0i32.to_be_bytes());
    for (k, v) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        message(&mut out, b'S', &cstrs(&[k, v]));
    }
    message(&mut out, b'K', &[0, 0, 0x10, 0x92, 0, 0, 0, 1]);
    message(&mut out, b'Z', b"I");
    s.write_all(&out)?;
    loop {
        let mut header = [0u8; 5];
        s.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        s.read_exact(&mut body)?;
        let mut out = Vec::new();
        match header[0] {
            b'X' => return Ok(()),
            b'Q' if body.windows(4).any(|w| w == b"fail") => {
                error_without_sqlstate(&mut out, "ERROR", "fake failure without a sqlstate");
            }
            b'Q' if body.starts_with(b"SET") => message(&mut out, b'C', b"SET\0"),
            b'Q' => {
                let mut row = 1i16.to_be_bytes().to_vec();
                row.extend_from_slice(&1i32.to_be_bytes());
                row.push(b'1');
                message(&mut out, b'D', &row);
                message(&mut out, b'C', b"SELECT 1\0");
            }
            _ => continue,
        }
        message(&mut out, b'Z', b"I");
        s.write_all(&out)?;
    }
}

/// SHOW LISTS clients and the fake server's open connections.
fn state(pooler: &Pooler, fake: &FakePg) -> Vec<i64> {
    let n = |list: &str| admin_number(pooler, "SHOW LISTS", "list", list, "items") as i64;
    vec![
        n("used_clients"),
        n("login_clients"),
        fake.open.load(Ordering::SeqCst),
    ]
}

/// A normal client of the fake server works; then, after `bad`, no CPU is used for a
/// second, a normal client still works and the counts are back.
fn case(pooler: &Pooler, fake: &FakePg, name: &str, bad: impl FnOnce()) {
    let normal = || {
        let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, "ok");
        assert_eq!(data_rows(&c.query("SELECT 1")), [[Some("1".to_string())]]);
        c.send(&fe::terminate());
    };
    normal();
    let before = state(pooler, fake);
    bad();
    let t0 = cpu_ticks(pooler.pid());
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pooler.pid()) - t0;
    assert!(used < 5, "{name}: {used} ticks of CPU in the second after");
    normal();
    let mut after = Vec::new();
    let settled = wait_until(Duration::from_secs(3), || {
        after = state(pooler, fake);
        after == before
    });
    assert!(settled, "{name}: before {before:?}, after {after:?}");
}

#[test]
fn server_errors_without_sqlstate_are_relayed() {
    let fake = FakePg::start();
    let cfg = TRUST_TRANSACTION_CONFIG.to_string()
        + &format!(
            "ok = {{ host = \"127.0.0.1\", port = {0} }}\n\
             refuse = {{ host = \"127.0.0.1\", port = {0} }}\n",
            fake.port
        );
    let pooler = Pooler::start(&cfg);
    case(&pooler, &fake, "query error without SQLSTATE", || {
        let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, "ok");
        let reply = c.query("SELECT fail");
        let err = reply.iter().find(|m| m.is_error()).cloned();
        let err = err.unwrap_or_else(|| panic!("no error relayed: {reply:?}"));
        assert_eq!(err.field(b'S').as_deref(), Some("ERROR"), "{err:?}");
        assert_eq!(
            err.field(b'M').as_deref(),
            Some("fake failure without a sqlstate")
        );
        // The session goes on.
        assert_eq!(data_rows(&c.query("SELECT 1")), [[Some("1".to_string())]]);
        c.send(&fe::terminate());
    });
    case(&pooler, &fake, "login refusal without SQLSTATE", || {
        let mut c = RawClient::connect(pooler.port);
        c.startup(TRUST_USER, "refuse", &[]);
        let mut msgs = Vec::new();
        while let Ok(Some(m)) = c.try_recv(Duration::from_secs(5)) {
            msgs.push(m);
        }
        let err = msgs.iter().find(|m| m.is_error());
        let err = err.unwrap_or_else(|| panic!("no error: {msgs:?}"));
        assert_eq!(err.field(b'S').as_deref(), Some("FATAL"), "{err:?}");
        // Some SQLSTATE the client can act on, and the server's own words.
        assert!(err.field(b'C').is_some_and(|c| c.len() == 5), "{err:?}");
        assert_eq!(
            err.field(b'M').as_deref(),
            Some("fake refusal without a sqlstate")
        );
    });
}
