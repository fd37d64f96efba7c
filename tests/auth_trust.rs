//! Client authentication with auth_type = trust, without an auth_file (anyone) and with one (listed users only).

mod common;
use common::*;

use std::time::Duration;

/// trust, no auth_file, every database name forwarded to the cluster as the client's own user.
const OPEN_CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "trust"
default_pool_size = 5

[databases]
"*" = { host = "{pg_host}", port = {pg_port} }
"#;

/// trust with an auth_file: only the users listed in it may log in.
const LISTED_CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "trust"
auth_file = "{dir}/userlist.txt"
default_pool_size = 5

[databases]
"*" = { host = "{pg_host}", port = {pg_port} }
"#;

/// Every authentication request code the pooler sent during a login.
fn auth_codes(msgs: &[Msg]) -> Vec<i32> {
    msgs.iter().filter_map(Msg::auth_code).collect()
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

fn sqlstate(err: &tokio_postgres::Error) -> Option<String> {
    err.code().map(|c| c.code().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_without_auth_file_lets_any_user_reach_postgres() {
    let pg = Postgres::shared();
    let db = "auth_trust_open";
    pg.create_database(db);
    let pooler = Pooler::start(OPEN_CONFIG);

    // No password is asked for: the very first authentication message is AuthenticationOk.
    let (mut raw, login) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    assert_eq!(auth_codes(&login), vec![0], "{login:?}");
    let reply = raw.query("SELECT current_user, current_database()");
    assert_eq!(
        data_rows(&reply),
        vec![vec![Some(TRUST_USER.to_string()), Some(db.to_string())]]
    );

    // psql without any password, as trust_user (trust line of pg_hba.conf behind the pooler).
    let who = pooler.psql(TRUST_USER, db, None, "SELECT current_user");
    assert_eq!(who.as_deref(), Ok(TRUST_USER));

    // Another user name goes through too, and reaches PostgreSQL as itself.
    let client = pg_connect(&pooler.connstr("postgres", db))
        .await
        .expect("trust login as postgres");
    assert_eq!(
        simple_value(&client, "SELECT current_user").await,
        "postgres"
    );

    // The pooler does not filter names: a role PostgreSQL does not know is refused by PostgreSQL.
    let err = pg_connect(&pooler.connstr("no_such_role_trust", db))
        .await
        .expect_err("a role unknown to PostgreSQL logged in");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let msg = err.as_db_error().map(|e| e.message().to_string());
    assert_eq!(
        msg.as_deref(),
        Some("role \"no_such_role_trust\" does not exist"),
        "{err}"
    );

    // The pooler really holds server connections to the database, one per logged-in user.
    assert!(pg.backend_count(db, Some(TRUST_USER)) >= 1);
    assert!(pg.backend_count(db, Some("postgres")) >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_with_auth_file_admits_only_listed_users() {
    let pg = Postgres::shared();
    let db = "auth_trust_listed";
    pg.create_database(db);
    // The secret is irrelevant with trust: it is never asked for.
    let pooler = Pooler::start_with_userlist(pg, LISTED_CONFIG, &[(TRUST_USER, "ignored_secret")]);

    assert_eq!(pg.backend_count(db, None), 0);

    // "postgres" is not listed. PostgreSQL would let it in (trust in pg_hba.conf), so if the pooler
    // asked the server it would succeed: the refusal must come from the pooler, before any server login.
    let mut raw = RawClient::connect(pooler.port);
    raw.startup("postgres", db, &[]);
    let first = raw.recv().expect("an answer to the startup message");
    assert!(
        first.is_error(),
        "unlisted user got {first:?} instead of an error"
    );
    assert_eq!(first.field(b'C').as_deref(), Some("28000"), "{first:?}");
    assert_eq!(first.field(b'S').as_deref(), Some("FATAL"), "{first:?}");
    assert!(raw.recv().is_none(), "the connection stayed open");

    let err = pg_connect(&pooler.connstr("postgres", db))
        .await
        .expect_err("unlisted user logged in");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");

    let err = pooler
        .psql("postgres", db, None, "SELECT 1")
        .expect_err("unlisted user logged in with psql");
    assert!(err.contains("FATAL"), "{err}");

    // No server connection was opened for the refused logins.
    assert_eq!(pg.backend_count(db, None), 0);

    // A listed user logs in without being asked for the password, and reaches PostgreSQL.
    let (mut raw, login) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    assert_eq!(auth_codes(&login), vec![0], "{login:?}");
    let reply = raw.query("SELECT current_user");
    assert_eq!(data_rows(&reply), vec![vec![Some(TRUST_USER.to_string())]]);
    let who = pooler.psql(TRUST_USER, db, None, "SELECT current_user");
    assert_eq!(who.as_deref(), Ok(TRUST_USER));

    // The count above was able to see the pooler's connections: now there is one, as trust_user only.
    let seen = wait_until(Duration::from_secs(5), || {
        pg.backend_count(db, Some(TRUST_USER)) >= 1
    });
    assert!(seen, "no server connection for the listed user");
    assert_eq!(pg.backend_count(db, Some("postgres")), 0);
}
