//! Server connections terminated by PostgreSQL (pg_terminate_backend): client error, reconnect, silent replacement, no leak.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

fn config(pool_size: u32) -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!("default_pool_size = {pool_size}"),
    )
}

/// Runs a query that must succeed and returns its single value.
fn value(client: &mut RawClient, sql: &str) -> String {
    let reply = client.query(sql);
    assert!(
        !reply.iter().any(Msg::is_error),
        "`{sql}` failed: {reply:?}"
    );
    let rows = data_rows(&reply);
    assert_eq!(rows.len(), 1, "`{sql}`: {reply:?}");
    rows[0][0].clone().expect("a non-NULL value")
}

/// Terminates a backend from a direct superuser connection and waits until it is gone.
fn terminate(pg: &Postgres, pid: &str) {
    assert_eq!(
        pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})")),
        "t",
        "backend {pid} not found"
    );
    let gone = wait_until(Duration::from_secs(10), || {
        pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        ) == "0"
    });
    assert!(
        gone,
        "backend {pid} still there 10 s after pg_terminate_backend"
    );
}

#[test]
fn a_server_killed_mid_transaction_fails_its_client_with_08006() {
    let pg = Postgres::shared();
    let db = "srvfail_mid_tx";
    pg.create_database(db);
    let pooler = Pooler::start(&config(5));
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let begin = a.query("BEGIN");
    assert!(!begin.iter().any(Msg::is_error), "{begin:?}");
    let pid = value(&mut a, "SELECT pg_backend_pid()");
    terminate(pg, &pid);

    a.send(&fe::query("SELECT 1"));
    let msgs = a.until_closed();
    let errors: Vec<&Msg> = msgs.iter().filter(|m| m.is_error()).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one ErrorResponse, then the connection closed; got {msgs:?}"
    );
    assert_eq!(errors[0].field(b'C').as_deref(), Some("08006"), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m.tag == b'Z' || m.tag == b'D'),
        "the client was answered as if the transaction went on: {msgs:?}"
    );

    // The pool opens a new server for the next client.
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let new_pid = value(&mut b, "SELECT pg_backend_pid()");
    assert_ne!(new_pid, pid, "served by the terminated backend");
    assert_eq!(
        pooler
            .psql(TRUST_USER, db, None, "SELECT 40 + 2")
            .as_deref(),
        Ok("42")
    );
}

#[test]
fn an_idle_server_terminated_in_the_pool_is_replaced_silently() {
    let pg = Postgres::shared();
    let db = "srvfail_idle";
    pg.create_database(db);
    // One server: the next query can only get the terminated one, or a replacement.
    let pooler = Pooler::start(&config(1));
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let first = value(&mut a, "SELECT pg_backend_pid()");
    terminate(pg, &first);

    // The same client, still connected, asks again.
    let second = value(&mut a, "SELECT pg_backend_pid()");
    assert_ne!(second, first);
    terminate(pg, &second);

    // A new client gets a working server too.
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let third = value(&mut b, "SELECT pg_backend_pid()");
    assert_ne!(third, second);
    assert_eq!(value(&mut a, "SELECT 'still here'"), "still here");
    assert_eq!(pg.backend_count(db, None), 1, "pool_size 1");
}

#[test]
fn terminated_servers_do_not_leak_pool_slots() {
    let pg = Postgres::shared();
    let db = "srvfail_leak";
    pg.create_database(db);
    let pooler = Pooler::start(&config(2));
    // Both slots in use, by two clients inside transactions.
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    for c in [&mut a, &mut b] {
        assert!(!c.query("BEGIN").iter().any(Msg::is_error));
    }
    let pid_a = value(&mut a, "SELECT pg_backend_pid()");
    let pid_b = value(&mut b, "SELECT pg_backend_pid()");
    assert_ne!(pid_a, pid_b);
    // One dies under its client, the other after going back to the pool.
    assert!(!b.query("COMMIT").iter().any(Msg::is_error));
    terminate(pg, &pid_a);
    terminate(pg, &pid_b);
    a.send(&fe::query("SELECT 1"));
    let msgs = a.until_closed();
    assert!(
        msgs.iter()
            .any(|m| m.field(b'C').as_deref() == Some("08006")),
        "{msgs:?}"
    );
    drop(b);

    // Both slots must be usable again, and never more than two servers.
    let script = pooler.dir.join("tx.sql");
    std::fs::write(&script, "SELECT pg_sleep(0.01);\n").unwrap();
    let stop = AtomicBool::new(false);
    let (run, max_seen) = thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut max = 0;
            while !stop.load(Ordering::SeqCst) {
                max = max.max(pg.backend_count(db, None));
            }
            max
        });
        let run = pooler.pgbench(
            TRUST_USER,
            db,
            &[
                "-n",
                "-c",
                "6",
                "-j",
                "2",
                "-T",
                "2",
                "-f",
                script.to_str().unwrap(),
            ],
        );
        stop.store(true, Ordering::SeqCst);
        (run, watcher.join().unwrap())
    });
    assert!(
        run.ok && run.failed == 0 && run.aborted == 0 && run.transactions > 0,
        "pgbench after the terminations:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        max_seen <= 2,
        "{max_seen} server connections with pool_size 2"
    );
    let settled = wait_until(Duration::from_secs(5), || pg.backend_count(db, None) == 2);
    assert!(
        settled,
        "after the run the pool should hold its 2 servers; PostgreSQL shows {}",
        pg.backend_count(db, None)
    );
}
