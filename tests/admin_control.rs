//! Admin console control commands against real traffic: PAUSE/RESUME under pgbench, KILL,
//! KILL_CLIENT, DISABLE/ENABLE, RECONNECT (never mid-transaction), WAIT_CLOSE, and who may
//! run them.

mod common;
use common::*;

use std::thread;
use std::time::Duration;

fn config() -> String {
    TRUST_TRANSACTION_CONFIG
        .replace(
            "admin_users = \"postgres\"",
            &format!("admin_users = \"postgres\"\nstats_users = \"{TRUST_USER}\""),
        )
        .replace(
            "[databases]",
            "[databases]\nadmin_control_reconnect = { host = \"{pg_host}\", port = {pg_port}, pool_size = 1 }",
        )
}

/// Rows of SHOW POOLS/CLIENTS... as psql -A -t prints them.
fn rows(pooler: &Pooler, cmd: &str) -> Vec<Vec<String>> {
    pooler
        .admin(cmd)
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// SHOW POOLS sv_active + sv_idle + sv_used + sv_login of `db`.
fn open_servers(pooler: &Pooler, db: &str) -> u64 {
    rows(pooler, "SHOW POOLS")
        .iter()
        .filter(|r| r[0] == db)
        .map(|r| {
            [6, 9, 10, 12]
                .iter()
                .map(|&i| r[i].parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum()
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

#[test]
fn pause_waits_for_servers_and_resume_loses_nothing() {
    const DB: &str = "admin_control_pause";
    let pg = Postgres::shared();
    pg.create_database(DB);
    let init = pg.pgbench(DB, &["-i", "-q", "-s", "1"]);
    assert!(init.ok, "pgbench -i: {}", init.stderr);
    let pooler = Pooler::start(&config());
    let port = pooler.port;
    let bench =
        thread::spawn(move || run_pgbench(port, "postgres", DB, None, &["-c", "10", "-T", "6"]));
    let busy = wait_until(Duration::from_secs(10), || open_servers(&pooler, DB) > 0);
    assert!(busy, "pgbench never got a server");

    pooler.admin(&format!("PAUSE {DB}")).expect("PAUSE");
    // PAUSE returns once every server is closed; PostgreSQL notices within moments.
    assert_eq!(open_servers(&pooler, DB), 0);
    let gone = wait_until(Duration::from_secs(2), || pg.backend_count(DB, None) == 0);
    assert!(
        gone,
        "{} backends left after PAUSE",
        pg.backend_count(DB, None)
    );
    let state = rows(&pooler, "SHOW DATABASES");
    let paused = state.iter().find(|r| r[0] == DB).expect("database row");
    assert_eq!(paused[15], "1", "paused column: {paused:?}");
    let waiting = wait_until(Duration::from_secs(5), || {
        rows(&pooler, "SHOW POOLS")
            .iter()
            .any(|r| r[0] == DB && r[3] != "0")
    });
    assert!(waiting, "no client queued while paused");

    pooler.admin(&format!("RESUME {DB}")).expect("RESUME");
    let result = bench.join().unwrap();
    assert!(
        result.ok,
        "pgbench failed: {}\n{}",
        result.stdout, result.stderr
    );
    assert_eq!(result.failed, 0, "{}", result.stdout);
    assert_eq!(result.aborted, 0, "{}", result.stderr);
    assert!(result.transactions > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_kill_client() {
    const DB: &str = "admin_control_kill";
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(&config());
    let conn = |app: &str| format!("{} application_name={app}", pooler.connstr(TRUST_USER, DB));
    let a = pg_connect(&conn("a")).await.unwrap();
    let b = pg_connect(&conn("b")).await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    b.simple_query("SELECT 1").await.unwrap();

    // KILL_CLIENT: exactly the client with that id.
    let clients = rows(&pooler, "SHOW CLIENTS");
    let id_of_a = clients.iter().find(|r| r[18] == "a").expect("client a")[20].clone();
    pooler
        .admin(&format!("KILL_CLIENT {id_of_a}"))
        .expect("KILL_CLIENT");
    let err = a
        .simple_query("SELECT 1")
        .await
        .expect_err("a survived KILL_CLIENT");
    assert!(err.is_closed() || sqlstate(&err) == Some("57P01"), "{err}");
    b.simple_query("SELECT 1").await.expect("b was killed too");
    let err = pooler.admin("KILL_CLIENT 999999").unwrap_err();
    assert!(err.contains("no such client"), "{err}");

    // KILL db: every client of the database goes, and it stays paused until RESUME.
    let console = pg_connect(&pooler.connstr("postgres", "pgbouncer"))
        .await
        .unwrap();
    console.simple_query(&format!("KILL {DB}")).await.unwrap();
    assert!(b.simple_query("SELECT 1").await.is_err(), "b survived KILL");
    console
        .simple_query("SHOW VERSION")
        .await
        .expect("KILL touched the console");
    let c = pg_connect(&conn("c")).await.unwrap();
    let query = tokio::spawn(async move { c.simple_query("SELECT 42").await.map(|_| c) });
    console.simple_query(&format!("RESUME {DB}")).await.unwrap();
    let c = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("a new client was not served after RESUME")
        .unwrap()
        .unwrap();
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_new_clients_until_enable() {
    const DB: &str = "admin_control_disable";
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(&config());
    let connected = pg_connect(&pooler.connstr(TRUST_USER, DB)).await.unwrap();
    pooler.admin(&format!("DISABLE {DB}")).expect("DISABLE");
    let err = pg_connect(&pooler.connstr(TRUST_USER, DB))
        .await
        .expect_err("a new client got in");
    assert_eq!(sqlstate(&err), Some("57P03"), "{err}");
    connected
        .simple_query("SELECT 1")
        .await
        .expect("a connected client was refused");
    let disabled = rows(&pooler, "SHOW DATABASES");
    assert_eq!(disabled.iter().find(|r| r[0] == DB).unwrap()[16], "1");
    pooler.admin(&format!("ENABLE {DB}")).expect("ENABLE");
    let again = pg_connect(&pooler.connstr(TRUST_USER, DB)).await.unwrap();
    again.simple_query("SELECT 1").await.unwrap();
    let err = pooler.admin("DISABLE pgbouncer").unwrap_err();
    assert!(err.contains("admin db"), "{err}");
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_waits_for_the_transaction_and_wait_close_for_old_servers() {
    const DB: &str = "admin_control_reconnect";
    let pg = Postgres::shared();
    pg.create_database(DB);
    let pooler = Pooler::start(&config());
    let c = pg_connect(&pooler.connstr(TRUST_USER, DB)).await.unwrap();
    let first = backend_pid(&c).await;
    c.simple_query("BEGIN").await.unwrap();
    assert_eq!(
        backend_pid(&c).await,
        first,
        "pool_size = 1: the same server"
    );

    pooler.admin(&format!("RECONNECT {DB}")).expect("RECONNECT");
    assert_eq!(
        backend_pid(&c).await,
        first,
        "replaced in the middle of a transaction"
    );
    let port = pooler.port;
    let wait_close = thread::spawn(move || {
        psql_conninfo(
            &conninfo("127.0.0.1", port, "postgres", "pgbouncer"),
            None,
            &format!("WAIT_CLOSE {DB}"),
        )
    });
    // The old server is still in use: WAIT_CLOSE must still be waiting.
    assert_eq!(backend_pid(&c).await, first);
    assert!(
        !wait_close.is_finished(),
        "WAIT_CLOSE returned while the old server was in use"
    );
    c.simple_query("COMMIT").await.unwrap();

    let done = wait_until(Duration::from_secs(10), || wait_close.is_finished());
    assert!(
        done,
        "WAIT_CLOSE did not return after the old server was released"
    );
    wait_close.join().unwrap().expect("WAIT_CLOSE failed");
    let pid_gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}");
    assert!(wait_until(Duration::from_secs(2), || pg
        .psql("postgres", &pid_gone)
        == "0"));
    let second = backend_pid(&c).await;
    assert_ne!(second, first, "RECONNECT did not replace the server");
    assert_eq!(backend_pid(&c).await, second);
}

#[test]
fn stats_users_cannot_control() {
    let pooler = Pooler::start(&config());
    for cmd in [
        "PAUSE",
        "RESUME",
        "KILL_CLIENT 1",
        "RECONNECT",
        "WAIT_CLOSE",
        "SHUTDOWN",
    ] {
        let err = pooler.psql(TRUST_USER, "pgbouncer", None, cmd).unwrap_err();
        assert!(err.contains("permission denied"), "{cmd}: {err}");
    }
    let (mut raw, _) = RawClient::login_trust(pooler.port, TRUST_USER, "pgbouncer");
    let msgs = raw.query("PAUSE");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("42501"), "{msgs:?}");
    assert!(pooler.admin("SHOW STATE").unwrap().contains("paused|no"));
}

#[test]
fn kill_all_spares_console_sessions() {
    let pooler = Pooler::start(&config());
    let (mut other, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    pooler.admin("KILL").expect("KILL");
    // Like PgBouncer, KILL without a database leaves the admin console alone.
    let msgs = other.query("SHOW VERSION");
    assert_eq!(
        msgs[0].tag, b'T',
        "another console session was killed: {msgs:?}"
    );
    pooler.admin("RESUME").expect("RESUME");
}

#[test]
fn set_and_reload() {
    let pooler = Pooler::start(&config());
    let value = |key: &str| {
        rows(&pooler, "SHOW CONFIG")
            .into_iter()
            .find(|r| r[0] == key)
            .map(|r| r[1].clone())
    };
    pooler.admin("SET default_pool_size = 7").expect("SET");
    assert_eq!(value("default_pool_size").as_deref(), Some("7"));
    pooler
        .admin("set server_check_query to 'select 2'")
        .expect("SET to");
    assert_eq!(value("server_check_query").as_deref(), Some("select 2"));
    let (mut raw, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let msgs = raw.query("SET listen_port = 1");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("55P02"), "{msgs:?}");
    // Driver noise is accepted whoever sends it.
    let msgs = raw.query("SET extra_float_digits = 3; SET TIME ZONE 'UTC'");
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"CCZ");
    // RELOAD re-reads the file: the file's pool size is back.
    pooler.admin("RELOAD").expect("RELOAD");
    assert_eq!(value("default_pool_size").as_deref(), Some("5"));
}
