//! Timeouts seen by clients: each fires within a second of its setting, with a clear SQLSTATE and message.

mod common;
use common::*;

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

const DB: &str = "timeouts";

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

/// Everything the pooler sends until it closes the connection (`limit` at most), and when
/// the first ErrorResponse arrived.
fn until_closed(c: &mut RawClient, limit: Duration) -> (Vec<Msg>, Option<Instant>) {
    let deadline = Instant::now() + limit;
    let (mut msgs, mut first_error) = (Vec::new(), None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "not closed within {limit:?}; got {msgs:?}");
        match c.try_recv(left) {
            Ok(Some(m)) => {
                if m.is_error() && first_error.is_none() {
                    first_error = Some(Instant::now());
                }
                msgs.push(m);
            }
            Ok(None) => return (msgs, first_error),
            Err(e) => panic!("not closed within {limit:?} ({e}); got {msgs:?}"),
        }
    }
}

/// The one ErrorResponse of `msgs`, which must carry `code` and a message containing `text`.
fn the_error(msgs: &[Msg], code: &str, text: &str) -> Msg {
    let errors: Vec<&Msg> = msgs.iter().filter(|m| m.is_error()).collect();
    assert_eq!(errors.len(), 1, "expected one ErrorResponse: {msgs:?}");
    let e = errors[0].clone();
    assert_eq!(e.field(b'C').as_deref(), Some(code), "{e:?}");
    let message = e.field(b'M').unwrap_or_default();
    assert!(message.contains(text), "message {message:?} lacks {text:?}");
    e
}

/// A timeout of `setting` fired `elapsed` after its clock started: not early, at most 1 s late.
fn assert_fired(what: &str, elapsed: Duration, setting: f64, late: f64) {
    let secs = elapsed.as_secs_f64();
    assert!(
        secs >= setting - 0.05 && secs <= setting + late,
        "{what} = {setting} s fired after {secs:.3} s"
    );
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

fn login(pooler: &Pooler) -> RawClient {
    RawClient::login_trust(pooler.port, TRUST_USER, DB).0
}

fn assert_serves(pooler: &Pooler) {
    assert_eq!(
        pooler
            .psql(TRUST_USER, DB, None, "SELECT 41 + 1")
            .as_deref(),
        Ok("42")
    );
}

#[test]
fn server_connect_timeout_fails_the_login_with_08001() {
    // A "server" that completes the TCP handshake and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let cfg = config(5, "server_connect_timeout = 1")
        + &format!("blackhole = {{ host = \"127.0.0.1\", port = {port} }}\n");
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(&cfg);
    let mut c = RawClient::connect(pooler.port);
    let started = Instant::now();
    c.startup(TRUST_USER, "blackhole", &[]);
    let (msgs, at) = until_closed(&mut c, Duration::from_secs(10));
    the_error(&msgs, "08001", "server_connect_timeout");
    assert_fired("server_connect_timeout", at.unwrap() - started, 1.0, 1.0);
    assert_serves(&pooler);
}

/// Puts plain_user's password back however the test ends.
struct RestorePassword;
impl Drop for RestorePassword {
    fn drop(&mut self) {
        let sql = format!("ALTER ROLE {PLAIN_USER} PASSWORD '{PLAIN_PASSWORD}'");
        let _ = Postgres::shared().try_psql("postgres", &sql);
    }
}

#[test]
fn server_login_retry_fails_new_clients_fast_with_the_servers_error() {
    let pg = Postgres::shared();
    let _restore = RestorePassword;
    // plain_user needs a password (pg_hba "password"); the entry has the wrong one.
    let cfg = config(5, "server_login_retry = 2\nserver_connect_timeout = 10")
        + &format!(
            "retry = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{DB}\", \
             user = \"{PLAIN_USER}\", password = \"wrong\" }}\n"
        );
    pg.create_database(DB);
    let pooler = Pooler::start(&cfg);
    let expected = format!("password authentication failed for user \"{PLAIN_USER}\"");
    let refused = || {
        let started = Instant::now();
        let mut c = RawClient::connect(pooler.port);
        c.startup(TRUST_USER, "retry", &[]);
        let (msgs, at) = until_closed(&mut c, Duration::from_secs(15));
        the_error(&msgs, "28P01", &expected);
        (at.unwrap(), at.unwrap() - started)
    };
    let (failed_at, _) = refused();
    // The entry's password becomes right on the server: only a real attempt would notice.
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {PLAIN_USER} PASSWORD 'wrong'"),
    );
    for _ in 0..3 {
        let (_, took) = refused();
        assert!(
            took < Duration::from_millis(500),
            "a refusal inside server_login_retry took {took:?} (server_connect_timeout is 10 s)"
        );
    }
    assert!(
        failed_at.elapsed() < Duration::from_secs(2),
        "test too slow to prove the window"
    );
    // Once the window has passed, the next client gets a real attempt, which now succeeds.
    let mut succeeded_at = None;
    let done = wait_until(Duration::from_secs(6), || {
        let mut c = RawClient::connect(pooler.port);
        c.startup(TRUST_USER, "retry", &[]);
        let mut msgs = Vec::new();
        while let Ok(Some(m)) = c.try_recv(Duration::from_secs(10)) {
            let done = m.tag == b'Z';
            msgs.push(m);
            if done {
                break;
            }
        }
        let good = !msgs.iter().any(Msg::is_error) && msgs.iter().any(|m| m.tag == b'Z');
        if good {
            succeeded_at = Some(Instant::now());
        }
        good
    });
    assert!(done, "logins still fail 6 s after the failed server login");
    assert_fired(
        "server_login_retry",
        succeeded_at.unwrap() - failed_at,
        2.0,
        1.0,
    );
}

#[test]
fn query_wait_timeout_refuses_a_queued_client() {
    let pooler = start(1, "query_wait_timeout = 1");
    let mut holder = login(&pooler);
    ok(&mut holder, "BEGIN");
    ok(&mut holder, "SELECT 1");
    let mut queued = login(&pooler);
    let started = Instant::now();
    queued.send(&fe::query("SELECT 1"));
    let (msgs, at) = until_closed(&mut queued, Duration::from_secs(10));
    the_error(&msgs, "08P01", "query_wait_timeout");
    assert_fired("query_wait_timeout", at.unwrap() - started, 1.0, 1.0);
    ok(&mut holder, "COMMIT");
    assert_eq!(
        value(&mut holder, "SELECT 'holder still fine'"),
        "holder still fine"
    );
}

#[test]
fn query_timeout_cancels_the_query_on_the_server() {
    let pg = Postgres::shared();
    let pooler = start(2, "query_timeout = 1");
    let mut c = login(&pooler);
    let started = Instant::now();
    c.send(&fe::query("SELECT pg_sleep(10) AS query_timeout_probe"));
    let (msgs, at) = until_closed(&mut c, Duration::from_secs(10));
    the_error(&msgs, "57014", "query_timeout");
    assert_fired("query_timeout", at.unwrap() - started, 1.0, 1.0);
    let running = || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE '%query_timeout_probe%' AND pid <> pg_backend_pid()",
        )
    };
    assert!(
        wait_until(Duration::from_secs(1), || running() == "0"),
        "the query still runs on PostgreSQL after query_timeout"
    );
    assert_serves(&pooler);
}

#[test]
fn client_idle_timeout_closes_idle_clients_only() {
    let pooler = start(2, "client_idle_timeout = 1");
    let mut idle = login(&pooler);
    let mut busy = login(&pooler);
    ok(&mut idle, "SELECT 1");
    let started = Instant::now();
    let reader = thread::spawn(move || {
        let (msgs, at) = until_closed(&mut idle, Duration::from_secs(10));
        (msgs, at.map(|t| t - started))
    });
    // Busy every 0.4 s for 1.6 s: past the timeout, but never idle that long.
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(400));
        ok(&mut busy, "SELECT 1");
    }
    let (msgs, elapsed) = reader.join().unwrap();
    the_error(&msgs, "57P05", "client_idle_timeout");
    assert_fired("client_idle_timeout", elapsed.unwrap(), 1.0, 1.0);
    assert_eq!(value(&mut busy, "SELECT 'busy survives'"), "busy survives");
}

#[test]
fn client_login_timeout_closes_a_half_sent_startup() {
    let pooler = start(2, "client_login_timeout = 1");
    let mut c = RawClient::connect(pooler.port);
    let packet = fe::startup(TRUST_USER, DB, &[]);
    let started = Instant::now();
    c.send(&packet[..packet.len() / 2]);
    let (msgs, at) = until_closed(&mut c, Duration::from_secs(10));
    the_error(&msgs, "08P01", "client_login_timeout");
    assert_fired("client_login_timeout", at.unwrap() - started, 1.0, 1.0);
    assert_serves(&pooler);
}

#[test]
fn idle_transaction_timeout_rolls_back_and_frees_locks() {
    let pg = Postgres::shared();
    let pooler = start(2, "idle_transaction_timeout = 1");
    pg.psql(
        DB,
        "CREATE TABLE IF NOT EXISTS itt_rows (id int); GRANT ALL ON itt_rows TO PUBLIC",
    );
    let mut c = login(&pooler);
    ok(&mut c, "BEGIN");
    ok(&mut c, "INSERT INTO itt_rows VALUES (1)");
    ok(&mut c, "SELECT pg_advisory_xact_lock(4242)");
    let started = Instant::now();
    let (msgs, at) = until_closed(&mut c, Duration::from_secs(10));
    the_error(&msgs, "25P03", "idle_transaction_timeout");
    assert_fired("idle_transaction_timeout", at.unwrap() - started, 1.0, 1.0);
    let free = wait_until(Duration::from_secs(2), || {
        pg.psql(DB, "SELECT pg_try_advisory_xact_lock(4242)") == "t"
    });
    assert!(free, "the abandoned transaction still holds its lock");
    assert_eq!(
        pg.psql(DB, "SELECT count(*) FROM itt_rows"),
        "0",
        "not rolled back"
    );
    assert_serves(&pooler);
}
