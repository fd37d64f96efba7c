//! Client authentication with auth_type = scram-sha-256: plain and SCRAM secrets, failures, channel binding.

mod common;
use common::*;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use postgres_protocol::message::frontend;

/// auth_type scram-sha-256; server connections log in as trust_user, so only the client side is under test.
const CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "scram-sha-256"
auth_file = "{dir}/userlist.txt"
default_pool_size = 5

[databases]
{test_db} = { host = "{pg_host}", port = {pg_port}, user = "trust_user" }
"#;

/// The pooler with plain_user (cleartext secret), scram_user (PostgreSQL's own SCRAM verifier)
/// and md5_user (md5 verifier, which cannot do SCRAM) in its auth file.
fn start(db: &str) -> Pooler {
    let pg = Postgres::shared();
    pg.create_database(db);
    let scram_secret = pg.role_secret(SCRAM_USER);
    let md5_secret = pg.role_secret(MD5_USER);
    assert!(scram_secret.starts_with("SCRAM-SHA-256$"), "{scram_secret}");
    assert!(md5_secret.starts_with("md5"), "{md5_secret}");
    Pooler::start_with_userlist(
        pg,
        &CONFIG.replace("{test_db}", db),
        &[
            (PLAIN_USER, PLAIN_PASSWORD),
            (SCRAM_USER, &scram_secret),
            (MD5_USER, &md5_secret),
        ],
    )
}

/// First column of the first row, over the simple query protocol: in transaction mode the
/// pooler does not carry tokio-postgres' named prepared statements from one transaction to the next.
async fn simple_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

fn failed_message(user: &str) -> String {
    format!("password authentication failed for user \"{user}\"")
}

fn with_password(pooler: &Pooler, user: &str, db: &str, password: &str) -> String {
    format!("{} password={password}", pooler.connstr(user, db))
}

/// Expects tokio-postgres' login to fail with 28P01 and the standard message.
async fn assert_refused(connstr: &str, user: &str) {
    let err = pg_connect(connstr)
        .await
        .expect_err("the login was accepted");
    let db_err = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{user}: not a server error: {err}"));
    assert_eq!(db_err.code().code(), "28P01", "{user}: {err}");
    assert_eq!(db_err.message(), failed_message(user), "{user}");
    assert_eq!(db_err.severity(), "FATAL", "{user}");
}

/// Startup as `user`; returns the connection after checking the AuthenticationSASL request.
fn sasl_started(port: u16, db: &str, user: &str) -> RawClient {
    let mut raw = RawClient::connect(port);
    raw.startup(user, db, &[]);
    let ask = raw.recv().expect("an authentication request");
    assert_eq!(ask.auth_code(), Some(10), "{user}: {ask:?}");
    // Exactly one mechanism, SCRAM-SHA-256: no -PLUS variant to select.
    assert_eq!(&ask.body[4..], b"SCRAM-SHA-256\0\0", "{user}: {ask:?}");
    raw
}

#[test]
fn libpq_logs_in_with_plain_and_scram_secrets() {
    let db = "auth_scram_libpq";
    let pooler = start(db);
    let script = pooler.dir.join("select.sql");
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    let script = script.display().to_string();
    for (user, password) in [(PLAIN_USER, PLAIN_PASSWORD), (SCRAM_USER, SCRAM_PASSWORD)] {
        let out = pooler.psql(user, db, Some(password), "SELECT current_user");
        assert_eq!(out.as_deref(), Ok(TRUST_USER), "psql as {user}");

        // pgbench connects every client with the password, so each one does a SCRAM exchange.
        let run = run_pgbench(
            pooler.port,
            user,
            db,
            Some(password),
            &["-n", "-f", &script, "-c", "3", "-j", "1", "-t", "5"],
        );
        assert!(run.ok, "pgbench as {user}:\n{}\n{}", run.stdout, run.stderr);
        assert_eq!(run.transactions, 15, "{run:?}");
        assert_eq!((run.failed, run.aborted), (0, 0), "{run:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_logs_in_with_plain_and_scram_secrets() {
    let db = "auth_scram_tokio";
    let pooler = start(db);
    for (user, password) in [(PLAIN_USER, PLAIN_PASSWORD), (SCRAM_USER, SCRAM_PASSWORD)] {
        let client = pg_connect(&with_password(&pooler, user, db, password))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(simple_value(&client, "SELECT 40 + 2").await, "42", "{user}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_are_refused_alike() {
    let db = "auth_scram_wrong";
    let pooler = start(db);
    for user in [PLAIN_USER, SCRAM_USER, "no_such_user"] {
        assert_refused(&with_password(&pooler, user, db, "wrong"), user).await;
        let err = pooler
            .psql(user, db, Some("wrong"), "SELECT 1")
            .expect_err("wrong password accepted by psql");
        assert!(err.contains(&failed_message(user)), "{user}: {err}");
    }
    // An unknown user is offered the same SCRAM exchange as a known one.
    let raw = sasl_started(pooler.port, db, "no_such_user");
    drop(raw);
    // Still serving.
    let client = pg_connect(&with_password(&pooler, SCRAM_USER, db, SCRAM_PASSWORD))
        .await
        .expect("good login after failures");
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_secret_cannot_do_scram() {
    let db = "auth_scram_md5";
    let pooler = start(db);
    // Even the right password: an md5 verifier cannot check a SCRAM proof.
    assert_refused(
        &with_password(&pooler, MD5_USER, db, MD5_PASSWORD),
        MD5_USER,
    )
    .await;
    let err = pooler
        .psql(MD5_USER, db, Some(MD5_PASSWORD), "SELECT 1")
        .expect_err("md5 secret accepted over SCRAM");
    assert!(err.contains(&failed_message(MD5_USER)), "{err}");
    // The pooler survived and serves others.
    let client = pg_connect(&with_password(&pooler, PLAIN_USER, db, PLAIN_PASSWORD))
        .await
        .expect("good login after the md5 user");
    client.simple_query("SELECT 1").await.unwrap();
}

#[test]
fn channel_binding_require_fails_cleanly() {
    let db = "auth_scram_cbind";
    let pooler = start(db);
    let started = Instant::now();
    let conninfo = format!("{} channel_binding=require", pooler.connstr(SCRAM_USER, db));
    let err = psql_conninfo(&conninfo, Some(SCRAM_PASSWORD), "SELECT 1")
        .expect_err("channel_binding=require succeeded without channel binding");
    assert!(err.contains("channel binding"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "psql took {:?} to fail",
        started.elapsed()
    );
    // libpq's default (prefer) still logs in: it falls back to plain SCRAM-SHA-256.
    let out = pooler.psql(SCRAM_USER, db, Some(SCRAM_PASSWORD), "SELECT 1");
    assert_eq!(out.as_deref(), Ok("1"));
}

#[test]
fn scram_plus_is_refused_at_wire_level() {
    let db = "auth_scram_plus";
    let pooler = start(db);

    // A client that selects SCRAM-SHA-256-PLUS anyway (with a p= gs2 header) gets a FATAL error.
    let mut raw = sasl_started(pooler.port, db, SCRAM_USER);
    let scram = ScramSha256::new(
        SCRAM_PASSWORD.as_bytes(),
        ChannelBinding::tls_server_end_point(vec![0; 32]),
    );
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response(SCRAM_SHA_256_PLUS, scram.message(), &mut buf).unwrap();
    raw.send(&buf);
    let err = raw.recv().expect("an answer to SCRAM-SHA-256-PLUS");
    assert!(err.is_error(), "{err:?}");
    assert_eq!(err.field(b'S').as_deref(), Some("FATAL"), "{err:?}");
    assert_eq!(err.field(b'C').as_deref(), Some("08P01"), "{err:?}");
    assert!(raw.recv().is_none(), "connection left open");

    // "p=" with the plain mechanism name is refused the same way.
    let mut raw = sasl_started(pooler.port, db, SCRAM_USER);
    buf.clear();
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut buf).unwrap();
    raw.send(&buf);
    let err = raw.recv().expect("an answer to a p= header");
    assert_eq!(err.field(b'C').as_deref(), Some("08P01"), "{err:?}");
    assert!(raw.recv().is_none(), "connection left open");

    // A client that supports channel binding but sees none offered says "y": that is fine.
    let mut raw = sasl_started(pooler.port, db, SCRAM_USER);
    let mut scram = ScramSha256::new(SCRAM_PASSWORD.as_bytes(), ChannelBinding::unrequested());
    assert!(scram.message().starts_with(b"y,,"));
    buf.clear();
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut buf).unwrap();
    raw.send(&buf);
    let cont = raw.recv().expect("AuthenticationSASLContinue");
    assert_eq!(cont.auth_code(), Some(11), "{cont:?}");
    scram.update(&cont.body[4..]).expect("server-first-message");
    buf.clear();
    frontend::sasl_response(scram.message(), &mut buf).unwrap();
    raw.send(&buf);
    let fin = raw.recv().expect("AuthenticationSASLFinal");
    assert_eq!(fin.auth_code(), Some(12), "{fin:?}");
    scram.finish(&fin.body[4..]).expect("server signature");
    let login = raw.recv_until_ready();
    assert_eq!(login.first().and_then(Msg::auth_code), Some(0), "{login:?}");
    let reply = raw.query("SELECT 1");
    assert_eq!(data_rows(&reply), vec![vec![Some("1".to_string())]]);
}
