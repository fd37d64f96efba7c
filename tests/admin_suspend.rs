//! SUSPEND and RESUME (PgBouncer's semantics): SUSPEND returns once every client session
//! has flushed what it owed; then no client request is read or answered, in or out of a
//! transaction, until RESUME (or SIGUSR2), after which every held request is answered and
//! open transactions carry on. The console keeps working throughout.

mod common;
use common::*;

use std::time::Duration;

const DB: &str = "admin_suspend";

/// SHOW STATE as key -> value.
fn state(console: &mut RawClient) -> Vec<(String, String)> {
    data_rows(&console.query("SHOW STATE"))
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn has(state: &[(String, String)], key: &str, value: &str) -> bool {
    state.iter().any(|(k, v)| k == key && v == value)
}

/// Nothing arrives for `client` within a short while: its request is held.
fn held(client: &mut RawClient) -> bool {
    match client.try_recv(Duration::from_millis(500)) {
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        Ok(m) => panic!("answered while suspended: {m:?}"),
    }
}

fn answer(client: &mut RawClient) -> Vec<Option<String>> {
    let msgs = client.recv_until_ready();
    assert!(!msgs.iter().any(Msg::is_error), "{msgs:?}");
    data_rows(&msgs).remove(0)
}

#[test]
fn suspend_holds_every_request_until_resume() {
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    // A is inside a transaction (linked to a server), B is idle.
    let (mut a, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    let (mut b, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    assert!(!a.query("BEGIN").iter().any(Msg::is_error));
    assert!(
        !a.query("CREATE TEMP TABLE t (x int)")
            .iter()
            .any(Msg::is_error)
    );

    let reply = console.query("SUSPEND");
    assert!(!reply.iter().any(Msg::is_error), "{reply:?}");
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"SUSPEND")),
        "{reply:?}"
    );
    let s = state(&mut console);
    assert!(
        has(&s, "suspended", "yes") && has(&s, "active", "no"),
        "{s:?}"
    );
    let again = console.query("SUSPEND");
    let err = again.iter().find(|m| m.is_error()).expect("second SUSPEND");
    assert_eq!(err.field(b'M').as_deref(), Some("already suspended"));

    a.send(&fe::query(
        "INSERT INTO t VALUES (7); SELECT count(*) FROM t",
    ));
    b.send(&fe::query("SELECT 2"));
    assert!(held(&mut a) && held(&mut b));
    // A client arriving now logs in, but its queries wait like the others'.
    let (mut c, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    c.send(&fe::query("SELECT 3"));
    assert!(held(&mut c));

    let resumed = console.query("RESUME");
    assert!(!resumed.iter().any(Msg::is_error), "{resumed:?}");
    assert_eq!(answer(&mut a), vec![Some("1".to_string())]);
    assert_eq!(answer(&mut b), vec![Some("2".to_string())]);
    assert_eq!(answer(&mut c), vec![Some("3".to_string())]);
    assert!(!a.query("COMMIT").iter().any(Msg::is_error));
    assert!(has(&state(&mut console), "suspended", "no"));

    // SIGUSR2 resumes too (PgBouncer's signal for RESUME).
    assert!(!console.query("SUSPEND").iter().any(Msg::is_error));
    b.send(&fe::query("SELECT 4"));
    assert!(held(&mut b));
    pooler.signal(libc::SIGUSR2);
    assert_eq!(answer(&mut b), vec![Some("4".to_string())]);
    assert!(has(&state(&mut console), "suspended", "no"));
}

#[test]
fn suspend_lets_a_killed_client_go_and_sigusr1_pauses() {
    const DB2: &str = "admin_suspend_kill";
    Postgres::shared().create_database(DB2);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let (mut a, _) = RawClient::login_trust(pooler.port, "postgres", DB2);
    assert!(!a.query("BEGIN").iter().any(Msg::is_error));
    assert!(!console.query("SUSPEND").iter().any(Msg::is_error));
    // KILL still ends a suspended client, with its reason, and frees its server.
    assert!(
        !console
            .query(&format!("KILL {DB2}"))
            .iter()
            .any(Msg::is_error)
    );
    let fatal = loop {
        match a.recv() {
            Some(m) if m.is_error() => break m,
            Some(_) => continue,
            None => panic!("closed without an error"),
        }
    };
    assert_eq!(fatal.field(b'C').as_deref(), Some("57P01"), "{fatal:?}");
    assert!(!console.query("RESUME").iter().any(Msg::is_error));
    let s = state(&mut console);
    assert!(
        has(&s, "suspended", "no") && has(&s, "paused", "no"),
        "{s:?}"
    );

    // SIGUSR1 is PAUSE: new queries wait until RESUME.
    let (mut b, _) = RawClient::login_trust(pooler.port, "postgres", DB2);
    pooler.signal(libc::SIGUSR1);
    assert!(wait_until(Duration::from_secs(5), || has(
        &state(&mut console),
        "paused",
        "yes"
    )));
    b.send(&fe::query("SELECT 5"));
    assert!(held(&mut b));
    pooler.signal(libc::SIGUSR2);
    assert_eq!(answer(&mut b), vec![Some("5".to_string())]);
}

#[test]
fn suspend_timeout_drops_a_client_that_does_not_read() {
    const DB3: &str = "admin_suspend_timeout";
    Postgres::shared().create_database(DB3);
    let config = TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        "default_pool_size = 5\nsuspend_timeout = 1",
    );
    let pooler = Pooler::start(&config);
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let (mut stuck, _) = RawClient::login_trust(pooler.port, "postgres", DB3);
    let (mut fine, _) = RawClient::login_trust(pooler.port, "postgres", DB3);
    // 32 MB of answer that `stuck` never reads: the pooler cannot flush it.
    stuck.send(&fe::query("SELECT repeat('x', 32 * 1024 * 1024)"));
    // PostgreSQL blocks writing to the pooler while the pooler reads slower than it
    // writes, and for good once the pooler stopped reading from it, which it does while
    // more than its high-water mark is queued for `stuck`.
    let blocked = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB3}' AND wait_event = 'ClientWrite'"
    );
    let pg_blocked = || Postgres::shared().psql("postgres", &blocked).trim() == "1";
    // PostgreSQL can block for a moment while the pooler still drains to `stuck`'s socket
    // buffers; a SUSPEND at such a moment finds everything flushed and returns at once.
    // Since `stuck` never reads, the buffers fill for good after a few rounds, and from
    // then on SUSPEND can only return through suspend_timeout.
    let mut waited = Duration::ZERO;
    for _ in 0..20 {
        assert!(wait_until(Duration::from_secs(20), pg_blocked));
        let started = std::time::Instant::now();
        let reply = console.query("SUSPEND");
        assert!(!reply.iter().any(Msg::is_error), "{reply:?}");
        waited = started.elapsed();
        if waited >= Duration::from_millis(900) {
            break;
        }
        assert!(!console.query("RESUME").iter().any(Msg::is_error));
    }
    assert!(
        waited >= Duration::from_millis(900),
        "SUSPEND never waited for suspend_timeout: {waited:?}"
    );
    fine.send(&fe::query("SELECT 6"));
    assert!(held(&mut fine));
    assert!(!console.query("RESUME").iter().any(Msg::is_error));
    assert_eq!(answer(&mut fine), vec![Some("6".to_string())]);
    // What was already in flight arrives, then the connection ends without ReadyForQuery.
    let mut tags = Vec::new();
    loop {
        match stuck.try_recv(Duration::from_secs(10)) {
            Ok(Some(m)) => tags.push(m.tag),
            // The connection ends, here inside the 32 MB DataRow.
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(e) => panic!("the stuck client was neither served nor closed: {e} {tags:?}"),
        }
    }
    assert!(
        !tags.contains(&b'Z'),
        "the unflushed client was dropped, not served: {tags:?}"
    );
    assert!(pooler.log().contains("suspend_timeout"), "{}", pooler.log());
    // Its server connection was closed, not left behind.
    assert!(wait_until(Duration::from_secs(10), || !pg_blocked()));
}
