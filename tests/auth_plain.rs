//! Client authentication with auth_type = plain (cleartext password) against plain, md5 and SCRAM auth-file secrets.

mod common;
use common::*;

/// auth_type plain; server connections log in as trust_user, so only the client side is under test.
const CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "plain"
auth_file = "{dir}/userlist.txt"
default_pool_size = 5

[databases]
{test_db} = { host = "{pg_host}", port = {pg_port}, user = "trust_user" }
"#;

/// The pooler with an auth file holding a cleartext secret (plain_user), the md5 verifier of
/// md5_user and the SCRAM verifier of scram_user, both copied from pg_authid.
fn start(db: &str) -> (Pooler, String, String) {
    let pg = Postgres::shared();
    pg.create_database(db);
    let md5_secret = pg.role_secret(MD5_USER);
    let scram_secret = pg.role_secret(SCRAM_USER);
    assert!(md5_secret.starts_with("md5"), "{md5_secret}");
    assert!(scram_secret.starts_with("SCRAM-SHA-256$"), "{scram_secret}");
    let pooler = Pooler::start_with_userlist(
        pg,
        &CONFIG.replace("{test_db}", db),
        &[
            (PLAIN_USER, PLAIN_PASSWORD),
            (MD5_USER, &md5_secret),
            (SCRAM_USER, &scram_secret),
        ],
    );
    (pooler, md5_secret, scram_secret)
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

/// Logs in over the wire with a cleartext password: checks the pooler asks for one
/// (AuthenticationCleartextPassword, code 3), then returns what followed, up to ReadyForQuery or EOF.
fn raw_login(port: u16, db: &str, user: &str, password: &str) -> (RawClient, Vec<Msg>) {
    let mut raw = RawClient::connect(port);
    raw.startup(user, db, &[]);
    let ask = raw.recv().expect("an authentication request");
    assert_eq!(ask.auth_code(), Some(3), "{user}: {ask:?}");
    raw.send(&fe::password(password));
    let mut msgs = Vec::new();
    while let Some(m) = raw.recv() {
        let done = m.tag == b'Z';
        msgs.push(m);
        if done {
            break;
        }
    }
    (raw, msgs)
}

#[test]
fn cleartext_password_accepted_against_every_secret_kind() {
    let db = "auth_plain_ok";
    let (pooler, _, _) = start(db);
    for (user, password) in [
        (PLAIN_USER, PLAIN_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (SCRAM_USER, SCRAM_PASSWORD),
    ] {
        let (mut raw, msgs) = raw_login(pooler.port, db, user, password);
        assert!(
            msgs.first().and_then(Msg::auth_code) == Some(0)
                && msgs.last().is_some_and(|m| m.tag == b'Z')
                && !msgs.iter().any(Msg::is_error),
            "{user}: {msgs:?}"
        );
        let reply = raw.query("SELECT current_user");
        assert_eq!(
            data_rows(&reply),
            vec![vec![Some(TRUST_USER.to_string())]],
            "{user}"
        );

        let out = pooler.psql(user, db, Some(password), "SELECT 6 * 7");
        assert_eq!(out.as_deref(), Ok("42"), "psql as {user}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_logs_in_with_cleartext() {
    let db = "auth_plain_tokio";
    let (pooler, _, _) = start(db);
    for (user, password) in [
        (PLAIN_USER, PLAIN_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (SCRAM_USER, SCRAM_PASSWORD),
    ] {
        let connstr = format!("{} password={password}", pooler.connstr(user, db));
        let client = pg_connect(&connstr)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(simple_value(&client, "SELECT 40 + 2").await, "42", "{user}");
    }
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_error() {
    let db = "auth_plain_wrong";
    let (pooler, md5_secret, scram_secret) = start(db);
    let cases: Vec<(&str, &str)> = vec![
        (PLAIN_USER, "wrong"),
        (PLAIN_USER, "plain_pas"),
        (PLAIN_USER, ""),
        (MD5_USER, "wrong"),
        // The stored verifier itself is not the password.
        (MD5_USER, &md5_secret),
        (SCRAM_USER, "wrong"),
        (SCRAM_USER, &scram_secret),
        // An unknown user is asked for a password like anyone else and refused the same way.
        ("no_such_user", "whatever"),
        ("no_such_user", PLAIN_PASSWORD),
    ];
    let mut first_masked: Option<String> = None;
    for (user, password) in cases {
        let (_raw, msgs) = raw_login(pooler.port, db, user, password);
        assert_eq!(msgs.len(), 1, "{user}/{password:?}: {msgs:?}");
        let err = &msgs[0];
        assert!(err.is_error(), "{user}/{password:?}: {err:?}");
        assert_eq!(err.field(b'S').as_deref(), Some("FATAL"), "{err:?}");
        assert_eq!(err.field(b'C').as_deref(), Some("28P01"), "{err:?}");
        assert_eq!(err.field(b'M'), Some(failed_message(user)), "{err:?}");
        // Byte for byte the same answer once the user name is masked: nothing tells an
        // unknown user from a wrong password.
        let masked = String::from_utf8_lossy(&err.body).replace(user, "X");
        match &first_masked {
            None => first_masked = Some(masked),
            Some(first) => assert_eq!(&masked, first, "{user}/{password:?}"),
        }
    }

    for user in [PLAIN_USER, "no_such_user"] {
        let err = pooler
            .psql(user, db, Some("wrong"), "SELECT 1")
            .expect_err("wrong password accepted");
        assert!(err.contains(&failed_message(user)), "{user}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_sees_the_same_error_for_unknown_users() {
    let db = "auth_plain_tokio_wrong";
    let (pooler, _, _) = start(db);
    for user in [PLAIN_USER, MD5_USER, SCRAM_USER, "no_such_user"] {
        let connstr = format!("{} password=wrong", pooler.connstr(user, db));
        let err = pg_connect(&connstr)
            .await
            .expect_err("wrong password accepted");
        let db_err = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{user}: not a server error: {err}"));
        assert_eq!(db_err.code().code(), "28P01", "{user}: {err}");
        assert_eq!(db_err.message(), failed_message(user), "{user}");
        assert_eq!(db_err.severity(), "FATAL", "{user}");
    }
    // Still serving after the refusals.
    let connstr = format!(
        "{} password={PLAIN_PASSWORD}",
        pooler.connstr(PLAIN_USER, db)
    );
    let client = pg_connect(&connstr)
        .await
        .expect("good login after failures");
    client.simple_query("SELECT 1").await.unwrap();
}
