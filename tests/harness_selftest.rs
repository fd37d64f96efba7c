//! Self-test of the integration-test harness against PostgreSQL alone (no pooler involved).

mod common;
use common::*;

use std::net::TcpStream;
use std::time::Duration;

const PASSWORD_USERS: [(&str, &str); 3] = [
    (MD5_USER, MD5_PASSWORD),
    (SCRAM_USER, SCRAM_PASSWORD),
    (PLAIN_USER, PLAIN_PASSWORD),
];

#[test]
fn shared_cluster_starts_once() {
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| Postgres::shared() as *const Postgres as usize))
        .collect();
    let addrs: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(addrs.windows(2).all(|w| w[0] == w[1]), "{addrs:?}");
    let pg = Postgres::shared();
    assert_eq!(pg.psql("app", "SELECT 1"), "1");
    assert_eq!(pg.psql("postgres", "SHOW max_connections"), "300");
    assert_eq!(pg.psql("postgres", "SHOW fsync"), "off");
}

#[test]
fn unix_socket_accepts_the_superuser() {
    let pg = Postgres::shared();
    let socket = pg.socket_dir.display().to_string();
    let out = psql_conninfo(
        &format!("host={socket} port={} user=postgres dbname=app", pg.port),
        None,
        "SELECT current_user",
    );
    assert_eq!(out.as_deref(), Ok("postgres"));
}

#[test]
fn passwords_are_stored_as_configured() {
    let pg = Postgres::shared();
    let stored = pg.psql(
        "postgres",
        "SELECT rolname || ':' || coalesce(left(rolpassword, 14), '-') FROM pg_authid \
         WHERE rolname LIKE '%\\_user' ORDER BY rolname",
    );
    let lines: Vec<&str> = stored.lines().collect();
    assert_eq!(lines.len(), 4, "{stored}");
    assert!(lines[0].starts_with("md5_user:md5"), "{stored}");
    assert!(
        lines[1].starts_with("plain_user:SCRAM-SHA-256$"),
        "{stored}"
    );
    assert!(
        lines[2].starts_with("scram_user:SCRAM-SHA-256$"),
        "{stored}"
    );
    assert_eq!(lines[3], "trust_user:-", "{stored}");
    assert!(pg.role_secret(MD5_USER).starts_with("md5"));
    assert!(
        pg.role_secret(SCRAM_USER)
            .starts_with("SCRAM-SHA-256$4096:")
    );
    assert_eq!(pg.role_secret(TRUST_USER), "");
}

/// The server asks each role for the authentication method its pg_hba.conf line names.
#[test]
fn each_role_gets_its_auth_method() {
    let pg = Postgres::shared();
    for (user, code) in [
        (MD5_USER, 5),
        (SCRAM_USER, 10),
        (PLAIN_USER, 3),
        (TRUST_USER, 0),
    ] {
        let mut client = RawClient::connect(pg.port);
        client.startup(user, "app", &[]);
        let first = client.recv().expect("an authentication request");
        assert_eq!(first.auth_code(), Some(code), "{user}: {first:?}");
    }
}

#[tokio::test]
async fn roles_log_in_with_tokio_postgres() {
    let pg = Postgres::shared();
    for (user, password) in PASSWORD_USERS {
        let good = format!("{} password={password}", pg.connstr(user, "app"));
        let client = pg_connect(&good)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);

        let bad = format!("{} password=wrong", pg.connstr(user, "app"));
        let err = pg_connect(&bad).await.expect_err("wrong password accepted");
        let code = err.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("28P01"), "{user}: {err}");
    }
    let client = pg_connect(&pg.connstr(TRUST_USER, "app")).await.unwrap();
    let row = client.query_one("SELECT 40 + 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[test]
fn roles_log_in_with_psql() {
    let pg = Postgres::shared();
    for (user, password) in PASSWORD_USERS {
        let connstr = pg.connstr(user, "app");
        let who = psql_conninfo(&connstr, Some(password), "SELECT current_user");
        assert_eq!(who.as_deref(), Ok(user));
        let err = psql_conninfo(&connstr, Some("wrong"), "SELECT 1").unwrap_err();
        assert!(
            err.contains("password authentication failed"),
            "{user}: {err}"
        );
        let err = psql_conninfo(&connstr, None, "SELECT 1").unwrap_err();
        assert!(err.contains("no password supplied"), "{user}: {err}");
    }
    let who = psql_conninfo(&pg.connstr(TRUST_USER, "app"), None, "SELECT current_user");
    assert_eq!(who.as_deref(), Ok(TRUST_USER));
}

#[test]
fn psql_reports_errors() {
    let pg = Postgres::shared();
    let err = pg.try_psql("app", "SELECT no_such_column").unwrap_err();
    assert!(err.contains("no_such_column"), "{err}");
}

// Multi-thread: the connection task must run while this test blocks on psql.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_count_sees_a_connection() {
    let pg = Postgres::shared();
    pg.create_database("selftest_backends");
    assert_eq!(pg.backend_count("selftest_backends", None), 0);
    let client = pg_connect(&pg.connstr(TRUST_USER, "selftest_backends"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(pg.backend_count("selftest_backends", None), 1);
    assert_eq!(pg.backend_count("selftest_backends", Some(TRUST_USER)), 1);
    assert_eq!(pg.backend_count("selftest_backends", Some(MD5_USER)), 0);
    drop(client);
    let gone = wait_until(Duration::from_secs(10), || {
        pg.backend_count("selftest_backends", None) == 0
    });
    assert!(gone, "the backend did not go away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_immediate_on_a_private_cluster() {
    let pg = Postgres::start(PgOptions {
        max_connections: 20,
        extra_conf: vec!["work_mem = '7MB'".into()],
    });
    assert_eq!(pg.psql("postgres", "SHOW max_connections"), "20");
    assert_eq!(pg.psql("postgres", "SHOW work_mem"), "7MB");
    let started = pg.psql("postgres", "SELECT pg_postmaster_start_time()");
    let client = pg_connect(&pg.connstr(TRUST_USER, "app")).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart_immediate();
        pg
    })
    .await
    .unwrap();
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert_ne!(
        pg.psql("postgres", "SELECT pg_postmaster_start_time()"),
        started
    );
    let client = pg_connect(&(pg.connstr(SCRAM_USER, "app") + " password=scram_pass"))
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);

    let (port, data_dir) = (pg.port, pg.data_dir.clone());
    let root = data_dir.parent().unwrap().to_path_buf();
    drop(pg);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
}

#[test]
fn raw_client_talks_to_postgres() {
    let pg = Postgres::shared();
    let (mut client, login) = RawClient::login_trust(pg.port, TRUST_USER, "app");
    assert!(login.iter().any(|m| m.tag == b'K'), "{login:?}");
    assert!(
        login
            .iter()
            .any(|m| m.tag == b'S' && m.body.starts_with(b"server_version\0")),
        "{login:?}"
    );

    let reply = client.query("SELECT 1");
    assert_eq!(data_rows(&reply), vec![vec![Some("1".to_string())]]);
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'C' && m.body == b"SELECT 1\0")
    );

    let reply = client.query("SELECT 1/0");
    let err = reply.iter().find(|m| m.is_error()).expect("an error");
    assert_eq!(err.field(b'C').as_deref(), Some("22012"));

    let mut batch = fe::parse("", "SELECT $1::int + 1, NULL::text", &[]);
    batch.extend(fe::bind("", "", &[Some(b"41")]));
    batch.extend(fe::describe(b'P', ""));
    batch.extend(fe::execute("", 0));
    batch.extend(fe::sync());
    client.send(&batch);
    let reply = client.recv_until_ready();
    let tags: String = reply.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, "12TDCZ");
    assert_eq!(data_rows(&reply), vec![vec![Some("42".to_string()), None]]);

    client.send(&fe::terminate());
    assert!(client.recv().is_none());
}

#[test]
fn pgbench_runs_and_parses() {
    let pg = Postgres::shared();
    pg.create_database("selftest_pgbench");
    let init = pg.pgbench("selftest_pgbench", &["-i", "-s", "1", "-q"]);
    assert!(
        init.ok,
        "pgbench -i failed:\n{}\n{}",
        init.stdout, init.stderr
    );
    let run = pg.pgbench("selftest_pgbench", &["-c", "4", "-j", "2", "-T", "2"]);
    assert!(run.ok, "pgbench failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.tps > 0.0, "{run:?}");
    assert!(run.transactions > 0, "{run:?}");
    assert!(run.latency_ms > 0.0, "{run:?}");
    assert_eq!((run.failed, run.aborted), (0, 0), "{run:?}");
}

#[test]
fn pgbench_output_parsing() {
    let stdout = "transaction type: <builtin: TPC-B (sort of)>\n\
        number of transactions actually processed: 1500/2000\n\
        number of failed transactions: 3 (0.200%)\n\
        latency average = 12.345 ms\n\
        initial connection time = 4.321 ms\n\
        tps = 810.123456 (without initial connection time)\n";
    let stderr = "pgbench: error: client 7 aborted in command 4 (SQL) of script 0; boom\n\
        client 3 aborted in command 1 of script 0\n";
    let r = PgbenchResult::parse(false, stdout, stderr);
    assert_eq!((r.transactions, r.failed, r.aborted), (1500, 3, 2));
    assert!((r.tps - 810.123456).abs() < 1e-9);
    assert!((r.latency_ms - 12.345).abs() < 1e-9);
    assert!(!r.ok);
}

#[test]
fn same_database_created_in_parallel_a() {
    create_in_parallel("selftest_parallel");
}

#[test]
fn same_database_created_in_parallel_b() {
    create_in_parallel("selftest_parallel");
}

fn create_in_parallel(name: &'static str) {
    let pg = Postgres::shared();
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || Postgres::shared().create_database(name)))
        .collect();
    for t in threads {
        t.join().expect("create_database panicked");
    }
    assert_eq!(pg.psql(name, "SELECT current_database()"), name);
}

#[test]
fn free_ports_are_distinct() {
    let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn a_failed_start_shows_the_postgres_log() {
    let result = std::panic::catch_unwind(|| {
        Postgres::start(PgOptions {
            extra_conf: vec!["no_such_setting = 1".into()],
            ..PgOptions::default()
        })
    });
    let payload = result
        .err()
        .expect("the cluster started with a bad setting");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("unrecognized configuration parameter \"no_such_setting\""),
        "{message}"
    );
}
