//! Unit tests of PgBouncer ini support: syntax, %include, typing, databases and users, warnings, errors by line, the fixture.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ini::{load, looks_like_ini};
use super::{AuthType, Config, ConfigError, Database, PoolMode, import_pgbouncer};

const TRUST: &str = "[pgbouncer]\nauth_type = trust\n";

/// `rest` after a `[pgbouncer]` with trust auth (lines 1 and 2).
fn t(rest: &str) -> String {
    format!("{TRUST}{rest}")
}

/// Load an ini text as "pgbouncer.ini", failing the test on errors.
fn ok(text: &str) -> (Config, Vec<String>) {
    match load(Path::new("pgbouncer.ini"), text) {
        Ok(result) => result,
        Err(errors) => panic!("unexpected errors:\n{errors}\n--- in:\n{text}"),
    }
}

/// The errors of an ini text that must be refused.
fn errs(text: &str) -> Vec<ConfigError> {
    match load(Path::new("pgbouncer.ini"), text) {
        Ok(_) => panic!("accepted, but should have been refused:\n{text}"),
        Err(errors) => errors.0,
    }
}

/// Assert exactly one error, shown as `pgbouncer.ini:{at}: ...`, whose message has `needle`.
fn assert_error(text: &str, at: &str, needle: &str) {
    let all = errs(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    let (shown, prefix) = (all[0].to_string(), format!("pgbouncer.ini:{at}: "));
    assert!(shown.starts_with(&prefix), "{shown:?} vs {prefix:?}");
    assert!(
        all[0].message.contains(needle),
        "{shown:?} lacks {needle:?}"
    );
}

/// `assert_error` for "lines after TRUST|at|needle" cases.
fn assert_cases(cases: &[&str]) {
    for case in cases {
        let parts: Vec<&str> = case.split('|').collect();
        assert_error(&t(&format!("{}\n", parts[0])), parts[1], parts[2]);
    }
}

/// The parts of a config an ini and its TOML must agree on.
fn same(a: &Config, b: &Config) {
    assert_eq!(format!("{:?}", a.pooler), format!("{:?}", b.pooler));
    assert_eq!(a.databases, b.databases);
    assert_eq!(a.users, b.users);
}

#[test]
fn comments_blank_lines_spacing_and_line_endings() {
    let text = "\u{feff};; header\r\n# hash comment\r\n\r\n  ; indented\r\n[pgbouncer]  ; note\r\n\
                auth_type=trust\r\n\tlisten_port \t=\t 7432 \r\n   # another\r\npool_mode   =   transaction\r\n";
    let (c, warnings) = ok(text);
    assert_eq!(c.pooler.listen_port, 7432);
    assert_eq!(c.pooler.pool_mode, PoolMode::Transaction);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn values_are_the_rest_of_the_line_verbatim() {
    let (c, _) = ok(&format!(
        "{TRUST}server_reset_query = DISCARD ALL\nserver_check_query = SELECT 'ok'  \n\
         admin_users = alice, bob ,carol\nlisten_addr = *\nunix_socket_dir =\n"
    ));
    assert_eq!(c.pooler.server_reset_query, "DISCARD ALL");
    assert_eq!(c.pooler.server_check_query, "SELECT 'ok'");
    assert_eq!(c.pooler.admin_users, ["alice", "bob", "carol"]);
    assert_eq!(c.pooler.listen_addr, ["*"]);
    assert_eq!(c.pooler.unix_socket_dir, None);
    // As in PgBouncer, `;` after a value is part of it, not a comment.
    assert_error(
        &t("listen_port = 6432 ; port\n"),
        "3: listen_port",
        "\"6432 ; port\"",
    );
}

#[test]
fn duplicate_keys_take_the_last_value_with_a_warning() {
    let text = t(
        "listen_port = 7000\n[databases]\napp = host=a\n[pgbouncer]\nlisten_port = 7001\n[databases]\napp = host=b\n",
    );
    let (c, warnings) = ok(&text);
    assert_eq!(c.pooler.listen_port, 7001);
    assert_eq!(c.databases["app"].host, "b");
    assert_eq!(
        warnings,
        [
            "pgbouncer.ini:7: listen_port: set again (first at pgbouncer.ini:3); the last value is used",
            "pgbouncer.ini:9: databases.app: set again (first at pgbouncer.ini:5); the last value is used",
        ]
    );
    let (c, warnings) = ok(&t("[databases]\napp = port=1 port=2\n"));
    assert_eq!(c.databases["app"].port, 2);
    assert!(
        warnings[0].contains("databases.app.port: set again"),
        "{warnings:?}"
    );
}

#[test]
fn values_are_typed_as_pgbouncer_reads_them() {
    let (c, _) = ok(&format!(
        "{TRUST}so_reuseport = 1\nlog_connections = 0\nunix_socket_mode = 0660\n\
         reserve_pool_timeout = 0.5\nserver_lifetime = 010\nlisten_backlog = 010\n\
         max_client_conn = 0x20\nserver_idle_timeout = 1e3\n"
    ));
    let g = &c.pooler;
    assert!(g.so_reuseport && !g.log_connections);
    assert_eq!(g.unix_socket_mode, 0o660);
    assert_eq!(g.reserve_pool_timeout, Duration::from_millis(500));
    // Durations are strtod (decimal) in PgBouncer, integers strtol with base 0 (octal, hex).
    assert_eq!(g.server_lifetime, Duration::from_secs(10));
    assert_eq!((g.listen_backlog, g.max_client_conn), (8, 32));
    assert_eq!(g.server_idle_timeout, Duration::from_secs(1000));
    assert_error(&t("tcp_keepalive = yes\n"), "3: tcp_keepalive", "\"yes\"");
    assert_error(&t("listen_backlog = 1e3\n"), "3: listen_backlog", "1000");
}

#[test]
fn our_own_keys_are_accepted() {
    let (c, warnings) = ok(&t("workers = 3\nio_backend = epoll\nlog_level = debug\n"));
    assert_eq!(c.pooler.workers, 3);
    assert_eq!(c.pooler.io_backend.as_str(), "epoll");
    assert_eq!(c.pooler.log_level.as_deref(), Some("debug"));
    assert!(warnings.is_empty());
}

#[test]
fn unsupported_keys_are_warnings_with_line_and_reason() {
    let text = format!(
        "{TRUST}logfile = /var/log/pgbouncer.log\npidfile = /run/pgbouncer.pid\nuser = postgres\n\
         syslog = 1\njob_name = pgbouncer\nverbose = 2\nclient_tls_sslmode = require\n\
         auth_query = SELECT 1\n[peers]\n1 = host=/tmp/a\n"
    );
    let (_, warnings) = ok(&text);
    let keys = "logfile pidfile user syslog job_name verbose client_tls_sslmode auth_query";
    for (i, key) in keys.split(' ').enumerate() {
        let prefix = format!("pgbouncer.ini:{}: {key}: not supported (", i + 3);
        assert!(
            warnings[i].starts_with(&prefix) && warnings[i].ends_with(')'),
            "{warnings:?}"
        );
    }
    assert!(warnings[8].starts_with("pgbouncer.ini:12: peers.1: not supported (peering"));
    assert_eq!(warnings.len(), 9);
}

#[test]
fn bad_values_and_unknown_keys_are_errors_at_their_line() {
    assert_cases(&[
        "listen_port = abc|3: listen_port|between 1 and 65535",
        "pool_mode = sessions|3: pool_mode|did you mean `session`?",
        "auth_type = hba|3: auth_type|not supported",
        "\ndefault_pool_sise = 5|4: default_pool_sise|did you mean `default_pool_size`?",
    ]);
    let all = errs("[pgbouncer]\nlisten_port = 0\nauth_type = md5\nmax_client_conn = x\n");
    let shown: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    assert_eq!(shown.len(), 3, "{shown:#?}");
    let expected = ["2: listen_port: ", "4: max_client_conn: ", " auth_file: "];
    for (shown, prefix) in shown.iter().zip(expected) {
        // A cross-key error about a key the file does not set points at the file itself.
        assert!(
            shown.starts_with(&format!("pgbouncer.ini:{prefix}")),
            "{shown:?}"
        );
    }
}

#[test]
fn every_database_key_is_translated() {
    let (c, warnings) = ok(&format!(
        "{TRUST}[databases]\napp = host=db1 port=6543 dbname=real user=svc password='p w''d' \
         pool_size=7 pool_mode=statement auth_user=au client_encoding=UTF8 datestyle='ISO, DMY' \
         timezone=UTC max_db_connections=9 reserve_pool_size=2 min_pool_size=1 \
         connect_query='SELECT ''x''' application_name=my-app\nold = reserve_pool=4\n\
         socket = host=/var/run/postgresql\nempty =\n* = host=fallback\n"
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
    let some = |s: &str| Some(s.to_owned());
    let expected = Database {
        host: "db1".into(),
        port: 6543,
        dbname: some("real"),
        user: some("svc"),
        password: some("p w'd"),
        auth_user: some("au"),
        pool_size: Some(7),
        min_pool_size: Some(1),
        reserve_pool_size: Some(2),
        pool_mode: Some(PoolMode::Statement),
        max_db_connections: Some(9),
        server_lifetime: None,
        connect_query: some("SELECT 'x'"),
        application_name: some("my-app"),
        client_encoding: some("UTF8"),
        datestyle: some("ISO, DMY"),
        timezone: some("UTC"),
    };
    assert_eq!(c.databases["app"], expected);
    assert_eq!(c.databases["old"].reserve_pool_size, Some(4));
    assert!(c.databases["socket"].is_unix_socket());
    assert_eq!(c.databases["empty"], Database::default());
    assert_eq!(
        c.database("other")
            .map(|(name, db)| (name, db.host.as_str())),
        Some(("*", "fallback"))
    );
}

#[test]
fn unsupported_database_and_user_fields_are_dropped_with_a_warning() {
    let text = format!(
        "{TRUST}[databases]\napp = host=h auth_dbname=x pool_size=3 max_db_client_connections=5\n\
         [users]\nbob = pool_mode=session max_user_client_connections=2\n"
    );
    let (c, warnings) = ok(&text);
    assert_eq!(c.databases["app"].pool_size, Some(3));
    assert_eq!(c.users["bob"].pool_mode, Some(PoolMode::Session));
    let expected = [
        "4: databases.app.auth_dbname",
        "4: databases.app.max_db_client_connections",
        "6: users.bob.max_user_client_connections",
    ];
    let expected = expected.map(|at| format!("pgbouncer.ini:{at}: not supported ("));
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    for (warning, prefix) in warnings.iter().zip(expected) {
        assert!(warning.starts_with(&prefix), "{warning:?} vs {prefix:?}");
    }
}

#[test]
fn database_and_user_errors_point_at_their_line() {
    assert_cases(&[
        "[databases]\n\napp = host=h pool_size=lots|5: databases.app.pool_size|integer",
        "[databases]\napp = host=h sslmode=require|4: databases.app.sslmode|unknown key",
        "[databases]\npgbouncer = host=h|4: databases.pgbouncer|reserved",
        "[users]\nbob = pool_mode=fast|4: users.bob.pool_mode|expected one of",
        "[databases]\napp = host=h =x|4: databases.app|without a key",
        // A connection string that does not parse; the message must not show the secret.
        "[databases]\napp = password='hunter2|4: databases.app|unterminated",
    ]);
    let all = errs(&t("[databases]\napp = host=h password='hunter2\n"));
    assert!(!all[0].to_string().contains("hunter2"), "{}", all[0]);
}

#[test]
fn users_entries_are_translated() {
    let (c, _) = ok(&format!(
        "{TRUST}[users]\nweb = pool_mode=transaction pool_size=30 reserve_pool_size=3 max_user_connections=50\n\
         batch = pool_mode=session\n"
    ));
    let web = &c.users["web"];
    assert_eq!(
        (web.pool_mode, web.pool_size, web.reserve_pool_size),
        (Some(PoolMode::Transaction), Some(30), Some(3))
    );
    assert_eq!(web.max_user_connections, Some(50));
    assert_eq!(c.users["batch"].pool_mode, Some(PoolMode::Session));
}

#[test]
fn syntax_errors_are_all_reported_with_their_line() {
    let all = errs(
        "orphan = 1\n[pgbouncer\n[nonsense]\nx = 1\n[pgbouncer]\nno equals here\n%define x\n= 5\n\"open = 1\n",
    );
    let lines: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    let expected = [
        "pgbouncer.ini:1: orphan: setting outside any section",
        "pgbouncer.ini:2: section header without a closing `]`",
        "pgbouncer.ini:3: unknown section [nonsense]",
        "pgbouncer.ini:6: expected `=` after `no`",
        "pgbouncer.ini:7: unknown directive",
        "pgbouncer.ini:8: expected a name before `=`",
        "pgbouncer.ini:9: unterminated quoted name",
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.starts_with(want), "{line:?} vs {want:?}");
    }
}

#[test]
fn quoted_names_and_odd_names_round_trip_through_toml() {
    let text = t(
        "[databases]\n\"my db\" = dbname='a \"b\" \\c' host=h\nsales.eu = host=h\n\"q\"\"t\" = host=h\n",
    );
    let (c, _) = ok(&text);
    assert_eq!(c.databases["my db"].dbname.as_deref(), Some("a \"b\" \\c"));
    assert!(c.databases.contains_key("sales.eu") && c.databases.contains_key("q\"t"));
    let all = errs(&t("[databases]\nsales.eu = host=h port=0\n"));
    assert_eq!(
        (all[0].key.as_str(), all[0].file.clone()),
        ("databases.sales.eu.port", Some("pgbouncer.ini:4".into()))
    );
}

#[test]
fn includes_relative_nested_and_carrying_the_section() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("conf.d")).unwrap();
    let main = dir.path().join("pgbouncer.ini");
    fs::write(
        &main,
        "[databases]\na = host=h1\n%include conf.d/more.ini\nlisten_port = 7777\n",
    )
    .unwrap();
    // Relative to the including file: conf.d/more.ini includes conf.d/last.ini.
    fs::write(
        dir.path().join("conf.d/more.ini"),
        "b = host=h2\n%include last.ini\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("conf.d/last.ini"),
        "c = host=h3\n[pgbouncer]\nauth_type = trust\n",
    )
    .unwrap();
    let (c, _) = Config::load_with_warnings(&main).unwrap();
    assert_eq!(c.databases.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    // [pgbouncer] opened in the included file is still current after it, as in PgBouncer.
    assert_eq!(c.pooler.listen_port, 7777);
    // Errors in an included file name that file and line.
    fs::write(
        dir.path().join("conf.d/last.ini"),
        "c = host=h3 port=x\n[pgbouncer]\nauth_type = trust\n",
    )
    .unwrap();
    let all = Config::load(&main).unwrap_err().0;
    let file = dir.path().join("conf.d/last.ini:1");
    assert_eq!(
        (all[0].key.as_str(), all[0].file.clone()),
        ("databases.c.port", Some(file))
    );
}

#[test]
fn include_loops_missing_files_and_bad_directives_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.ini");
    fs::write(
        &main,
        "[pgbouncer]\nauth_type = trust\n%include other.ini\n",
    )
    .unwrap();
    fs::write(dir.path().join("other.ini"), "%include ./main.ini\n").unwrap();
    let e = &Config::load(&main).unwrap_err().0[0];
    assert_eq!(e.file, Some(dir.path().join("other.ini:1")));
    assert!(
        e.key == "%include" && e.message.contains("include loop"),
        "{e}"
    );
    fs::write(&main, "[pgbouncer]\n%include main.ini\n").unwrap();
    assert!(
        Config::load(&main)
            .unwrap_err()
            .to_string()
            .contains("include loop")
    );
    fs::write(&main, "[pgbouncer]\n%include missing.ini\n%include\n").unwrap();
    let all = Config::load(&main).unwrap_err().0;
    assert!(
        all[0].message.starts_with("cannot read ")
            && all[0].file == Some(dir.path().join("main.ini:2"))
    );
    assert!(all[1].message.contains("expected a file name"), "{all:?}");
}

#[test]
fn ini_files_are_recognised_by_name_or_content() {
    let ini = "; c\n[pgbouncer]\nlisten_addr = *\n";
    assert!(looks_like_ini(Path::new("x.ini"), "[pooler]\n"));
    assert!(looks_like_ini(Path::new("x.conf"), ini));
    assert!(looks_like_ini(
        Path::new("x.toml"),
        "\n# c\n[databases]\napp = host=h port=5432\n"
    ));
    assert!(looks_like_ini(Path::new("x"), "%include base.ini\n"));
    assert!(!looks_like_ini(
        Path::new("x.toml"),
        "[pooler]\nlisten_port = 1\n"
    ));
    assert!(!looks_like_ini(
        Path::new("x.toml"),
        "[databases]\napp = \"host=h\"\n"
    ));
    assert!(!looks_like_ini(
        Path::new("x.toml"),
        "[pooler]\nlisten_addr = *\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pooler.conf");
    fs::write(&path, format!("{ini}auth_type = trust\nlogfile = /tmp/x\n")).unwrap();
    let (c, warnings) = Config::load_with_warnings(&path).unwrap();
    assert_eq!(
        (c.pooler.listen_addr.clone(), warnings.len()),
        (vec!["*".to_owned()], 1)
    );
    assert_eq!(c.path.as_deref(), Some(path.as_path()));
}

#[test]
fn relative_auth_file_is_relative_to_the_ini() {
    let (c, _) = ok("[pgbouncer]\nauth_type = md5\nauth_file = userlist.txt\n");
    assert_eq!(c.pooler.auth_type, AuthType::Md5);
    assert_eq!(c.pooler.auth_file, Some(PathBuf::from("userlist.txt")));
    let (c, _) = match load(
        Path::new("/etc/pgbouncer/pgbouncer.ini"),
        "[pgbouncer]\nauth_file = users.txt\n",
    ) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        c.pooler.auth_file,
        Some(PathBuf::from("/etc/pgbouncer/users.txt"))
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pgbouncer")
        .join(name)
}

#[test]
fn fixture_translates_to_the_expected_toml_and_the_same_config() {
    let imported = import_pgbouncer(&fixture("pgbouncer.ini")).unwrap();
    let expected = fs::read_to_string(fixture("pgbouncer.toml")).unwrap();
    assert_eq!(imported.toml, expected);
    let from_ini = imported.config.unwrap();
    let from_toml = Config::parse_str(&imported.toml, Some(&fixture("pgbouncer.toml"))).unwrap();
    same(&from_ini, &from_toml);
    let (loaded, warnings) = Config::load_with_warnings(&fixture("pgbouncer.ini")).unwrap();
    same(&loaded, &from_toml);
    assert_eq!(warnings, imported.warnings);
    let keys: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w.split(": ").nth(1))
        .collect();
    assert_eq!(
        keys,
        [
            "logfile",
            "pidfile",
            "server_tls_sslmode",
            "default_pool_size"
        ]
    );
    assert_eq!(loaded.databases.len(), 8);
    assert_eq!(loaded.pooler.default_pool_size, 30);
}

#[test]
fn no_input_makes_it_panic() {
    let text = fs::read_to_string(fixture("pgbouncer.ini")).unwrap();
    let path = fixture("pgbouncer.ini");
    let nasty = "[databases]\n\"a\"\"\" = host='x''\n'' = ''\n* = =\n[pgbouncer]\nx=\u{e9}\u{1F600}\n%include\t\n[\n]\n%\nlisten_port = -0x\nserver_lifetime = 1e400\n";
    for sample in [text.as_str(), nasty] {
        for (end, _) in sample.char_indices().chain([(sample.len(), ' ')]) {
            let prefix = &sample[..end];
            let _ = load(&path, prefix);
            let _ = looks_like_ini(Path::new("x"), prefix);
        }
    }
}
