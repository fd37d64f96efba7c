//! Clients that vanish (mid-transaction, mid-query, mid-message) leave no lock, no open transaction, no broken server.

mod common;
use common::*;

use std::time::{Duration, Instant};

/// Pool of one server: whatever the vanished client left on it, the next client meets.
fn start(db: &str) -> (&'static Postgres, Pooler) {
    let pg = Postgres::shared();
    pg.create_database(db);
    pg.psql(
        db,
        "DROP TABLE IF EXISTS t; CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    );
    let pooler = Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("default_pool_size = 5", "default_pool_size = 1"),
    );
    (pg, pooler)
}

/// Sends `sql` and reads up to ReadyForQuery, giving up after `timeout`.
fn query_within(client: &mut RawClient, sql: &str, timeout: Duration) -> Result<Vec<Msg>, String> {
    client.send(&fe::query(sql));
    let deadline = Instant::now() + timeout;
    let mut msgs = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no answer to `{sql}` within {timeout:?}; got {msgs:?}"
            ));
        }
        match client.try_recv(left) {
            Ok(Some(m)) => {
                let done = m.tag == b'Z';
                msgs.push(m);
                if done {
                    return Ok(msgs);
                }
            }
            Ok(None) => return Err(format!("connection closed during `{sql}`; got {msgs:?}")),
            Err(e) => return Err(format!("no answer to `{sql}` ({e}); got {msgs:?}")),
        }
    }
}

fn ok(client: &mut RawClient, sql: &str) -> Vec<Msg> {
    let reply =
        query_within(client, sql, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !reply.iter().any(Msg::is_error),
        "`{sql}` failed: {reply:?}"
    );
    reply
}

fn count(pg: &Postgres, db: &str, condition: &str) -> i64 {
    pg.psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND {condition}",
            sql_literal(db)
        ),
    )
    .parse()
    .unwrap()
}

/// The next client gets the only server quickly, reads t, takes an exclusive lock with NOWAIT,
/// and nothing stays idle in transaction.
fn assert_next_client_is_unhindered(pg: &Postgres, pooler: &Pooler, db: &str) {
    let (mut b, _) = RawClient::login_trust(pooler.port, "postgres", db);
    let started = Instant::now();
    let reply = query_within(&mut b, "SELECT count(*) FROM t", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the next client could not read t: {e}"));
    assert_eq!(data_rows(&reply), [[Some("2".to_string())]], "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the next client waited {:?} for the server",
        started.elapsed()
    );
    assert_eq!(
        reply.last().unwrap().body,
        b"I",
        "not in a clean transaction state"
    );
    ok(
        &mut b,
        "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE NOWAIT; COMMIT",
    );
    let clean = wait_until(Duration::from_secs(5), || {
        count(pg, db, "state LIKE 'idle in transaction%'") == 0
    });
    assert!(clean, "a backend of {db} stays idle in transaction");
    assert!(pg.backend_count(db, None) <= 1, "pool_size 1 exceeded");
}

#[test]
fn a_client_dropped_inside_a_transaction_leaves_no_lock() {
    let db = "clifail_in_tx";
    let (pg, pooler) = start(db);
    let (mut a, _) = RawClient::login_trust(pooler.port, "postgres", db);
    ok(&mut a, "BEGIN");
    ok(&mut a, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE");
    assert_eq!(count(pg, db, "state = 'idle in transaction'"), 1);
    // Closed without a Terminate message.
    drop(a);
    assert_next_client_is_unhindered(pg, &pooler, db);
}

#[test]
fn a_client_dropped_during_a_long_query_is_cancelled() {
    let db = "clifail_in_query";
    let (pg, pooler) = start(db);
    let (mut a, _) = RawClient::login_trust(pooler.port, "postgres", db);
    ok(&mut a, "BEGIN");
    ok(&mut a, "LOCK TABLE t IN ACCESS EXCLUSIVE MODE");
    a.send(&fe::query("SELECT pg_sleep(30)"));
    let running = wait_until(Duration::from_secs(10), || {
        count(pg, db, "state = 'active' AND query = 'SELECT pg_sleep(30)'") == 1
    });
    assert!(running, "pg_sleep(30) never started");
    drop(a);
    assert_next_client_is_unhindered(pg, &pooler, db);
    assert_eq!(
        count(pg, db, "query = 'SELECT pg_sleep(30)' AND state = 'active'"),
        0,
        "the abandoned query still runs"
    );
}

#[test]
fn a_client_gone_in_the_middle_of_a_message_does_not_break_the_next() {
    let db = "clifail_half_message";
    let (pg, pooler) = start(db);
    let big = fe::query(&format!("SELECT '{}'", "x".repeat(64 * 1024)));
    // (what was sent before, how many bytes of the big Query message)
    let cases: [(&str, usize); 4] = [
        ("", 3),
        ("", 5 + 10),
        ("", big.len() / 2),
        ("BEGIN", big.len() / 2),
    ];
    for (before, cut) in cases {
        let (mut a, _) = RawClient::login_trust(pooler.port, "postgres", db);
        if !before.is_empty() {
            ok(&mut a, before);
        }
        // The bytes arrive before the end of stream, so the pooler forwards them (taking a
        // server for them) before it learns the client is gone.
        a.send(&big[..cut]);
        drop(a);
        let (mut b, _) = RawClient::login_trust(pooler.port, "postgres", db);
        let reply =
            query_within(&mut b, "SELECT 42", Duration::from_secs(10)).unwrap_or_else(|e| {
                panic!("after a client left {cut} bytes into a Query (after {before:?}): {e}")
            });
        assert_eq!(
            data_rows(&reply),
            [[Some("42".to_string())]],
            "after a client left {cut} bytes into a Query (after {before:?}): {reply:?}"
        );
        assert_eq!(
            reply.last().unwrap().body,
            b"I",
            "the next client landed in the vanished client's transaction (after {before:?})"
        );
    }
    assert_next_client_is_unhindered(pg, &pooler, db);
}
