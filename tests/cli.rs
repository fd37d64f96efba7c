//! The command line: --version, --check on good and bad files, a taken port, io backends, SIGTERM, the Unix socket.

mod common;
use common::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The binary under test (same rule as the harness: POOLER_TEST_BIN, else cargo's).
fn pooler_bin() -> PathBuf {
    std::env::var_os("POOLER_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pooler")))
}

/// Runs the pooler with `args` (30 s at most) and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(pooler_bin());
    cmd.args(args).env("RUST_LOG", "info");
    let out: Output =
        run_with_timeout(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shipped_config(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name);
    assert!(path.is_file(), "{} missing", path.display());
    path.display().to_string()
}

/// Writes `text` as config.toml in a fresh temp dir (kept alive by the returned guard).
fn temp_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

/// TRUST_TRANSACTION_CONFIG with `extra` lines in [pooler].
fn with_pooler_keys(extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG.replace("[databases]", &format!("{extra}\n\n[databases]"))
}

#[test]
fn version_prints_the_version() {
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("pooler {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn no_config_file_is_a_usage_error() {
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("-c FILE"), "{stderr}");
}

#[test]
fn check_accepts_the_shipped_lab_and_reference_configs() {
    for name in ["lab.toml", "pooler.toml"] {
        let path = shipped_config(name);
        for args in [["-c", &path, "--check"], ["--check", &path, ""]] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let (code, stdout, stderr) = run(&args);
            assert_eq!(code, Some(0), "{args:?}: {stderr}");
            assert!(
                stdout.contains(&path) && stdout.contains("valid"),
                "{args:?}: {stdout}"
            );
        }
    }
}

/// prod.toml names /etc/pooler/userlist.txt, which a machine without the pooler installed
/// does not have: --check loads the auth file too, so it refuses, naming key and file.
#[test]
fn check_on_prod_config_names_its_missing_auth_file() {
    let auth_file = "/etc/pooler/userlist.txt";
    assert!(
        !Path::new(auth_file).exists(),
        "{auth_file} exists on this machine; this test expects it absent"
    );
    let path = shipped_config("prod.toml");
    let (code, stdout, stderr) = run(&["-c", &path, "--check"]);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("valid"), "{stdout}");
    assert!(
        stderr.contains("pooler.auth_file") && stderr.contains(auth_file),
        "{stderr}"
    );

    // With the auth file present, the rest of prod.toml is valid.
    let text = std::fs::read_to_string(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("userlist.txt"), "\"postgres\" \"secret\"\n").unwrap();
    let text = text.replace(
        auth_file,
        &dir.path().join("userlist.txt").display().to_string(),
    );
    let (_guard, copy) = temp_config(&text);
    let (code, stdout, stderr) = run(&["-c", &copy, "--check"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn check_lists_every_problem_of_a_file() {
    let (_guard, path) = temp_config(
        r#"[pooler]
auth_type = "trust"
listen_port = 0
pool_mode = "banana"
default_pool_size = -1

[databases]
app = { host = "127.0.0.1" }
"#,
    );
    let (code, stdout, stderr) = run(&["-c", &path, "--check"]);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stdout.contains("valid"), "{stdout}");
    for key in [
        "pooler.listen_port",
        "pooler.pool_mode",
        "pooler.default_pool_size",
    ] {
        assert!(stderr.contains(key), "{key} not named:\n{stderr}");
    }
}

#[test]
fn check_names_unknown_keys() {
    let (_guard, path) = temp_config(
        r#"[pooler]
auth_type = "trust"
default_pool_sise = 10

[databases]
app = { host = "127.0.0.1", pool_sise = 3 }
"#,
    );
    let (code, _, stderr) = run(&["-c", &path, "--check"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pooler.default_pool_sise"), "{stderr}");
    assert!(stderr.contains("databases.app.pool_sise"), "{stderr}");
}

#[test]
fn a_taken_listen_port_is_a_clear_startup_error() {
    let port = free_port();
    let taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (_guard, path) = temp_config(&format!(
        "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nunix_socket_dir = \"\"\n\
         auth_type = \"trust\"\n\n[databases]\n\"*\" = {{ host = \"127.0.0.1\" }}\n"
    ));
    let (code, _, stderr) = run(&["-c", &path]);
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {code:?} with port {port} taken:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("Address already in use"),
        "{stderr}"
    );
    drop(taken);
}

/// The startup line names `backend`, a query answers, and a short pgbench run of
/// transactions completes without a failure.
fn assert_serves_on(pooler: &Pooler, db: &str, backend: &str) {
    let line = format!("{backend} backend");
    assert!(
        wait_until(Duration::from_secs(5), || pooler.log().contains(&line)),
        "no {line:?} in the log:\n{}",
        pooler.log()
    );
    assert_eq!(
        pooler.psql("postgres", db, None, "SELECT 6 * 7").as_deref(),
        Ok("42")
    );
    let script = pooler.dir.join("tx.sql");
    std::fs::write(&script, "BEGIN;\nSELECT 1;\nSELECT now();\nEND;\n").unwrap();
    let script = script.to_str().unwrap();
    let run = pooler.pgbench(
        "postgres",
        db,
        &["-n", "-c", "8", "-j", "2", "-t", "200", "-f", script],
    );
    assert!(
        run.ok && run.failed == 0 && run.aborted == 0 && run.transactions == 1600,
        "pgbench on {backend}:\n{}\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn the_epoll_backend_serves_queries() {
    let db = "cli_epoll";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(&with_pooler_keys("io_backend = \"epoll\""));
    assert_serves_on(&pooler, db, "epoll");
}

#[test]
fn the_io_uring_backend_is_used_when_asked() {
    let db = "cli_io_uring";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(&with_pooler_keys("io_backend = \"io_uring\""));
    assert_serves_on(&pooler, db, "io_uring");
}

/// Docker's default seccomp profile refuses io_uring_setup: `auto` must fall back to epoll
/// with one warning and serve as usual.
#[test]
fn auto_falls_back_to_epoll_where_io_uring_is_refused() {
    let db = "cli_auto_fallback";
    Postgres::shared().create_database(db);
    let Some(pooler) = Pooler::start_without_io_uring(&with_pooler_keys("io_backend = \"auto\""))
    else {
        return skip(
            "cli",
            "no seccomp filter for this architecture in the harness",
        );
    };
    assert_serves_on(&pooler, db, "epoll");
    let log = pooler.log();
    assert!(
        log.contains("io_uring is unavailable") && log.contains("falling back to epoll"),
        "no fallback warning in the log:\n{log}"
    );
}

/// `io_backend = "io_uring"` is a demand: where io_uring is refused the pooler does not
/// start, and says why.
#[test]
fn io_uring_demanded_but_refused_is_a_clear_startup_error() {
    let unix_dir = tempfile::tempdir().unwrap();
    let config = with_pooler_keys("io_backend = \"io_uring\"")
        .replace("{port}", &free_port().to_string())
        .replace("{unix_dir}", &unix_dir.path().display().to_string())
        .replace("{pg_host}", "127.0.0.1")
        .replace("{pg_port}", "5432");
    let (_dir, path) = temp_config(&config);
    let mut cmd = Command::new(pooler_bin());
    cmd.args(["-c", &path]).env("RUST_LOG", "info");
    if !deny_io_uring(&mut cmd) {
        return skip(
            "cli",
            "no seccomp filter for this architecture in the harness",
        );
    }
    let out = run_with_timeout(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without io_uring although io_backend = \"io_uring\":\n{stderr}"
    );
    assert!(
        stderr.contains("io_backend = \"io_uring\" but io_uring is unavailable"),
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_pooler_and_removes_its_socket() {
    let db = "cli_sigterm";
    Postgres::shared().create_database(db);
    let mut pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let socket = pooler.unix_dir.join(format!(".s.PGSQL.{}", pooler.port));
    assert_eq!(
        pooler.psql("postgres", db, None, "SELECT 1").as_deref(),
        Ok("1")
    );
    assert!(
        socket.exists(),
        "{} missing while running",
        socket.display()
    );
    pooler.signal(libc::SIGTERM);
    let status = pooler
        .wait_exit(Duration::from_secs(10))
        .expect("the pooler still runs 10 s after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        !socket.exists(),
        "{} left behind after SIGTERM",
        socket.display()
    );
}

#[test]
fn psql_over_the_unix_socket() {
    let db = "cli_unix";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let conninfo = format!(
        "host={} port={} user=postgres dbname={db}",
        pooler.unix_dir.display(),
        pooler.port
    );
    assert_eq!(
        psql_conninfo(&conninfo, None, "SELECT current_database()").as_deref(),
        Ok(db)
    );
}
