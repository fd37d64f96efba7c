//! Server-side timeouts: server_idle_timeout, server_lifetime (never mid-transaction), server_check_delay + server_check_query.

mod common;
use common::*;

use std::thread;
use std::time::{Duration, Instant};

const DB: &str = "server_timeouts";

/// TRUST_TRANSACTION_CONFIG with `pool_size` servers per pool and extra [pooler] lines.
fn config(pool_size: u32, extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5\n",
        &format!("default_pool_size = {pool_size}\n{extra}\n"),
    )
}

fn start(pool_size: u32, extra: &str) -> Pooler {
    Postgres::shared().create_database(DB);
    Pooler::start(&config(pool_size, extra))
}

fn login(pooler: &Pooler) -> RawClient {
    RawClient::login_trust(pooler.port, TRUST_USER, DB).0
}

fn value(c: &mut RawClient, sql: &str) -> String {
    let reply = c.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "`{sql}`: {reply:?}");
    data_rows(&reply)[0][0].clone().expect("a value")
}

fn ok(c: &mut RawClient, sql: &str) {
    let reply = c.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "`{sql}`: {reply:?}");
}

#[test]
fn server_idle_timeout_closes_idle_servers() {
    let pg = Postgres::shared();
    let db = "timeouts_server_idle";
    pg.create_database(db);
    let pooler = Pooler::start(&config(3, "server_idle_timeout = 1"));
    let mut clients: Vec<RawClient> = (0..3)
        .map(|_| RawClient::login_trust(pooler.port, TRUST_USER, db).0)
        .collect();
    for c in &mut clients {
        ok(c, "BEGIN");
        ok(c, "SELECT 1");
    }
    for c in &mut clients {
        ok(c, "COMMIT");
    }
    let released = Instant::now();
    assert_eq!(pg.backend_count(db, None), 3);
    let mut dropped = None;
    let gone = wait_until(Duration::from_secs(5), || {
        let n = pg.backend_count(db, None);
        if n < 3 && dropped.is_none() {
            dropped = Some(released.elapsed());
        }
        n == 0
    });
    assert!(
        gone,
        "{} idle servers left after 5 s",
        pg.backend_count(db, None)
    );
    // The janitor looks once a second: up to 1 s late by design, plus the 1 s margin.
    let secs = dropped.unwrap().as_secs_f64();
    assert!(
        (0.95..=3.0).contains(&secs),
        "server_idle_timeout = 1 s closed the servers after {secs:.3} s"
    );
    // The clients never noticed.
    assert_eq!(value(&mut clients[0], "SELECT 'new server'"), "new server");
}

#[test]
fn server_lifetime_retires_a_server_only_when_idle() {
    let pg = Postgres::shared();
    let pooler = start(1, "server_lifetime = 1");
    let mut c = login(&pooler);
    ok(&mut c, "BEGIN");
    let first = value(&mut c, "SELECT pg_backend_pid()");
    ok(&mut c, "SELECT pg_sleep(1.5)");
    // Past its lifetime, but inside the transaction: still the same server.
    assert_eq!(value(&mut c, "SELECT pg_backend_pid()"), first);
    ok(&mut c, "COMMIT");
    let second = value(&mut c, "SELECT pg_backend_pid()");
    assert_ne!(
        second, first,
        "the old server was reused past server_lifetime"
    );
    let gone = wait_until(Duration::from_secs(2), || {
        pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}"),
        ) == "0"
    });
    assert!(gone, "the retired backend {first} is still connected");
}

/// A TCP proxy to PostgreSQL whose connections can be cut silently, as a NAT or firewall
/// that forgets a connection does (the pooler's socket stays open with nothing pending, and
/// the next bytes it sends meet a closed connection), or turned into black holes.
mod proxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread;

    pub struct Proxy {
        pub port: u16,
        links: Arc<Mutex<Vec<Arc<AtomicU8>>>>,
    }

    impl Proxy {
        pub fn start(upstream: u16) -> Proxy {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let links = Arc::new(Mutex::new(Vec::new()));
            let known = links.clone();
            thread::spawn(move || {
                for down in listener.incoming().flatten() {
                    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let cut = Arc::new(AtomicU8::new(OPEN));
                    known.lock().unwrap().push(cut.clone());
                    let (d, u) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                    pump(d, u, cut.clone(), true);
                    pump(up, down, cut, false);
                }
            });
            Proxy { port, links }
        }

        /// Cuts every connection open now (later ones are not affected).
        pub fn break_all(&self) {
            self.set_all(CUT);
        }

        /// Makes every connection open now a black hole: bytes vanish, nothing is closed.
        pub fn hang_all(&self) {
            self.set_all(HUNG);
        }

        fn set_all(&self, state: u8) {
            for link in self.links.lock().unwrap().iter() {
                link.store(state, Ordering::SeqCst);
            }
        }
    }

    const OPEN: u8 = 0;
    const CUT: u8 = 1;
    const HUNG: u8 = 2;

    fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<AtomicU8>, from_pooler: bool) {
        thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                let n = from.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                match state.load(Ordering::SeqCst) {
                    CUT if from_pooler => {
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                    CUT | HUNG => continue,
                    _ => {}
                }
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        });
    }
}

/// server_check_delay + server_check_query: a server that looks alive (socket open, nothing
/// pending) but is broken (a middlebox dropped the connection silently) is checked before
/// reuse and replaced; the client never sees it. Without the check, the client gets 08006.
#[test]
fn server_check_query_replaces_broken_servers_silently() {
    let pg = Postgres::shared();
    pg.create_database(DB);
    let proxy = proxy::Proxy::start(pg.port);
    let entry = format!(
        "checked = {{ host = \"127.0.0.1\", port = {}, dbname = \"{DB}\" }}\n",
        proxy.port
    );
    let checking = Pooler::start(
        &(config(
            1,
            "server_check_delay = 0.5\nserver_check_query = \"SELECT 1\"",
        ) + &entry),
    );
    let unchecked = Pooler::start(&(config(1, "server_check_delay = 30") + &entry));
    let mut a = RawClient::login_trust(checking.port, TRUST_USER, "checked").0;
    let mut b = RawClient::login_trust(unchecked.port, TRUST_USER, "checked").0;
    let pid_a = value(&mut a, "SELECT pg_backend_pid()");
    let pid_b = value(&mut b, "SELECT pg_backend_pid()");
    proxy.break_all();
    thread::sleep(Duration::from_millis(700));
    let replaced = value(&mut a, "SELECT pg_backend_pid()");
    assert_ne!(replaced, pid_a);
    b.send(&fe::query("SELECT pg_backend_pid()"));
    let msgs = b.until_closed();
    assert!(
        msgs.iter()
            .any(|m| m.field(b'C').as_deref() == Some("08006")),
        "control: without the check the broken server reaches the client ({pid_b}): {msgs:?}"
    );
    // A backend terminated while idle is replaced too.
    pg.psql(
        "postgres",
        &format!("SELECT pg_terminate_backend({replaced})"),
    );
    thread::sleep(Duration::from_millis(700));
    assert_ne!(value(&mut a, "SELECT pg_backend_pid()"), replaced);
}

/// A server that stops answering (its host hung, a black-holing firewall) while idle: the
/// check before reuse must not leave the client waiting forever. The client gets an answer
/// (from a replacement server, or an error) within query_wait_timeout / query_timeout.
#[test]
fn a_hung_server_does_not_hang_its_next_client() {
    let pg = Postgres::shared();
    pg.create_database(DB);
    let proxy = proxy::Proxy::start(pg.port);
    let entry = format!(
        "hung = {{ host = \"127.0.0.1\", port = {}, dbname = \"{DB}\" }}\n",
        proxy.port
    );
    let settings = "server_check_delay = 0.5\nserver_check_query = \"SELECT 1\"\n\
                    query_wait_timeout = 2\nquery_timeout = 2";
    let pooler = Pooler::start(&(config(1, settings) + &entry));
    let mut a = RawClient::login_trust(pooler.port, TRUST_USER, "hung").0;
    let first = value(&mut a, "SELECT pg_backend_pid()");
    proxy.hang_all();
    thread::sleep(Duration::from_millis(700));
    let asked = Instant::now();
    a.send(&fe::query("SELECT pg_backend_pid()"));
    let answer = a.try_recv(Duration::from_secs(4));
    let waited = asked.elapsed();
    match answer {
        Ok(Some(m)) if m.is_error() || m.tag == b'T' => {}
        other => panic!(
            "after {waited:?} the client (whose server {first} hung during the check) got {other:?}"
        ),
    }
    assert!(
        waited <= Duration::from_secs(3),
        "answered only after {waited:?}"
    );
}
