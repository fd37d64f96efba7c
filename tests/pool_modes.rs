//! Pool modes: transaction, session (with the reset at disconnect), statement, and per-database/per-user overrides.

mod common;
use common::*;

use std::io::ErrorKind;
use std::time::Duration;

/// TRUST_TRANSACTION_CONFIG with another pool_mode and default_pool_size, plus extra text.
fn config(mode: &str, size: u32, extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG
        .replace(
            "pool_mode = \"transaction\"",
            &format!("pool_mode = \"{mode}\""),
        )
        .replace(
            "default_pool_size = 5",
            &format!("default_pool_size = {size}"),
        )
        + extra
}

fn login(port: u16, user: &str, db: &str) -> RawClient {
    RawClient::login_trust(port, user, db).0
}

/// The single value of a one-row, one-column query; panics on an error.
fn one(client: &mut RawClient, sql: &str) -> String {
    let reply = client.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "{sql}: {reply:?}");
    let rows = data_rows(&reply);
    assert_eq!(rows.len(), 1, "{sql}: {reply:?}");
    rows[0][0].clone().unwrap_or_default()
}

fn ok(client: &mut RawClient, sql: &str) -> Vec<Msg> {
    let reply = client.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "{sql}: {reply:?}");
    reply
}

/// Asserts nothing arrives for a while: the client is queued for a server.
fn assert_waiting(client: &mut RawClient, what: &str) {
    match client.try_recv(Duration::from_millis(400)) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected no reply yet, got {other:?}"),
    }
}

fn states(pg: &Postgres, db: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT coalesce(string_agg(state, ','), '') FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND datname = {}",
            sql_literal(db)
        ),
    )
}

#[test]
fn transaction_mode_clients_take_turns_on_one_server() {
    const DB: &str = "pool_modes_transaction";
    let pg = Postgres::shared();
    pg.create_database(DB);
    let pooler = Pooler::start(&config("transaction", 1, ""));
    let mut a = login(pooler.port, TRUST_USER, DB);
    let mut b = login(pooler.port, TRUST_USER, DB);

    for round in 0..3 {
        ok(&mut a, "BEGIN");
        let pid_a = one(&mut a, "SELECT pg_backend_pid()");
        b.send(&fe::query("SELECT pg_backend_pid()"));
        assert_waiting(
            &mut b,
            &format!("round {round}: B while A is in a transaction"),
        );
        assert_eq!(pg.backend_count(DB, None), 1);
        let commit = ok(&mut a, "COMMIT");
        assert!(
            commit
                .iter()
                .any(|m| m.tag == b'C' && m.body == b"COMMIT\0")
        );
        let reply = b.recv_until_ready();
        assert_eq!(
            data_rows(&reply),
            vec![vec![Some(pid_a.clone())]],
            "round {round}: B must run on A's server once A committed"
        );
        // Outside a transaction each query gets the server in turn.
        assert_eq!(one(&mut a, "SELECT pg_backend_pid()"), pid_a);
        assert_eq!(one(&mut b, "SELECT pg_backend_pid()"), pid_a);
    }
}

#[test]
fn session_mode_keeps_the_server_and_resets_it_at_disconnect() {
    const DB: &str = "pool_modes_session";
    let pg = Postgres::shared();
    pg.create_database(DB);
    let pooler = Pooler::start(&config("session", 1, ""));
    let mut a = login(pooler.port, TRUST_USER, DB);
    let pid = one(&mut a, "SELECT pg_backend_pid()");
    ok(&mut a, "SET work_mem = '7MB'");
    ok(&mut a, "CREATE TEMP TABLE session_tmp (x int)");
    ok(&mut a, "BEGIN");
    ok(&mut a, "INSERT INTO session_tmp VALUES (1)");
    ok(&mut a, "COMMIT");
    assert_eq!(one(&mut a, "SELECT pg_backend_pid()"), pid);
    assert_eq!(one(&mut a, "SHOW work_mem"), "7MB");
    assert_eq!(one(&mut a, "SELECT count(*) FROM session_tmp"), "1");

    // A idle between transactions still holds its server.
    let mut b = login(pooler.port, TRUST_USER, DB);
    b.send(&fe::query(
        "SELECT pg_backend_pid(), current_setting('work_mem'), to_regclass('session_tmp') IS NULL",
    ));
    assert_waiting(&mut b, "B while A is connected in session mode");

    a.send(&fe::terminate());
    assert!(a.recv().is_none());
    let reply = b.recv_until_ready();
    assert_eq!(
        data_rows(&reply),
        vec![vec![Some(pid), Some("4MB".into()), Some("t".into())]],
        "B must get A's server after DISCARD ALL (SET and temp table gone): {reply:?}"
    );
}

#[test]
fn statement_mode_refuses_transaction_blocks() {
    const DB: &str = "pool_modes_statement";
    let pg = Postgres::shared();
    pg.create_database(DB);
    let pooler = Pooler::start(&config("statement", 1, ""));
    let mut a = login(pooler.port, TRUST_USER, DB);
    assert_eq!(one(&mut a, "SELECT 1"), "1");

    let reply = a.query("BEGIN");
    let err = reply
        .iter()
        .find(|m| m.is_error())
        .unwrap_or_else(|| panic!("BEGIN accepted in statement mode: {reply:?}"));
    assert!(
        err.field(b'M')
            .unwrap_or_default()
            .contains("statement pooling mode"),
        "{err:?}"
    );
    assert_eq!(err.field(b'S').as_deref(), Some("ERROR"), "{err:?}");
    assert_eq!(reply.last().unwrap().body, b"I", "{reply:?}");

    // The client carries on, outside any transaction.
    assert_eq!(one(&mut a, "SELECT 2"), "2");
    assert_eq!(one(&mut a, "SELECT now() = statement_timestamp()"), "t");
    // The single server is free for others: no transaction is left open on it.
    let mut b = login(pooler.port, TRUST_USER, DB);
    assert_eq!(one(&mut b, "SELECT 3"), "3");
    let idle = wait_until(Duration::from_secs(10), || states(pg, DB) == "idle");
    assert!(idle, "server state: {:?}", states(pg, DB));
}

/// Tells the mode of a pool (pool_size 1) from what a client can see: statement mode
/// refuses BEGIN; session mode resets the server when its client leaves (DISCARD ALL),
/// transaction mode does not (server_reset_query_always is off).
fn mode_seen(port: u16, user: &str, db: &str) -> &'static str {
    let mut a = login(port, user, db);
    let reply = a.query("BEGIN");
    if let Some(err) = reply.iter().find(|m| m.is_error()) {
        assert_eq!(err.field(b'C').as_deref(), Some("0A000"), "{err:?}");
        return "statement";
    }
    ok(&mut a, "COMMIT");
    ok(&mut a, "SET work_mem = '7MB'");
    let pid = one(&mut a, "SELECT pg_backend_pid()");
    a.send(&fe::terminate());
    assert!(a.recv().is_none());
    let mut b = login(port, user, db);
    assert_eq!(one(&mut b, "SELECT pg_backend_pid()"), pid, "{user}@{db}");
    match one(&mut b, "SHOW work_mem").as_str() {
        "7MB" => "transaction",
        "4MB" => "session",
        other => panic!("unexpected work_mem {other}"),
    }
}

#[test]
fn pool_mode_per_database_and_per_user_override_the_global_one() {
    const DB: &str = "pool_modes_override";
    let pg = Postgres::shared();
    pg.create_database(DB);
    let extra = format!(
        "pm_session = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{DB}\", pool_mode = \"session\" }}\n\
         pm_statement = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{DB}\", pool_mode = \"statement\" }}\n\
         pm_plain = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{DB}\" }}\n\
         \n[users]\n{TRUST_USER} = {{ pool_mode = \"statement\" }}\n"
    );
    let pooler = Pooler::start(&config("transaction", 1, &extra));
    let port = pooler.port;
    assert_eq!(mode_seen(port, "postgres", "pm_plain"), "transaction");
    assert_eq!(mode_seen(port, "postgres", DB), "transaction");
    assert_eq!(mode_seen(port, "postgres", "pm_session"), "session");
    assert_eq!(mode_seen(port, "postgres", "pm_statement"), "statement");
    // The user's pool_mode wins over the database's and the global one.
    assert_eq!(mode_seen(port, TRUST_USER, "pm_plain"), "statement");
    assert_eq!(mode_seen(port, TRUST_USER, "pm_session"), "statement");

    let session_global = Pooler::start(&config("session", 1, &extra));
    assert_eq!(mode_seen(session_global.port, "postgres", DB), "session");
    assert_eq!(mode_seen(session_global.port, TRUST_USER, DB), "statement");
}
