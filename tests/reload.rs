//! RELOAD (console and SIGHUP) under load: pool size, databases, users and hosts change with no
//! client error; invalid files, restart-only keys, removed databases and SET at run time.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

const PW: &str = "reload_pw";
const NEW_USER_PW: &str = "reload_new_pw";

/// md5 logins checked against `{dir}/userlist.txt`; PostgreSQL trusts the pooler's logins.
const MD5_CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "md5"
auth_file = "{dir}/userlist.txt"
admin_users = "postgres"
default_pool_size = 5
max_client_conn = 400

[databases]
reload_load = { host = "127.0.0.1", port = {pg_port} }
"#;

/// Replaces `from` by `to` in the running config file (which must contain `from`).
fn edit(pooler: &Pooler, from: &str, to: &str) {
    let path = pooler.dir.join("config.toml");
    let text = fs::read_to_string(&path).expect("read config.toml");
    assert!(text.contains(from), "config.toml has no {from:?}:\n{text}");
    fs::write(&path, text.replacen(from, to, 1)).expect("write config.toml");
}

/// The pooler's server connections to `db` as seen by PostgreSQL (pids).
fn server_pids(db: &str) -> BTreeSet<i64> {
    Postgres::shared()
        .psql(
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND datname = '{db}' AND usename = 'postgres'"
            ),
        )
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_lose_no_client() {
    const DB: &str = "reload_load";
    let pg = Postgres::shared();
    pg.create_database(DB);
    pg.create_database("reload_added");
    let init = pg.pgbench(DB, &["-i", "-q", "-s", "1"]);
    assert!(init.ok, "pgbench -i: {}", init.stderr);
    let pooler = Pooler::start_with_userlist(pg, MD5_CONFIG, &[("postgres", PW)]);
    let admin = |sql: &str| pooler.psql("postgres", "pgbouncer", Some(PW), sql);
    let connstr =
        |user: &str, db: &str, pw: &str| format!("{} password={pw}", pooler.connstr(user, db));

    let mut idle = Vec::new();
    for _ in 0..200 {
        let c = pg_connect(&connstr("postgres", DB, PW))
            .await
            .expect("idle client login");
        idle.push(c);
    }
    let port = pooler.port;
    let bench = std::thread::spawn(move || {
        run_pgbench(
            port,
            "postgres",
            DB,
            Some(PW),
            &["-c", "20", "-j", "4", "-T", "15", "-n"],
        )
    });
    let backends = || pg.backend_count(DB, Some("postgres"));
    assert!(
        wait_until(Duration::from_secs(10), || backends() == 5),
        "pool of 5 under load"
    );

    // 1. A bigger pool (console RELOAD).
    edit(&pooler, "default_pool_size = 5", "default_pool_size = 8");
    admin("RELOAD").expect("RELOAD");
    assert!(
        wait_until(Duration::from_secs(10), || backends() == 8),
        "pool grew to 8"
    );

    // 2. A new database (SIGHUP).
    let added = connstr("postgres", "reload_added", PW);
    let Err(e) = pg_connect(&added).await else {
        panic!("a database not yet configured accepted a login");
    };
    assert_eq!(sqlstate(&e), "3D000", "{e}");
    edit(
        &pooler,
        "[databases]\n",
        "[databases]\nreload_added = { host = \"127.0.0.1\", port = PG_PORT }\n"
            .replace("PG_PORT", &pg.port.to_string())
            .as_str(),
    );
    pooler.signal(libc::SIGHUP);
    let mut client = None;
    wait_until(Duration::from_secs(10), || {
        client = futures_block(pg_connect(&added));
        client.is_some()
    });
    let client = client.expect("login to the added database");
    let row = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "reload_added");

    // 3. A new user in the auth file (console RELOAD).
    let new_user = connstr(TRUST_USER, DB, NEW_USER_PW);
    assert!(
        pg_connect(&new_user).await.is_err(),
        "unknown user logged in"
    );
    Pooler::write_userlist(&pooler.dir, &[("postgres", PW), (TRUST_USER, NEW_USER_PW)]);
    admin("RELOAD").expect("RELOAD");
    let c = pg_connect(&new_user)
        .await
        .expect("the new user logs in after RELOAD");
    assert_eq!(
        c.query_one("SELECT current_user", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        TRUST_USER
    );

    // 4. Another host name for the same server (SIGHUP): servers are replaced as released.
    let old = server_pids(DB);
    assert!(!old.is_empty());
    edit(
        &pooler,
        "reload_load = { host = \"127.0.0.1\"",
        "reload_load = { host = \"localhost\"",
    );
    pooler.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = server_pids(DB);
            !now.is_empty() && now.is_disjoint(&old)
        }),
        "servers from before the host change are still in use: {old:?} / {:?}",
        server_pids(DB)
    );
    let dbs = admin("SHOW DATABASES").unwrap();
    assert!(
        dbs.lines().any(|l| l.starts_with("reload_load|localhost|")),
        "{dbs}"
    );
    let pid: i32 = idle[0]
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !old.contains(&i64::from(pid)),
        "a new transaction ran on an old server"
    );

    // 5. A smaller pool (console RELOAD): surplus servers close as they come back.
    edit(&pooler, "default_pool_size = 8", "default_pool_size = 3");
    admin("RELOAD").expect("RELOAD");
    assert!(
        wait_until(Duration::from_secs(10), || backends() <= 3),
        "pool shrank to 3"
    );

    let result = bench.join().expect("pgbench thread");
    assert!(
        result.ok && result.failed == 0 && result.aborted == 0,
        "pgbench: {}\n{}",
        result.stdout,
        result.stderr
    );
    assert!(result.transactions > 0);
    for (i, c) in idle.iter().enumerate() {
        let v: i32 = c
            .query_one("SELECT 1", &[])
            .await
            .unwrap_or_else(|e| panic!("idle client {i}: {e}"))
            .get(0);
        assert_eq!(v, 1);
    }
}

/// Runs a future to completion from a blocking closure inside the multi-thread runtime.
fn futures_block<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Option<T> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f)).ok()
}

#[test]
fn an_invalid_file_keeps_the_running_settings() {
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let pool_size = || {
        pooler.admin("SHOW CONFIG").unwrap().lines().find_map(|l| {
            l.strip_prefix("default_pool_size|")
                .map(|r| r.split('|').next().unwrap_or("").to_string())
        })
    };
    edit(
        &pooler,
        "default_pool_size = 5",
        "default_pool_size = \"lots\"",
    );
    let err = pooler
        .admin("RELOAD")
        .expect_err("RELOAD of an invalid file");
    let file = pooler.dir.join("config.toml").display().to_string();
    assert!(
        err.contains(&file) && err.contains("pooler.default_pool_size"),
        "{err}"
    );
    assert_eq!(pool_size().as_deref(), Some("5"));
    pooler.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || pooler
        .log()
        .contains("SIGHUP: reload failed")));
    assert_eq!(pool_size().as_deref(), Some("5"));
    assert_eq!(
        pooler.psql("postgres", "app", None, "SELECT 1").as_deref(),
        Ok("1")
    );
}

#[test]
fn listen_port_needs_a_restart() {
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let other = free_port();
    edit(
        &pooler,
        &format!("listen_port = {}", pooler.port),
        &format!("listen_port = {other}"),
    );
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let msgs = console.query("RELOAD");
    assert!(!msgs.iter().any(Msg::is_error), "{msgs:?}");
    let notice = msgs
        .iter()
        .filter(|m| m.tag == b'N')
        .filter_map(|m| m.field(b'M'))
        .find(|m| m.contains("listen_port"));
    assert!(notice.is_some(), "no notice names listen_port: {msgs:?}");
    assert_eq!(
        pooler.psql("postgres", "app", None, "SELECT 1").as_deref(),
        Ok("1")
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "listening on the new port"
    );
    let config = pooler.admin("SHOW CONFIG").unwrap();
    assert!(
        config
            .lines()
            .any(|l| l.starts_with(&format!("listen_port|{}|", pooler.port))),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_database_refuses_new_clients_only() {
    const DB: &str = "reload_gone";
    Postgres::shared().create_database(DB);
    let entry = "reload_gone = { host = \"{pg_host}\", port = {pg_port} }\n";
    let pooler = Pooler::start(&TRUST_TRANSACTION_CONFIG.replace("\"*\" = ", &format!("{entry}#")));
    let connstr = pooler.connstr("postgres", DB);
    let client = pg_connect(&connstr).await.expect("login");
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let text = fs::read_to_string(pooler.dir.join("config.toml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("reload_gone ="))
        .unwrap()
        .to_string();
    edit(&pooler, &line, "");
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let msgs = console.query("RELOAD");
    assert!(
        msgs.iter()
            .any(|m| m.field(b'M').is_some_and(|t| t.contains(DB))),
        "{msgs:?}"
    );
    let Err(e) = pg_connect(&connstr).await else {
        panic!("a removed database accepted a new client");
    };
    assert_eq!(sqlstate(&e), "3D000", "{e}");
    // The connected client finishes its transaction.
    let v: i32 = client.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
    client.batch_execute("COMMIT").await.expect("COMMIT");
}

#[test]
fn set_default_pool_size_under_load() {
    const DB: &str = "reload_set";
    let pg = Postgres::shared();
    pg.create_database(DB);
    assert!(pg.pgbench(DB, &["-i", "-q", "-s", "1"]).ok);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let port = pooler.port;
    let bench = std::thread::spawn(move || {
        run_pgbench(
            port,
            "postgres",
            DB,
            None,
            &["-c", "12", "-j", "2", "-T", "8", "-n"],
        )
    });
    let count = || pg.backend_count(DB, None);
    assert!(
        wait_until(Duration::from_secs(6), || count() == 5),
        "5 servers before SET"
    );
    pooler.admin("SET default_pool_size = 7").expect("SET");
    let mut max = 0;
    let reached = wait_until(Duration::from_secs(6), || {
        max = max.max(count());
        max == 7
    });
    let result = bench.join().unwrap();
    assert!(
        reached,
        "pg_stat_activity never showed 7 servers (max {max})"
    );
    assert!(result.ok && result.failed == 0, "{}", result.stderr);
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let msgs = console.query("SET listen_port = 7777");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("55P02"), "{msgs:?}");
    assert!(
        msgs[0]
            .field(b'M')
            .is_some_and(|m| m.contains("listen_port")),
        "{msgs:?}"
    );
}
