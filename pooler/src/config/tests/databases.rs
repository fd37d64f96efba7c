//! `[databases]` and `[users]`: both forms, their rules, and the resolved per-pool settings.

use std::time::Duration;

use super::super::databases::parse_conn_string;
use super::super::{Database, PoolMode, UserConfig};
use super::{assert_error, errors, one_error, parse, pooler};

/// A file with `[pooler]` (trust) and the given `[databases]` lines.
fn dbs(lines: &str) -> String {
    format!("{}[databases]\n{lines}\n", pooler(""))
}

/// A file with `[pooler]` (trust) and the given `[users]` lines.
fn users(lines: &str) -> String {
    format!("{}[users]\n{lines}\n", pooler(""))
}

#[test]
fn inline_table_form_with_every_field() {
    let c = parse(&dbs(
        r#"app = { host = "10.0.0.1", port = 5433, dbname = "appdb", user = "bob", password = "s3cret",
  auth_user = "auth", pool_size = 50, min_pool_size = 5, reserve_pool_size = 3, pool_mode = "statement",
  max_db_connections = 80, server_lifetime = 1.5, connect_query = "SET x = 1", application_name = "app",
  client_encoding = "UTF8", datestyle = "ISO, MDY", timezone = "UTC" }"#,
    ));
    let expected = Database {
        host: "10.0.0.1".into(),
        port: 5433,
        dbname: Some("appdb".into()),
        user: Some("bob".into()),
        password: Some("s3cret".into()),
        auth_user: Some("auth".into()),
        pool_size: Some(50),
        min_pool_size: Some(5),
        reserve_pool_size: Some(3),
        pool_mode: Some(PoolMode::Statement),
        max_db_connections: Some(80),
        server_lifetime: Some(Duration::from_millis(1500)),
        connect_query: Some("SET x = 1".into()),
        application_name: Some("app".into()),
        client_encoding: Some("UTF8".into()),
        datestyle: Some("ISO, MDY".into()),
        timezone: Some("UTC".into()),
    };
    assert_eq!(c.databases.get("app"), Some(&expected));
}

#[test]
fn string_form_like_pgbouncer() {
    let c = parse(&dbs(
        r#"app = "host=127.0.0.1 port=5432 dbname=app user=bob password='x y' pool_size=50 pool_mode=transaction"
quoted = "host=db  password='it\\'s a \\\\ test'   application_name='' server_lifetime=0.25""#,
    ));
    let app = &c.databases["app"];
    assert_eq!(app.host, "127.0.0.1");
    assert_eq!(app.port, 5432);
    assert_eq!(app.dbname.as_deref(), Some("app"));
    assert_eq!(app.user.as_deref(), Some("bob"));
    assert_eq!(app.password.as_deref(), Some("x y"));
    assert_eq!(app.pool_size, Some(50));
    assert_eq!(app.pool_mode, Some(PoolMode::Transaction));
    let quoted = &c.databases["quoted"];
    assert_eq!(quoted.password.as_deref(), Some("it's a \\ test"));
    assert_eq!(quoted.application_name.as_deref(), Some(""));
    assert_eq!(quoted.server_lifetime, Some(Duration::from_millis(250)));
}

#[test]
fn both_forms_give_the_same_entry() {
    let a = parse(&dbs(
        r#"x = { host = "h", port = 6000, user = "u", pool_size = 7, reserve_pool_size = 2 }"#,
    ));
    let b = parse(&dbs(
        r#"x = "host=h port=6000 force_user=u pool_size=7 reserve_pool=2""#,
    ));
    assert_eq!(a.databases, b.databases);
}

#[test]
fn force_user_is_an_alias_for_user_but_not_both() {
    let c = parse(&dbs(r#"x = { force_user = "alice" }"#));
    assert_eq!(c.databases["x"].user.as_deref(), Some("alice"));
    let e = one_error(&dbs(r#"x = { user = "a", force_user = "b" }"#));
    assert!(
        e.key == "databases.x.user" || e.key == "databases.x.force_user",
        "{e:?}"
    );
    assert!(e.message.contains("same setting"));
}

#[test]
fn missing_or_empty_host_uses_the_default_socket_dir() {
    let expected = if std::path::Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql"
    } else {
        "/tmp"
    };
    let c = parse(&dbs("a = {}\nb = \"host='' port=5432\"\nc = \"dbname=c\""));
    for name in ["a", "b", "c"] {
        assert_eq!(c.databases[name].host, expected);
        assert!(c.databases[name].is_unix_socket());
        assert_eq!(c.databases[name].port, 5432);
    }
    assert_eq!(Database::default_host(), expected);
}

#[test]
fn unknown_database_fields_are_refused_with_their_path() {
    assert_error(
        &dbs("app = { hots = \"h\" }"),
        "databases.app.hots",
        "did you mean `host`?",
    );
    assert_error(
        &dbs("app = \"host=h prot=5432\""),
        "databases.app.prot",
        "did you mean `port`?",
    );
    assert_error(
        &dbs("app = { load_balance_hosts = \"disable\" }"),
        "databases.app.load_balance_hosts",
        "not supported",
    );
}

#[test]
fn database_port_is_in_range() {
    assert_error(
        &dbs("app = { port = 0 }"),
        "databases.app.port",
        "between 1 and 65535",
    );
    assert_error(
        &dbs("app = \"port=70000\""),
        "databases.app.port",
        "found 70000",
    );
    assert_error(
        &dbs("app = \"port=abc\""),
        "databases.app.port",
        "found \"abc\"",
    );
}

#[test]
fn database_values_are_typed() {
    assert_error(
        &dbs("app = { pool_size = -5 }"),
        "databases.app.pool_size",
        "non-negative",
    );
    assert_error(
        &dbs("app = \"pool_size=many\""),
        "databases.app.pool_size",
        "found \"many\"",
    );
    assert_error(
        &dbs("app = { dbname = \"\" }"),
        "databases.app.dbname",
        "non-empty",
    );
    assert_error(
        &dbs("app = { server_lifetime = -1 }"),
        "databases.app.server_lifetime",
        "seconds",
    );
    assert_error(&dbs("app = 5"), "databases.app", "expected an inline table");
}

#[test]
fn pool_mode_is_checked_in_every_section() {
    assert_error(
        &dbs("app = { pool_mode = \"sesion\" }"),
        "databases.app.pool_mode",
        "did you mean `session`?",
    );
    assert_error(
        &dbs("app = \"pool_mode=batch\""),
        "databases.app.pool_mode",
        "expected one of",
    );
    assert_error(
        &users("alice = { pool_mode = \"tx\" }"),
        "users.alice.pool_mode",
        "expected one of",
    );
    assert_error(
        &users("alice = \"pool_mode=tx\""),
        "users.alice.pool_mode",
        "expected one of",
    );
}

#[test]
fn admin_console_names_are_reserved() {
    assert_error(&dbs("pgbouncer = {}"), "databases.pgbouncer", "reserved");
    assert_error(
        &dbs("pooler = { host = \"h\" }"),
        "databases.pooler",
        "reserved",
    );
}

#[test]
fn empty_names_are_refused() {
    assert_error(&dbs("\"\" = {}"), "databases", "must not be empty");
    assert_error(&users("\"\" = {}"), "users", "must not be empty");
}

#[test]
fn database_min_pool_size_fits_its_pool_size() {
    assert_error(
        &dbs("app = { min_pool_size = 30 }"),
        "databases.app.min_pool_size",
        "larger than the pool size (20)",
    );
    assert_error(
        &dbs("app = { min_pool_size = 5, pool_size = 4 }"),
        "databases.app.min_pool_size",
        "(5)",
    );
    // A global minimum that no longer fits a smaller database pool names that pool_size.
    let text = format!(
        "{}[databases]\napp = {{ pool_size = 2 }}",
        pooler("min_pool_size = 3")
    );
    assert_error(
        &text,
        "databases.app.pool_size",
        "(3) is larger than the pool size (2)",
    );
    parse(&dbs("app = { min_pool_size = 20 }"));
}

#[test]
fn string_form_syntax_errors_name_the_entry() {
    assert_error(
        &dbs("app = \"host\""),
        "databases.app",
        "expected `=` after `host`",
    );
    assert_error(&dbs("app = \"=x\""), "databases.app", "without a key");
    assert_error(
        &dbs("app = \"password='abc\""),
        "databases.app",
        "unterminated quoted value for `password`",
    );
    assert_error(
        &dbs("app = \"password='a'b\""),
        "databases.app",
        "space after the quoted value",
    );
    assert_error(
        &dbs("app = \"port=1 port=2\""),
        "databases.app.port",
        "given twice",
    );
}

#[test]
fn conn_string_parser_edge_cases() {
    let pairs = |s: &str| parse_conn_string(s).unwrap();
    assert!(pairs("").is_empty());
    assert!(pairs("   ").is_empty());
    assert_eq!(pairs("a = b"), [("a".to_owned(), "b".to_owned())]);
    assert_eq!(pairs("a=''"), [("a".to_owned(), String::new())]);
    assert_eq!(pairs(r"a='\x'"), [("a".to_owned(), r"\x".to_owned())]);
    assert_eq!(pairs("a= b=c"), [("a".to_owned(), "b=c".to_owned())]);
    // No input may panic: every prefix of a tricky string.
    let tricky = r"host='a\'b c' port=5 x= 'é\\' y='ü";
    for (i, _) in tricky.char_indices() {
        let _ = parse_conn_string(&tricky[..i]);
    }
}

#[test]
fn passwords_never_appear_in_messages() {
    let secret = "hunter2-very-secret";
    let texts = [
        dbs(&format!("app = {{ password = [\"{secret}\"] }}")),
        dbs("app = { password = 424242 }"),
        dbs(&format!("app = \"password='{secret}\"")),
        dbs(&format!("app = \"passwrd={secret}\"")),
        dbs(&format!("app = [\"password={secret}\"]")),
        format!("{}[databases]\napp = {{ password = {secret} }}", pooler("")),
    ];
    for text in texts {
        for e in errors(&text) {
            let shown = e.to_string();
            assert!(
                !shown.contains(secret) && !shown.contains("424242"),
                "leaked in {shown:?}"
            );
        }
    }
}

#[test]
fn users_both_forms() {
    let c = parse(&users(
        "alice = { pool_mode = \"session\", pool_size = 3, reserve_pool_size = 1, max_user_connections = 10 }\n\
         bob = \"pool_mode=statement max_user_connections=4\"\ncarol = {}",
    ));
    let alice = UserConfig {
        pool_mode: Some(PoolMode::Session),
        pool_size: Some(3),
        reserve_pool_size: Some(1),
        max_user_connections: Some(10),
    };
    assert_eq!(c.users["alice"], alice);
    assert_eq!(c.users["bob"].pool_mode, Some(PoolMode::Statement));
    assert_eq!(c.users["bob"].max_user_connections, Some(4));
    assert_eq!(c.users["carol"], UserConfig::default());
}

#[test]
fn user_fields_are_checked() {
    assert_error(
        &users("alice = { pool_sise = 3 }"),
        "users.alice.pool_sise",
        "did you mean `pool_size`?",
    );
    assert_error(
        &users("alice = { max_user_connections = -1 }"),
        "users.alice.max_user_connections",
        "non-negative",
    );
    assert_error(
        &users("alice = \"max_user_client_connections=3\""),
        "users.alice.max_user_client_connections",
        "not supported",
    );
    assert_error(&users("alice = true"), "users.alice", "found a boolean");
}

#[test]
fn resolved_settings_user_over_database_over_global() {
    let text = format!(
        "{}[databases]\napp = {{ pool_mode = \"session\", pool_size = 30, reserve_pool_size = 4, \
         min_pool_size = 2, max_db_connections = 90 }}\nplain = {{}}\n\
         [users]\nalice = {{ pool_mode = \"statement\", pool_size = 5, reserve_pool_size = 1, \
         max_user_connections = 7 }}\n",
        pooler(
            "pool_mode = \"transaction\"\ndefault_pool_size = 20\nreserve_pool_size = 3\n\
             min_pool_size = 1\nmax_db_connections = 100\nmax_user_connections = 50",
        )
    );
    let c = parse(&text);
    let app = &c.databases["app"];
    let plain = &c.databases["plain"];
    assert_eq!(c.pool_mode_for(app, "alice"), PoolMode::Statement);
    assert_eq!(c.pool_mode_for(app, "bob"), PoolMode::Session);
    assert_eq!(c.pool_mode_for(plain, "bob"), PoolMode::Transaction);
    assert_eq!(c.pool_size_for(app, "alice"), 5);
    assert_eq!(c.pool_size_for(app, "bob"), 30);
    assert_eq!(c.pool_size_for(plain, "bob"), 20);
    assert_eq!(c.reserve_pool_size_for(app, "alice"), 1);
    assert_eq!(c.reserve_pool_size_for(app, "bob"), 4);
    assert_eq!(c.reserve_pool_size_for(plain, "bob"), 3);
    assert_eq!(c.min_pool_size_for(app), 2);
    assert_eq!(c.min_pool_size_for(plain), 1);
    assert_eq!(c.max_db_connections_for(app), 90);
    assert_eq!(c.max_db_connections_for(plain), 100);
    assert_eq!(c.max_user_connections_for("alice"), 7);
    assert_eq!(c.max_user_connections_for("bob"), 50);
}

#[test]
fn database_lookup_falls_back_to_star() {
    let c = parse(&dbs("app = { host = \"a\" }\n\"*\" = { host = \"b\" }"));
    assert_eq!(
        c.database("app").map(|(k, d)| (k, d.host.as_str())),
        Some(("app", "a"))
    );
    assert_eq!(
        c.database("other").map(|(k, d)| (k, d.host.as_str())),
        Some(("*", "b"))
    );
    let c = parse(&dbs("app = {}"));
    assert!(c.database("other").is_none());
}
