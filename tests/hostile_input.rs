//! Hostile and malformed client input at byte level: each case is refused promptly, the pooler keeps serving, spins no CPU and leaks nothing.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::Read;
use std::net::Shutdown;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// One pooler under attack, with what "back to normal" means for it.
struct Target {
    pooler: Pooler,
    db: &'static str,
    /// A normal client: logs in, runs a query, leaves (panics if it cannot).
    normal: fn(&Target),
    /// Password of the admin console user "postgres" (None: trust).
    admin_password: Option<&'static str>,
}

/// Rows of an admin console command by column name (psql with a password if needed).
fn admin_table(t: &Target, cmd: &str) -> Vec<HashMap<String, String>> {
    let mut psql = Command::new("psql");
    clear_pg_env(&mut psql);
    psql.args(["-X", "-A", "-q", "-w", "-P", "footer=off", "-d"])
        .arg(t.pooler.connstr("postgres", "pgbouncer"))
        .arg("-c")
        .arg(cmd);
    if let Some(pw) = t.admin_password {
        psql.env("PGPASSWORD", pw);
    }
    let out = run_with_timeout(psql, Duration::from_secs(30)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|k| k.to_string())
                .zip(l.split('|').map(String::from))
                .collect()
        })
        .collect()
}

fn trust_normal(t: &Target) {
    let (mut c, _) = RawClient::login_trust(t.pooler.port, TRUST_USER, t.db);
    let reply = c.query("SELECT 1");
    assert_eq!(data_rows(&reply), [[Some("1".to_string())]], "{reply:?}");
    c.send(&fe::terminate());
}

fn scram_normal(t: &Target) {
    let out = t
        .pooler
        .psql(SCRAM_USER, t.db, Some(SCRAM_PASSWORD), "SELECT 1");
    assert_eq!(out.as_deref(), Ok("1"), "normal SCRAM client");
}

impl Target {
    fn start(config_toml: &str, db: &'static str, normal: fn(&Target)) -> Target {
        Postgres::shared().create_database(db);
        Target {
            pooler: Pooler::start(config_toml),
            db,
            normal,
            admin_password: None,
        }
    }

    /// SHOW LISTS clients, SHOW POOLS counts of the database, its PostgreSQL backends.
    fn state(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for row in admin_table(self, "SHOW LISTS") {
            if matches!(
                row["list"].as_str(),
                "used_clients" | "login_clients" | "pools"
            ) {
                out.push((row["list"].clone(), row["items"].parse().unwrap()));
            }
        }
        let pools = admin_table(self, "SHOW POOLS");
        let row = pools.iter().find(|r| r["database"] == self.db);
        for col in [
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_used",
            "sv_login",
            "sv_idle",
        ] {
            let n = row.map_or(0, |r| r[col].parse().unwrap());
            out.push((col.to_string(), n));
        }
        let backends = Postgres::shared().backend_count(self.db, None);
        out.push(("backends".into(), backends));
        out
    }

    /// Runs one bad client, then checks: no CPU used in the second after, a normal client
    /// is served, and every count is back where it was.
    fn case(&self, name: &str, bad: impl FnOnce(u16)) {
        (self.normal)(self);
        let before = self.state();
        bad(self.pooler.port);
        let pid = self.pooler.pid();
        let t0 = cpu_ticks(pid);
        thread::sleep(Duration::from_secs(1));
        let used = cpu_ticks(pid) - t0;
        assert!(
            used < 5,
            "{name}: the pooler used {used} ticks in the second after"
        );
        (self.normal)(self);
        let mut after = Vec::new();
        let settled = wait_until(Duration::from_secs(3), || {
            after = self.state();
            after == before
        });
        assert!(
            settled,
            "{name}: leaked\n before {before:?}\n after  {after:?}"
        );
    }
}

/// Everything the pooler sends until it closes the connection, which must happen within 3 s.
fn until_closed(c: &mut RawClient, name: &str) -> Vec<Msg> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut msgs = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_recv(left.max(Duration::from_millis(1))) {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => return msgs,
            Err(e) => panic!("{name}: not answered and closed within 3 s ({e}); got {msgs:?}"),
        }
    }
}

/// Before authentication: closed, with nothing but one FATAL 08P01 (or nothing at all).
fn refused_before_auth(c: &mut RawClient, name: &str) {
    let msgs = until_closed(c, name);
    assert!(msgs.len() <= 1, "{name}: {msgs:?}");
    if let Some(m) = msgs.first() {
        assert!(m.is_error(), "{name}: {msgs:?}");
        assert_eq!(m.field(b'S').as_deref(), Some("FATAL"), "{name}: {m:?}");
        assert_eq!(m.field(b'C').as_deref(), Some("08P01"), "{name}: {m:?}");
    }
}

/// After login: a FATAL ErrorResponse with `code`, then the close.
fn fatal_then_closed(c: &mut RawClient, name: &str, code: &str) {
    let msgs = until_closed(c, name);
    let errors: Vec<&Msg> = msgs.iter().filter(|m| m.is_error()).collect();
    assert_eq!(errors.len(), 1, "{name}: {msgs:?}");
    assert_eq!(
        errors[0].field(b'S').as_deref(),
        Some("FATAL"),
        "{name}: {msgs:?}"
    );
    assert_eq!(
        errors[0].field(b'C').as_deref(),
        Some(code),
        "{name}: {msgs:?}"
    );
}

/// An untagged startup-phase packet: `len` as the length field, then `rest`.
fn untagged(len: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(rest);
    out
}

/// A typed message with an arbitrary length field.
fn typed(tag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

const V3: [u8; 4] = 196608u32.to_be_bytes();

fn trust_config(extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5\n",
        &format!(
            "default_pool_size = 5\nmax_packet_size = 4096\nclient_login_timeout = 10\n{extra}\n"
        ),
    )
}

#[test]
fn startup_packet_length_fields() {
    let t = Target::start(&trust_config(""), "hostile_startup", trust_normal);
    for len in [0u32, 3, 4, (1 << 31) + 1] {
        t.case(&format!("startup length {len}"), |port| {
            let mut c = RawClient::connect(port);
            c.send(&untagged(len, &V3));
            refused_before_auth(&mut c, &format!("startup length {len}"));
        });
    }
    // Bigger than PostgreSQL's 10000-byte startup limit, sent in full.
    t.case("startup packet over 10000 bytes", |port| {
        let big = "x".repeat(10_100);
        let mut c = RawClient::connect(port);
        c.send(&fe::startup(
            TRUST_USER,
            t.db,
            &[("application_name", &big)],
        ));
        refused_before_auth(&mut c, "startup packet of 10100+ bytes");
    });
}

/// Over max_packet_size (4096, below PostgreSQL's 10000-byte startup limit): refused on
/// the header, as a typed message over the limit is, not waited for until client_login_timeout.
#[test]
fn startup_length_over_max_packet_size() {
    let t = Target::start(&trust_config(""), "hostile_startup_max", trust_normal);
    t.case("startup length over max_packet_size", |port| {
        let mut c = RawClient::connect(port);
        c.send(&untagged(5000, &V3));
        refused_before_auth(&mut c, "startup length 5000 > max_packet_size 4096");
    });
}

#[test]
fn startup_phase_garbage() {
    let t = Target::start(&trust_config(""), "hostile_garbage", trust_normal);
    t.case("password message before the startup packet", |port| {
        let mut c = RawClient::connect(port);
        c.send(&fe::password("secret"));
        refused_before_auth(&mut c, "PasswordMessage first");
    });
    t.case("truncated startup then EOF", |port| {
        let mut c = RawClient::connect(port);
        let packet = fe::startup(TRUST_USER, t.db, &[]);
        c.send(&packet[..packet.len() / 2]);
        c.stream.shutdown(Shutdown::Write).unwrap();
        refused_before_auth(&mut c, "truncated startup");
    });
    // CVE-2021-3935's shape: the client goes on with TLS (or anything) after the 'N'.
    t.case("TLS bytes after the SSL refusal", |port| {
        let mut c = RawClient::connect(port);
        c.send(&fe::ssl_request());
        let mut n = [0u8; 1];
        c.stream.read_exact(&mut n).unwrap();
        assert_eq!(&n, b"N");
        c.send(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ]);
        refused_before_auth(&mut c, "TLS ClientHello after N");
    });
    t.case("options -c=", |port| {
        let mut c = RawClient::connect(port);
        c.send(&fe::startup(TRUST_USER, t.db, &[("options", "-c=")]));
        refused_before_auth(&mut c, "options -c=");
    });
}

#[test]
fn typed_message_length_fields_and_types_after_login() {
    let t = Target::start(&trust_config(""), "hostile_typed", trust_normal);
    let login = |port| RawClient::login_trust(port, TRUST_USER, t.db).0;
    for len in [0u32, 3, (1 << 31) + 1, 5000] {
        t.case(&format!("Query length {len}"), |port| {
            let mut c = login(port);
            c.send(&typed(b'Q', len, b"SELECT 1\0"));
            fatal_then_closed(&mut c, &format!("Query length {len}"), "08P01");
        });
    }
    // Length 4: a well-framed Query without its string; PostgreSQL answers it.
    t.case("Query length 4", |port| {
        let mut c = login(port);
        c.send(&typed(b'Q', 4, b""));
        let reply = c.recv_until_ready();
        assert!(reply.iter().any(Msg::is_error), "Query length 4: {reply:?}");
        assert_eq!(data_rows(&c.query("SELECT 5")), [[Some("5".to_string())]]);
    });
    for tag in [b'z', 0u8, b'p'] {
        let name = format!("message type {tag:#04x} after login");
        t.case(&name, |port| {
            let mut c = login(port);
            c.send(&typed(tag, 9, b"hello"));
            fatal_then_closed(&mut c, &name, "08P01");
        });
    }
    t.case("truncated Query then EOF", |port| {
        let mut c = login(port);
        c.send(&typed(b'Q', 100, b"SELECT 1"));
        c.stream.shutdown(Shutdown::Write).unwrap();
        until_closed(&mut c, "truncated Query");
    });
}

/// SASLInitialResponse with SCRAM-SHA-256 and `data`, its inner length field being `inner`.
fn sasl_initial(inner: u32, data: &[u8]) -> Vec<u8> {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&inner.to_be_bytes());
    body.extend_from_slice(data);
    typed(b'p', body.len() as u32 + 4, &body)
}

/// auth_type scram-sha-256 with a userlist; the console user "postgres" has a password too.
fn scram_target(db: &'static str) -> Target {
    let cfg = trust_config("").replace(
        "auth_type = \"trust\"",
        "auth_type = \"scram-sha-256\"\nauth_file = \"{dir}/userlist.txt\"",
    );
    let pg = Postgres::shared();
    pg.create_database(db);
    let users = [(SCRAM_USER, SCRAM_PASSWORD), ("postgres", "admin-pw")];
    Target {
        pooler: Pooler::start_with_userlist(pg, &cfg, &users),
        db,
        normal: scram_normal,
        admin_password: Some("admin-pw"),
    }
}

/// Connects and logs in up to the pooler's AuthenticationSASL.
fn sasl_started(port: u16, db: &str) -> RawClient {
    let mut c = RawClient::connect(port);
    c.startup(SCRAM_USER, db, &[]);
    let m = c.recv().expect("AuthenticationSASL");
    assert_eq!(m.auth_code(), Some(10), "{m:?}");
    c
}

/// PostgreSQL reads the type byte first and refuses at once; waiting for the "length" a
/// StartupMessage's bytes spell (about 12 KB here) would leave the client hanging.
#[test]
fn second_startup_message_during_scram() {
    let t = scram_target("hostile_scram_restart");
    t.case("second StartupMessage during SCRAM", |port| {
        let mut c = sasl_started(port, t.db);
        c.send(&fe::startup(SCRAM_USER, t.db, &[]));
        refused_before_auth(&mut c, "second StartupMessage during SCRAM");
    });
}

#[test]
fn scram_exchange_abuse() {
    let t = scram_target("hostile_scram");
    let sasl = |port| sasl_started(port, t.db);
    t.case("SASLInitialResponse with length field 0xFFFFFFFF", |port| {
        let mut c = sasl(port);
        c.send(&typed(b'p', 0xFFFF_FFFF, b"SCRAM-SHA-256\0"));
        refused_before_auth(&mut c, "SASLInitialResponse length 0xFFFFFFFF");
    });
    t.case("SASLInitialResponse with data length 0xFFFFFFFF", |port| {
        let mut c = sasl(port);
        c.send(&sasl_initial(0xFFFF_FFFF, b"n,,n=,r=abcdef"));
        refused_before_auth(&mut c, "SASL data length 0xFFFFFFFF");
    });
    t.case("overlong SCRAM nonce", |port| {
        let mut c = sasl(port);
        let first = format!("n,,n=,r={}", "a".repeat(5000));
        c.send(&sasl_initial(first.len() as u32, first.as_bytes()));
        refused_before_auth(&mut c, "5000-byte nonce");
    });
}
