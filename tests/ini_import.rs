//! Moving over from PgBouncer: `pooler import-pgbouncer` on the fixture ini, and the pooler run from a generated pgbouncer.ini (with %include and md5 auth) serving psql.

mod common;
use common::*;

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use pooler::config::Config;

const FIXTURE: &str = "tests/fixtures/pgbouncer/pgbouncer.ini";

/// The workspace root, where the fixture paths start.
fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("workspace root").to_path_buf()
}

/// Run the pooler binary with `args` from `dir`.
fn pooler_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pooler"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run the pooler binary")
}

/// 1-based number of the first line of `text` that starts with `key` followed by ` =`.
fn line_of(text: &str, key: &str) -> usize {
    let found = text.lines().position(|l| {
        l.strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with('='))
    });
    found.unwrap_or_else(|| panic!("{key} not in the fixture")) + 1
}

#[test]
fn import_prints_the_same_config_as_toml_and_lists_unsupported_keys() {
    let root = workspace();
    let out = pooler_cli(&root, &["import-pgbouncer", FIXTURE]);
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).expect("UTF-8 TOML"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );

    // The TOML (as if saved next to the ini, for the relative auth_file) is the ini's config.
    let dir = root.join("tests/fixtures/pgbouncer");
    let from_toml = Config::parse_str(&stdout, Some(&dir.join("imported.toml")))
        .unwrap_or_else(|e| panic!("the printed TOML is refused:\n{e}\n{stdout}"));
    let from_ini = Config::load(&root.join(FIXTURE)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:?}", from_toml.pooler),
        format!("{:?}", from_ini.pooler)
    );
    assert_eq!(from_toml.databases, from_ini.databases);
    assert_eq!(from_toml.users, from_ini.users);
    assert_eq!(
        from_ini.databases.len(),
        8,
        "the %include's databases are missing"
    );
    let expected = fs::read_to_string(dir.join("pgbouncer.toml")).expect("expected TOML");
    assert_eq!(stdout, expected);

    // Every unsupported key on stderr, one line each, with its line number and a reason.
    let ini = fs::read_to_string(root.join(FIXTURE)).expect("fixture");
    for key in ["logfile", "pidfile", "server_tls_sslmode"] {
        let prefix = format!("{FIXTURE}:{}: {key}: not supported (", line_of(&ini, key));
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.ends_with(')')),
            "no {prefix:?} line in stderr:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");

    // The same file runs as is: --check accepts it and shows the warnings.
    let out = pooler_cli(&root, &["-c", FIXTURE, "--check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "--check failed:\n{stderr}");
    assert!(stderr.contains("logfile: not supported ("), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn import_of_an_invalid_ini_exits_1_with_errors_by_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let ini = "[pgbouncer]\nauth_type = trust\nlisten_port = abc\n[databases]\napp = port=0\n";
    fs::write(tmp.path().join("bad.ini"), ini).expect("write bad.ini");
    let out = pooler_cli(tmp.path(), &["import-pgbouncer", "bad.ini"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.ini:3: listen_port: "), "{stderr}");
    assert!(
        stderr.contains("bad.ini:5: databases.app.port: "),
        "{stderr}"
    );
    // A syntax error: nothing on stdout, the line on stderr.
    fs::write(
        tmp.path().join("bad.ini"),
        "[pgbouncer]\nlisten_port 6432\n",
    )
    .expect("write");
    let out = pooler_cli(tmp.path(), &["import-pgbouncer", "bad.ini"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(1), 0),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.ini:2: expected `=` after `listen_port`"),
        "{stderr}"
    );
}

/// The pooler child, killed when dropped (its log printed if the test failed).
struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- pooler log ---\n{log}--- end ---");
        }
    }
}

/// Start `pooler -c <dir>/pgbouncer.ini`, with `ini` rendered for a free port; retried when
/// the port was taken in between.
fn start(dir: &Path, ini: &str) -> (Running, u16) {
    for _ in 0..3 {
        let port = free_port();
        fs::write(
            dir.join("pgbouncer.ini"),
            ini.replace("{port}", &port.to_string()),
        )
        .expect("write pgbouncer.ini");
        let log = dir.join("pooler.log");
        let file = fs::File::create(&log).expect("create pooler.log");
        let child = Command::new(env!("CARGO_BIN_EXE_pooler"))
            .arg("-c")
            .arg(dir.join("pgbouncer.ini"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn the pooler");
        let mut running = Running { child, log };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_until(Duration::from_secs(15), || {
            let exited = matches!(running.child.try_wait(), Ok(Some(_)));
            exited || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        let exited = matches!(running.child.try_wait(), Ok(Some(_)));
        let log = fs::read_to_string(&running.log).unwrap_or_default();
        if up && !exited {
            return (running, port);
        }
        if !log.contains("Address already in use") {
            panic!("the pooler did not start from pgbouncer.ini; log:\n{log}");
        }
    }
    panic!("no free port for the pooler after 3 attempts");
}

#[test]
fn pooler_runs_from_a_pgbouncer_ini_with_md5_auth() {
    let pg = Postgres::shared();
    let db = "ini_import";
    pg.create_database(db);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    fs::create_dir(dir.join("conf.d")).expect("conf.d");
    let md5_secret = pg.role_secret(MD5_USER);
    assert!(md5_secret.starts_with("md5"), "{md5_secret}");
    // userlist.txt exactly as PgBouncer reads it (comment line included).
    let userlist = format!(";; rendered by Ansible\n\"{MD5_USER}\" \"{md5_secret}\"\n");
    fs::write(dir.join("userlist.txt"), userlist).expect("write userlist.txt");
    let (host, pg_port) = (&pg.host, pg.port);
    let databases = format!(
        "; databases of this test\nini_app = host={host} port={pg_port} dbname={db}\n\
         ini_forced = host={host} port={pg_port} dbname={db} user={TRUST_USER} application_name='ini test'\n\
         * = host={host} port={pg_port}\n"
    );
    fs::write(dir.join("conf.d/databases.ini"), databases).expect("write databases.ini");
    let ini = format!(
        ";; pgbouncer.ini rendered by Ansible\n[databases]\n%include conf.d/databases.ini\n\n\
         [pgbouncer]\nlogfile = {log}\npidfile = {pid}\nlisten_addr = 127.0.0.1\n\
         listen_port = {{port}}\nunix_socket_dir =\nauth_type = md5\nauth_file = userlist.txt\n\
         pool_mode = transaction\ndefault_pool_size = 2\nserver_tls_sslmode = prefer\n",
        log = dir.join("pgbouncer.log").display(),
        pid = dir.join("pgbouncer.pid").display(),
    );
    let (running, port) = start(dir, &ini);

    let who = "SELECT current_user || ' ' || current_database()";
    let psql = |user: &str, database: &str, password: &str| {
        psql_conninfo(
            &conninfo("127.0.0.1", port, user, database),
            Some(password),
            who,
        )
    };
    let expected = format!("{MD5_USER} {db}");
    assert_eq!(
        psql(MD5_USER, "ini_app", MD5_PASSWORD).as_deref(),
        Ok(expected.as_str())
    );
    // The forced user of the entry, and the `*` fallback to the client's database name.
    let forced = format!("{TRUST_USER} {db}");
    assert_eq!(
        psql(MD5_USER, "ini_forced", MD5_PASSWORD).as_deref(),
        Ok(forced.as_str())
    );
    assert_eq!(
        psql(MD5_USER, db, MD5_PASSWORD).as_deref(),
        Ok(expected.as_str())
    );
    let refused = psql(MD5_USER, "ini_app", "wrong").expect_err("a wrong password must fail");
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    // The ignored PgBouncer settings were logged as warnings at startup, with their lines.
    let log = fs::read_to_string(&running.log).unwrap_or_default();
    for (line, key) in [(6, "logfile"), (7, "pidfile"), (15, "server_tls_sslmode")] {
        let warning = format!("pgbouncer.ini:{line}: {key}: not supported (");
        assert!(
            log.contains(&warning) && log.contains("WARN"),
            "{warning:?} not in:\n{log}"
        );
    }
    assert!(!dir.join("pgbouncer.pid").exists() && !dir.join("pgbouncer.log").exists());
}
