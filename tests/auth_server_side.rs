//! The pooler logging in to PostgreSQL: trust, password, md5, scram-sha-256 (incl. SCRAM pass-through), failures, no password in logs.

mod common;
use common::*;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HEAD: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
default_pool_size = 5
"#;

/// Client side: trust, no auth file. Server side: one database entry per pg_hba method, each
/// with the role and password the pooler must log in with.
const ENTRY_PASSWORD_CONFIG: &str = r#"auth_type = "trust"

[databases]
srv_trust = { host = "{pg_host}", port = {pg_port}, dbname = "auth_srv_entry", user = "trust_user" }
srv_password = { host = "{pg_host}", port = {pg_port}, dbname = "auth_srv_entry", user = "plain_user", password = "plain_pass" }
srv_md5 = { host = "{pg_host}", port = {pg_port}, dbname = "auth_srv_entry", user = "md5_user", password = "md5_pass" }
srv_scram = { host = "{pg_host}", port = {pg_port}, dbname = "auth_srv_entry", user = "scram_user", password = "scram_pass" }
"#;

/// Client side: `auth_type` against the auth file; server side: the client's own user, with the
/// secret from the auth file (no password in the database entry).
const AUTH_FILE_CONFIG: &str = r#"auth_type = "{auth_type}"
auth_file = "{dir}/userlist.txt"

[databases]
{test_db} = { host = "{pg_host}", port = {pg_port} }
"#;

fn config(body: &str) -> String {
    format!("{HEAD}{body}")
}

fn auth_file_config(auth_type: &str, db: &str) -> String {
    config(
        &AUTH_FILE_CONFIG
            .replace("{auth_type}", auth_type)
            .replace("{test_db}", db),
    )
}

fn with_password(connstr: String, password: &str) -> String {
    format!("{connstr} password={password}")
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

async fn current_user(connstr: &str) -> String {
    let client = pg_connect(connstr)
        .await
        .unwrap_or_else(|e| panic!("login {connstr:?}: {e}"));
    simple_value(&client, "SELECT current_user").await
}

#[tokio::test(flavor = "multi_thread")]
async fn each_server_method_with_the_database_entry_password() {
    let pg = Postgres::shared();
    pg.create_database("auth_srv_entry");
    let pooler = Pooler::start(&config(ENTRY_PASSWORD_CONFIG));
    for (entry, role) in [
        ("srv_trust", TRUST_USER),
        ("srv_password", PLAIN_USER),
        ("srv_md5", MD5_USER),
        ("srv_scram", SCRAM_USER),
    ] {
        // The client's own name does not matter: the entry's user logs in to PostgreSQL.
        let who = current_user(&pooler.connstr("app_client", entry)).await;
        assert_eq!(who, role, "{entry}");
        let who = pooler.psql("another_client", entry, None, "SELECT current_user");
        assert_eq!(who.as_deref(), Ok(role), "psql via {entry}");
        assert!(
            pg.backend_count("auth_srv_entry", Some(role)) >= 1,
            "{entry}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_file_secrets_log_in_to_the_server() {
    let pg = Postgres::shared();
    let db = "auth_srv_file";
    pg.create_database(db);
    let md5_secret = pg.role_secret(MD5_USER);
    // md5_user: md5 verifier (enough for md5); scram_user and plain_user: cleartext secrets.
    let pooler = Pooler::start_with_userlist(
        pg,
        &auth_file_config("md5", db),
        &[
            (MD5_USER, &md5_secret),
            (SCRAM_USER, SCRAM_PASSWORD),
            (PLAIN_USER, PLAIN_PASSWORD),
        ],
    );
    for (role, password) in [
        (MD5_USER, MD5_PASSWORD),
        (SCRAM_USER, SCRAM_PASSWORD),
        (PLAIN_USER, PLAIN_PASSWORD),
    ] {
        let who = current_user(&with_password(pooler.connstr(role, db), password)).await;
        assert_eq!(who, role);
        assert!(pg.backend_count(db, Some(role)) >= 1, "{role}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_pass_through_with_the_pg_authid_secret() {
    let pg = Postgres::shared();
    let secret = pg.role_secret(SCRAM_USER);
    assert!(secret.starts_with("SCRAM-SHA-256$"), "{secret}");
    // md5 switches to SCRAM for a SCRAM secret, so both client methods recover the ClientKey.
    for (auth_type, db) in [
        ("scram-sha-256", "auth_srv_passthru_scram"),
        ("md5", "auth_srv_passthru_md5"),
    ] {
        pg.create_database(db);
        let pooler = Pooler::start_with_userlist(
            pg,
            &auth_file_config(auth_type, db),
            &[(SCRAM_USER, &secret)],
        );
        let who = pooler.psql(SCRAM_USER, db, Some(SCRAM_PASSWORD), "SELECT current_user");
        assert_eq!(who.as_deref(), Ok(SCRAM_USER), "{auth_type}");

        // A transaction holds one server connection, so the second client needs a new one: the
        // recovered keys stay usable for later server logins too.
        let connstr = with_password(pooler.connstr(SCRAM_USER, db), SCRAM_PASSWORD);
        let holder = pg_connect(&connstr).await.expect("first client");
        holder.batch_execute("BEGIN").await.unwrap();
        holder.simple_query("SELECT 1").await.unwrap();
        assert_eq!(current_user(&connstr).await, SCRAM_USER, "{auth_type}");
        assert!(pg.backend_count(db, Some(SCRAM_USER)) >= 2, "{auth_type}");
        holder.batch_execute("COMMIT").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_secret_is_useless_without_a_scram_client_login() {
    let pg = Postgres::shared();
    let db = "auth_srv_nokeys";
    pg.create_database(db);
    let secret = pg.role_secret(SCRAM_USER);
    // With auth_type plain no SCRAM exchange takes place, so no ClientKey can be recovered.
    let pooler =
        Pooler::start_with_userlist(pg, &auth_file_config("plain", db), &[(SCRAM_USER, &secret)]);
    let connstr = with_password(pooler.connstr(SCRAM_USER, db), SCRAM_PASSWORD);
    let err = pg_connect(&connstr)
        .await
        .expect_err("logged in to PostgreSQL without any usable credential");
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "28000", "{err}");
    assert!(db_err.message().contains(SCRAM_USER), "{err}");
    assert_eq!(pg.backend_count(db, None), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_login_failure_reaches_the_client() {
    let pg = Postgres::shared();
    let db = "auth_srv_wrong";
    pg.create_database(db);
    let mut body = String::from("auth_type = \"trust\"\n\n[databases]\n");
    for role in [PLAIN_USER, MD5_USER, SCRAM_USER] {
        body.push_str(&format!(
            "wrong_{role} = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{db}\", \
             user = \"{role}\", password = \"not_the_password\" }}\n"
        ));
    }
    let pooler = Pooler::start(&config(&body));
    for role in [PLAIN_USER, MD5_USER, SCRAM_USER] {
        // What PostgreSQL itself says to a client with that wrong password.
        let direct = pg_connect(&with_password(pg.connstr(role, db), "not_the_password"))
            .await
            .expect_err("PostgreSQL accepted a wrong password");
        let direct = direct.as_db_error().expect("a server error").clone();
        assert_eq!(direct.code().code(), "28P01");

        // Twice: the failed server login, then the remembered failure (server_login_retry).
        for attempt in 1..=2 {
            let entry = format!("wrong_{role}");
            let err = pg_connect(&pooler.connstr(TRUST_USER, &entry))
                .await
                .expect_err("logged in with a wrong server password");
            let got = err
                .as_db_error()
                .unwrap_or_else(|| panic!("{role} #{attempt}: not a server error: {err}"));
            assert_eq!(got.code(), direct.code(), "{role} #{attempt}: {err}");
            assert_eq!(got.message(), direct.message(), "{role} #{attempt}");
            assert_eq!(
                got.message(),
                format!("password authentication failed for user \"{role}\"")
            );
        }
    }
    assert_eq!(pg.backend_count(db, None), 0);
}

/// The pooler binary started with RUST_LOG=debug (the harness always sets a level of its own).
struct DebugPooler {
    port: u16,
    log: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl DebugPooler {
    fn start(pg: &Postgres, config: &str, users: &[(&str, &str)]) -> DebugPooler {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let port = free_port();
        let config = config
            .replace("{port}", &port.to_string())
            .replace("{unix_dir}", "")
            .replace("{dir}", &dir.display().to_string())
            .replace("{pg_host}", &pg.host)
            .replace("{pg_port}", &pg.port.to_string());
        std::fs::write(dir.join("config.toml"), config).unwrap();
        Pooler::write_userlist(&dir, users);
        let log = dir.join("pooler.log");
        let out = std::fs::File::create(&log).unwrap();
        let bin = std::env::var_os("POOLER_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_pooler").into());
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.join("config.toml"))
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn the pooler");
        let pooler = DebugPooler {
            port,
            log,
            child,
            _tmp: tmp,
        };
        let up = wait_until(Duration::from_secs(15), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "the pooler did not start:\n{}", pooler.log());
        pooler
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn connstr(&self, user: &str, db: &str) -> String {
        conninfo("127.0.0.1", self.port, user, db)
    }
}

impl Drop for DebugPooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_never_appear_in_the_debug_log() {
    let pg = Postgres::shared();
    let db = "auth_srv_log";
    pg.create_database(db);
    let entry = |name: &str, role: &str, password: &str| {
        format!(
            "{name} = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{db}\", \
             user = \"{role}\", password = \"{password}\" }}\n"
        )
    };
    let mut body =
        String::from("auth_type = \"md5\"\nauth_file = \"{dir}/userlist.txt\"\n\n[databases]\n");
    body.push_str(&entry("log_plain", PLAIN_USER, PLAIN_PASSWORD));
    body.push_str(&entry("log_md5", MD5_USER, MD5_PASSWORD));
    body.push_str(&entry("log_scram", SCRAM_USER, SCRAM_PASSWORD));
    body.push_str(&entry("log_wrong", SCRAM_USER, "wrong_srv_pw_9c2"));
    body.push_str(&format!(
        "log_file = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{db}\" }}\n"
    ));
    let client_pw = "client_pw_5e1";
    let pooler = DebugPooler::start(
        pg,
        &config(&body),
        &[("app_client", client_pw), (SCRAM_USER, SCRAM_PASSWORD)],
    );

    for (entry, role) in [
        ("log_plain", PLAIN_USER),
        ("log_md5", MD5_USER),
        ("log_scram", SCRAM_USER),
    ] {
        let who = current_user(&with_password(
            pooler.connstr("app_client", entry),
            client_pw,
        ))
        .await;
        assert_eq!(who, role);
    }
    // A held transaction makes the next client's session open a server connection of its own.
    let scram_entry = with_password(pooler.connstr("app_client", "log_scram"), client_pw);
    let holder = pg_connect(&scram_entry).await.expect("login via log_scram");
    holder.batch_execute("BEGIN").await.unwrap();
    holder.simple_query("SELECT 1").await.unwrap();
    assert_eq!(current_user(&scram_entry).await, SCRAM_USER);
    holder.batch_execute("COMMIT").await.unwrap();
    // Server login with the auth file's cleartext secret.
    let who = current_user(&with_password(
        pooler.connstr(SCRAM_USER, "log_file"),
        SCRAM_PASSWORD,
    ))
    .await;
    assert_eq!(who, SCRAM_USER);
    // A failing server login and a failing client login.
    let err = pg_connect(&with_password(
        pooler.connstr("app_client", "log_wrong"),
        client_pw,
    ))
    .await
    .expect_err("wrong server password accepted");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");
    let err = pg_connect(&with_password(
        pooler.connstr("app_client", "log_plain"),
        "bad_client_pw_3d7",
    ))
    .await
    .expect_err("wrong client password accepted");
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{err}");

    // Proof that debug events are written: the pooler logs an unknown cancel key at debug level.
    let mut cancel = RawClient::connect(pooler.port);
    cancel.send(&fe::cancel_request(1, 2));
    let debug_seen = wait_until(Duration::from_secs(5), || {
        pooler.log().contains("cancel request with an unknown key")
    });
    let log = pooler.log();
    assert!(debug_seen, "no debug event in the log:\n{log}");
    let md5_secret = pg.role_secret(MD5_USER);
    for secret in [
        PLAIN_PASSWORD,
        MD5_PASSWORD,
        SCRAM_PASSWORD,
        "wrong_srv_pw_9c2",
        client_pw,
        "bad_client_pw_3d7",
        &md5_secret[3..],
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}
