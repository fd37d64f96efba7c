//! CancelRequest through the pooler: it cancels the right query, only with the right key, never another client's.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SLEEP_30: &str = "SELECT pg_sleep(30)";

/// Sends a CancelRequest to the pooler on a new connection and waits until it closes it.
fn send_cancel(port: u16, pid: i32, secret: i32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect for a cancel");
    s.write_all(&fe::cancel_request(pid, secret))
        .expect("send CancelRequest");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut rest = Vec::new();
    // The pooler answers nothing and closes the connection once the request is handled.
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a CancelRequest got an answer: {rest:?}");
}

/// The pid of the backend of `db` running `sql`, once it runs (10 s at most).
fn running_backend(pg: &Postgres, db: &str, sql: &str) -> i32 {
    let query = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = {} AND state = 'active' AND query = {}",
        sql_literal(db),
        sql_literal(sql)
    );
    let mut pid = String::new();
    let found = wait_until(Duration::from_secs(10), || {
        pid = pg.psql("postgres", &query);
        !pid.is_empty()
    });
    assert!(found, "`{sql}` never showed up as active in {db}");
    pid.lines().next().unwrap().parse().expect("a pid")
}

/// Reads until ReadyForQuery or `timeout`; Err(what came so far) on timeout or EOF.
fn reply_within(client: &mut RawClient, timeout: Duration) -> Result<Vec<Msg>, Vec<Msg>> {
    let deadline = Instant::now() + timeout;
    let mut msgs = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(msgs);
        }
        match client.try_recv(left) {
            Ok(Some(m)) => {
                let done = m.tag == b'Z';
                msgs.push(m);
                if done {
                    return Ok(msgs);
                }
            }
            Ok(None) | Err(_) => return Err(msgs),
        }
    }
}

fn sqlstates(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.is_error())
        .map(|m| m.field(b'C').unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_cancel_stops_the_query() {
    let pg = Postgres::shared();
    let db = "cancel_tokio";
    pg.create_database(db);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let client = pg_connect(&pooler.connstr(TRUST_USER, db)).await.unwrap();
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query(SLEEP_30).await.map(|_| ()) });
    running_backend(pg, db, SLEEP_30);

    let sent = Instant::now();
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("send the cancel request to the pooler");
    let result = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query was still running 10 s after the cancel")
        .unwrap();
    let err = result.expect_err("pg_sleep(30) completed despite the cancel");
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("57014"),
        "expected query_canceled, got: {err}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "cancelled after {:?}",
        sent.elapsed()
    );
}

#[test]
fn raw_cancel_request_stops_the_query() {
    let pg = Postgres::shared();
    let db = "cancel_raw";
    pg.create_database(db);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let (mut a, login) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let (pid, secret) = backend_key(&login);
    a.send(&fe::query(SLEEP_30));
    running_backend(pg, db, SLEEP_30);

    let sent = Instant::now();
    send_cancel(pooler.port, pid, secret);
    let reply = reply_within(&mut a, Duration::from_secs(10))
        .unwrap_or_else(|got| panic!("no ReadyForQuery 10 s after the cancel; got {got:?}"));
    assert_eq!(sqlstates(&reply), ["57014"], "{reply:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "cancelled after {:?}",
        sent.elapsed()
    );
    // The session goes on.
    assert_eq!(data_rows(&a.query("SELECT 7")), [[Some("7".to_string())]]);
}

#[test]
fn a_wrong_key_cancels_nothing() {
    let pg = Postgres::shared();
    let db = "cancel_wrong_key";
    pg.create_database(db);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let (mut a, login) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let (pid, secret) = backend_key(&login);
    a.send(&fe::query(SLEEP_30));
    let backend = running_backend(pg, db, SLEEP_30);

    send_cancel(pooler.port, pid, secret ^ 1);
    send_cancel(pooler.port, pid ^ 1, secret);
    send_cancel(pooler.port, backend, secret);
    // Time for a wrongly accepted cancel to take effect.
    match a.try_recv(Duration::from_millis(1500)) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a cancel with a wrong key reached the query: {other:?}"),
    }
    assert_eq!(
        running_backend(pg, db, SLEEP_30),
        backend,
        "the query must still run on the same backend"
    );

    // The right key still works.
    send_cancel(pooler.port, pid, secret);
    let reply = reply_within(&mut a, Duration::from_secs(10))
        .unwrap_or_else(|got| panic!("no reply after the right cancel; got {got:?}"));
    assert_eq!(sqlstates(&reply), ["57014"], "{reply:?}");
}

/// PgBouncer's test_cancel_race: with one server shared by A and B, cancels aimed at A
/// must never hit B's query on the server A used a moment before. The queries are short
/// (10 ms), so many cancels reach the pooler just before A's query ends and are still on
/// their way to PostgreSQL when the server could go to B: a pooler that hands the server
/// over before the cancel is delivered gets B's query cancelled.
#[test]
fn cancels_for_one_client_never_hit_another() {
    let pg = Postgres::shared();
    let db = "cancel_race";
    pg.create_database(db);
    let pooler = Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("default_pool_size = 5", "default_pool_size = 1"),
    );
    let port = pooler.port;
    let a_key: Mutex<Option<(i32, i32)>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let a_cancelled = AtomicU32::new(0);
    let a_logins = AtomicU32::new(0);
    let b_queries = AtomicU32::new(0);
    let b_problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    const SLEEP: &str = "SELECT pg_sleep(0.01)";

    thread::scope(|s| {
        // A: runs the query again and again; logs in again if a cancel closed it.
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let (mut a, login) = RawClient::login_trust(port, TRUST_USER, db);
                a_logins.fetch_add(1, Ordering::SeqCst);
                *a_key.lock().unwrap() = Some(backend_key(&login));
                while !stop.load(Ordering::SeqCst) {
                    a.send(&fe::query(SLEEP));
                    match reply_within(&mut a, Duration::from_secs(20)) {
                        Ok(reply) => {
                            if sqlstates(&reply).iter().any(|c| c == "57014") {
                                a_cancelled.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(got) => {
                            if sqlstates(&got).iter().any(|c| c == "57014") {
                                a_cancelled.fetch_add(1, Ordering::SeqCst);
                            }
                            break;
                        }
                    }
                }
            }
        });
        // B: the same query, never cancelled.
        s.spawn(|| {
            let (mut b, _) = RawClient::login_trust(port, TRUST_USER, db);
            while !stop.load(Ordering::SeqCst) {
                b.send(&fe::query(SLEEP));
                match reply_within(&mut b, Duration::from_secs(20)) {
                    Ok(reply) => {
                        for e in reply.iter().filter(|m| m.is_error()) {
                            b_problems.lock().unwrap().push(format!("{e:?}"));
                        }
                        b_queries.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(got) => {
                        b_problems
                            .lock()
                            .unwrap()
                            .push(format!("B's connection ended: {got:?}"));
                        return;
                    }
                }
            }
        });
        // The canceller: 100 cancels with A's current key.
        s.spawn(|| {
            let ready = wait_until(Duration::from_secs(10), || a_key.lock().unwrap().is_some());
            assert!(ready, "A never logged in");
            for i in 0..100u64 {
                let (pid, secret) = a_key.lock().unwrap().expect("A's key");
                send_cancel(port, pid, secret);
                // Irregular gaps (5-35 ms), so the cancels land at every point of A's and
                // B's turns on the server.
                thread::sleep(Duration::from_millis(5 + i * 7 % 31));
            }
            stop.store(true, Ordering::SeqCst);
        });
    });

    let problems = b_problems.into_inner().unwrap();
    eprintln!(
        "cancel race: {} of A's queries cancelled, A logged in {} times, {} of B's queries ran",
        a_cancelled.load(Ordering::SeqCst),
        a_logins.load(Ordering::SeqCst),
        b_queries.load(Ordering::SeqCst)
    );
    assert!(
        problems.is_empty(),
        "B got errors while cancels aimed at A ({} of B's queries ran): {problems:?}",
        b_queries.load(Ordering::SeqCst)
    );
    assert!(
        b_queries.load(Ordering::SeqCst) >= 5,
        "B ran only {} queries",
        b_queries.load(Ordering::SeqCst)
    );
    assert!(
        a_cancelled.load(Ordering::SeqCst) > 0,
        "none of the 100 cancels reached A's queries: the race was not exercised"
    );
}

#[test]
fn clients_get_the_poolers_own_keys() {
    let pg = Postgres::shared();
    let db = "cancel_own_keys";
    pg.create_database(db);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let (mut a, login_a) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let (mut b, login_b) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let (key_a, key_b) = (backend_key(&login_a), backend_key(&login_b));
    assert_ne!(key_a, key_b, "two clients share a cancel key");
    for (client, (pid, _)) in [(&mut a, key_a), (&mut b, key_b)] {
        let rows = data_rows(&client.query("SELECT pg_backend_pid()"));
        let server_pid: i32 = rows[0][0].as_deref().unwrap().parse().unwrap();
        assert_ne!(
            pid, server_pid,
            "the client's BackendKeyData is the server's (pid {server_pid}), not the pooler's own"
        );
        let known = pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        );
        assert_eq!(known, "0", "the key's pid {pid} is a PostgreSQL backend");
    }
}
