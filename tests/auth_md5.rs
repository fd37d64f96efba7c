//! Client authentication with auth_type = md5: plain and md5 secrets, automatic switch to SCRAM for SCRAM secrets.

mod common;
use common::*;

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;

/// auth_type md5; server connections log in as trust_user, so only the client side is under test.
const CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "md5"
auth_file = "{dir}/userlist.txt"
default_pool_size = 5

[databases]
{test_db} = { host = "{pg_host}", port = {pg_port}, user = "trust_user" }
"#;

/// The pooler with plain_user (cleartext secret), md5_user (md5 verifier from pg_authid) and
/// scram_user (SCRAM verifier from pg_authid) in its auth file.
fn start(db: &str) -> Pooler {
    let pg = Postgres::shared();
    pg.create_database(db);
    let md5_secret = pg.role_secret(MD5_USER);
    let scram_secret = pg.role_secret(SCRAM_USER);
    assert!(md5_secret.starts_with("md5"), "{md5_secret}");
    assert!(scram_secret.starts_with("SCRAM-SHA-256$"), "{scram_secret}");
    Pooler::start_with_userlist(
        pg,
        &CONFIG.replace("{test_db}", db),
        &[
            (PLAIN_USER, PLAIN_PASSWORD),
            (MD5_USER, &md5_secret),
            (SCRAM_USER, &scram_secret),
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

/// The salt of an AuthenticationMD5Password message.
fn md5_salt(msg: &Msg) -> [u8; 4] {
    assert_eq!(msg.auth_code(), Some(5), "not an md5 request: {msg:?}");
    msg.body[4..8].try_into().expect("4-byte salt")
}

/// Reads until ReadyForQuery or EOF.
fn rest_of_login(raw: &mut RawClient) -> Vec<Msg> {
    let mut msgs = Vec::new();
    while let Some(m) = raw.recv() {
        let done = m.tag == b'Z';
        msgs.push(m);
        if done {
            break;
        }
    }
    msgs
}

/// md5 login over the wire; checks the pooler asks for md5, answers with md5(md5(password user) salt).
fn raw_md5_login(port: u16, db: &str, user: &str, password: &str) -> (RawClient, Vec<Msg>) {
    let mut raw = RawClient::connect(port);
    raw.startup(user, db, &[]);
    let ask = raw.recv().expect("an authentication request");
    let salt = md5_salt(&ask);
    raw.send(&fe::password(&md5_hash(
        user.as_bytes(),
        password.as_bytes(),
        salt,
    )));
    let msgs = rest_of_login(&mut raw);
    (raw, msgs)
}

fn assert_logged_in(what: &str, msgs: &[Msg]) {
    assert!(
        msgs.first().and_then(Msg::auth_code) == Some(0)
            && msgs.last().is_some_and(|m| m.tag == b'Z')
            && !msgs.iter().any(Msg::is_error),
        "{what}: {msgs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_logs_in_with_plain_and_md5_secrets() {
    let db = "auth_md5_ok";
    let pooler = start(db);
    for (user, password) in [(PLAIN_USER, PLAIN_PASSWORD), (MD5_USER, MD5_PASSWORD)] {
        let (mut raw, msgs) = raw_md5_login(pooler.port, db, user, password);
        assert_logged_in(user, &msgs);
        let reply = raw.query("SELECT current_user");
        assert_eq!(data_rows(&reply), vec![vec![Some(TRUST_USER.to_string())]]);

        let out = pooler.psql(user, db, Some(password), "SELECT 6 * 7");
        assert_eq!(out.as_deref(), Ok("42"), "psql as {user}");

        let connstr = format!("{} password={password}", pooler.connstr(user, db));
        let client = pg_connect(&connstr)
            .await
            .unwrap_or_else(|e| panic!("tokio-postgres as {user}: {e}"));
        assert_eq!(simple_value(&client, "SELECT 40 + 2").await, "42");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_secret_switches_to_scram() {
    let db = "auth_md5_scram";
    let pooler = start(db);

    // At byte level: AuthenticationSASL (10) listing SCRAM-SHA-256, not AuthenticationMD5Password (5).
    let mut raw = RawClient::connect(pooler.port);
    raw.startup(SCRAM_USER, db, &[]);
    let ask = raw.recv().expect("an authentication request");
    assert_eq!(ask.auth_code(), Some(10), "{ask:?}");
    assert_eq!(&ask.body[4..], b"SCRAM-SHA-256\0\0", "{ask:?}");

    // And the SCRAM exchange completes on that connection.
    let mut scram = ScramSha256::new(SCRAM_PASSWORD.as_bytes(), ChannelBinding::unsupported());
    let mut buf = BytesMut::new();
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
    scram
        .finish(&fin.body[4..])
        .expect("the pooler's server signature verifies");
    let msgs = rest_of_login(&mut raw);
    assert_logged_in("raw SCRAM", &msgs);
    let reply = raw.query("SELECT 1");
    assert_eq!(data_rows(&reply), vec![vec![Some("1".to_string())]]);

    // Users with md5/plain secrets keep getting md5 on the same pooler.
    for user in [MD5_USER, PLAIN_USER] {
        let mut raw = RawClient::connect(pooler.port);
        raw.startup(user, db, &[]);
        let ask = raw.recv().expect("an authentication request");
        assert_eq!(ask.auth_code(), Some(5), "{user}: {ask:?}");
    }

    // libpq and tokio-postgres follow the switch transparently.
    let out = pooler.psql(SCRAM_USER, db, Some(SCRAM_PASSWORD), "SELECT 6 * 7");
    assert_eq!(out.as_deref(), Ok("42"));
    let connstr = format!(
        "{} password={SCRAM_PASSWORD}",
        pooler.connstr(SCRAM_USER, db)
    );
    let client = pg_connect(&connstr).await.expect("tokio-postgres SCRAM");
    assert_eq!(simple_value(&client, "SELECT 40 + 2").await, "42");

    // A wrong password over SCRAM is the usual 28P01.
    let connstr = format!("{} password=wrong", pooler.connstr(SCRAM_USER, db));
    let err = pg_connect(&connstr)
        .await
        .expect_err("wrong password accepted");
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "28P01", "{err}");
    assert_eq!(db_err.message(), failed_message(SCRAM_USER));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_get_identical_errors() {
    let db = "auth_md5_wrong";
    let pooler = start(db);
    let mut first_masked: Option<String> = None;
    for (user, password) in [
        (PLAIN_USER, "wrong"),
        (MD5_USER, "wrong"),
        (MD5_USER, ""),
        // Unknown users get an md5 challenge too, and the same refusal.
        ("no_such_user", "whatever"),
        ("no_such_user", MD5_PASSWORD),
    ] {
        let (_raw, msgs) = raw_md5_login(pooler.port, db, user, password);
        assert_eq!(msgs.len(), 1, "{user}/{password:?}: {msgs:?}");
        let err = &msgs[0];
        assert_eq!(err.field(b'S').as_deref(), Some("FATAL"), "{err:?}");
        assert_eq!(err.field(b'C').as_deref(), Some("28P01"), "{err:?}");
        assert_eq!(err.field(b'M'), Some(failed_message(user)), "{err:?}");
        let masked = String::from_utf8_lossy(&err.body).replace(user, "X");
        match &first_masked {
            None => first_masked = Some(masked),
            Some(first) => assert_eq!(&masked, first, "{user}/{password:?}"),
        }
    }

    for user in [MD5_USER, PLAIN_USER, "no_such_user"] {
        let err = pooler
            .psql(user, db, Some("wrong"), "SELECT 1")
            .expect_err("wrong password accepted by psql");
        assert!(err.contains(&failed_message(user)), "{user}: {err}");

        let connstr = format!("{} password=wrong", pooler.connstr(user, db));
        let err = pg_connect(&connstr)
            .await
            .expect_err("wrong password accepted by tokio-postgres");
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{user}: not a server error: {err}"));
        assert_eq!(db_err.code().code(), "28P01", "{user}: {err}");
        assert_eq!(db_err.message(), failed_message(user));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_connection_before_the_client_is_authenticated() {
    let db = "auth_md5_nobackend";
    let pooler = start(db);
    let pg = Postgres::shared();
    assert_eq!(pg.backend_count(db, None), 0);

    // While the pooler waits for the password, nothing is connected to the database.
    let mut raw = RawClient::connect(pooler.port);
    raw.startup(MD5_USER, db, &[]);
    let salt = md5_salt(&raw.recv().expect("an md5 request"));
    assert_eq!(pg.backend_count(db, None), 0);

    // A failed login leaves the count unchanged, as does an unknown user.
    raw.send(&fe::password(&md5_hash(
        MD5_USER.as_bytes(),
        b"wrong",
        salt,
    )));
    let msgs = rest_of_login(&mut raw);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("28P01"), "{msgs:?}");
    let (_raw, msgs) = raw_md5_login(pooler.port, db, "no_such_user", "x");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("28P01"), "{msgs:?}");
    assert_eq!(pg.backend_count(db, None), 0);

    // The count does see the pooler's connections: one appears after a good login.
    let connstr = format!("{} password={MD5_PASSWORD}", pooler.connstr(MD5_USER, db));
    let client = pg_connect(&connstr).await.expect("good login");
    client.simple_query("SELECT 1").await.unwrap();
    let seen = wait_until(Duration::from_secs(5), || {
        pg.backend_count(db, Some(TRUST_USER)) >= 1
    });
    assert!(seen, "no server connection after a good login");
}
