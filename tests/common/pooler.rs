//! The pooler binary run as a child process with a temporary config, plus pgbench runs and their parsing.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Postgres, clear_pg_env, conninfo, free_port, psql_conninfo, run_with_timeout};

/// A ready-made config: transaction mode, trust, admin user postgres, every database to the
/// cluster the pooler is started for. Tests append keys with format!/replace as needed.
pub const TRUST_TRANSACTION_CONFIG: &str = r#"[pooler]
listen_addr = "127.0.0.1"
listen_port = {port}
unix_socket_dir = "{unix_dir}"
pool_mode = "transaction"
auth_type = "trust"
admin_users = "postgres"
default_pool_size = 5

[databases]
"*" = { host = "{pg_host}", port = {pg_port} }
"#;

/// The pooler binary, started with a config file.
pub struct Pooler {
    /// TCP port it listens on (127.0.0.1).
    pub port: u16,
    /// Its unix_socket_dir (a temp dir).
    pub unix_dir: PathBuf,
    /// Temp dir holding config.toml, userlist.txt, pooler.log.
    pub dir: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

/// The binary under test: env POOLER_TEST_BIN, else the one cargo built for this package.
fn pooler_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("POOLER_TEST_BIN") {
        return PathBuf::from(path);
    }
    match option_env!("CARGO_BIN_EXE_pooler") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "no pooler binary: this test is not built inside the pooler package \
             (CARGO_BIN_EXE_pooler unset); set POOLER_TEST_BIN"
        ),
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Polls a TCP connect every 50 ms. Err(true) if the child exited, Err(false) on timeout.
fn wait_listening(child: &mut Child, port: u16, timeout: Duration) -> Result<(), bool> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(true);
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Pooler {
    /// Starts the pooler in front of Postgres::shared(). Placeholders in `config_toml`:
    /// {port}, {unix_dir}, {dir}, {pg_host}, {pg_port}, {pg_socket_dir}.
    pub fn start(config_toml: &str) -> Pooler {
        Pooler::start_for(Postgres::shared(), config_toml)
    }

    /// Same, in front of the given cluster.
    pub fn start_for(pg: &Postgres, config_toml: &str) -> Pooler {
        Pooler::start_with_userlist(pg, config_toml, &[])
    }

    /// Same, writing `<dir>/userlist.txt` before the start (reference it as "{dir}/userlist.txt").
    pub fn start_with_userlist(pg: &Postgres, config_toml: &str, users: &[(&str, &str)]) -> Pooler {
        Pooler::spawn(pg, config_toml, users, |_| {})
    }

    /// Like `start`, in a process where io_uring_setup fails as under Docker's default
    /// seccomp profile. None where the harness cannot set that up (see `deny_io_uring`).
    pub fn start_without_io_uring(config_toml: &str) -> Option<Pooler> {
        let mut supported = true;
        let p = Pooler::spawn(Postgres::shared(), config_toml, &[], |cmd| {
            supported = super::deny_io_uring(cmd);
        });
        supported.then_some(p)
    }

    fn spawn(
        pg: &Postgres,
        config_toml: &str,
        users: &[(&str, &str)],
        mut prepare: impl FnMut(&mut Command),
    ) -> Pooler {
        assert!(
            config_toml.contains("{port}"),
            "the pooler config must listen on {{port}} (a free port picked by the harness)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("pooler-test-")
            .tempdir()
            .expect("create pooler temp dir");
        let dir = tmp.path().to_path_buf();
        let unix_dir = dir.join("sock");
        fs::create_dir(&unix_dir).expect("create pooler socket dir");
        if !users.is_empty() {
            Pooler::write_userlist(&dir, users);
        }
        let config_path = dir.join("config.toml");
        let log_path = dir.join("pooler.log");
        for attempt in 1.. {
            let port = free_port();
            let config = config_toml
                .replace("{port}", &port.to_string())
                .replace("{unix_dir}", &unix_dir.display().to_string())
                .replace("{dir}", &dir.display().to_string())
                .replace("{pg_host}", &pg.host)
                .replace("{pg_port}", &pg.port.to_string())
                .replace("{pg_socket_dir}", &pg.socket_dir.display().to_string());
            fs::write(&config_path, config).expect("write pooler config");
            let log = fs::File::create(&log_path).expect("create pooler.log");
            let mut cmd = Command::new(pooler_bin());
            cmd.arg("-c")
                .arg(&config_path)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log fd"))
                .stderr(log);
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            prepare(&mut cmd);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", pooler_bin()));
            match wait_listening(&mut child, port, Duration::from_secs(15)) {
                Ok(()) => {
                    return Pooler {
                        port,
                        unix_dir,
                        dir,
                        child,
                        _tmp: tmp,
                    };
                }
                Err(exited) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let mut log = read_lossy(&log_path);
                    if log.trim().is_empty() {
                        log = "(the log is empty)".into();
                    }
                    if exited && log.contains("Address already in use") && attempt < 5 {
                        continue;
                    }
                    let why = if exited {
                        "it exited"
                    } else {
                        "timeout after 15 s"
                    };
                    panic!(
                        "the pooler did not start listening on 127.0.0.1:{port} ({why}); log:\n{log}"
                    );
                }
            }
        }
        unreachable!()
    }

    /// Writes `<dir>/userlist.txt` in PgBouncer's auth_file format: "user" "secret" per line.
    pub fn write_userlist(dir: &Path, entries: &[(&str, &str)]) {
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let text: String = entries
            .iter()
            .map(|(user, secret)| format!("{} {}\n", quote(user), quote(secret)))
            .collect();
        fs::write(dir.join("userlist.txt"), text).expect("write userlist.txt");
    }

    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("pooler.log"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (libc::SIGHUP, SIGTERM, SIGINT...) to the pooler.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the child is not reaped before Drop
        // or wait_exit, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits for the process to exit (polling, up to `timeout`) and returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// psql through the pooler over TCP; Ok(stdout trimmed) or Err(stderr).
    pub fn psql(
        &self,
        user: &str,
        db: &str,
        password: Option<&str>,
        sql: &str,
    ) -> Result<String, String> {
        psql_conninfo(&self.connstr(user, db), password, sql)
    }

    /// psql as "postgres" on the admin console (database "pgbouncer", as in PgBouncer).
    pub fn admin(&self, sql: &str) -> Result<String, String> {
        self.psql("postgres", "pgbouncer", None, sql)
    }

    /// libpq-style connection string for tokio-postgres / psql (append " password=..." if needed).
    pub fn connstr(&self, user: &str, db: &str) -> String {
        conninfo("127.0.0.1", self.port, user, db)
    }

    /// pgbench through the pooler: `args` come after "-h 127.0.0.1 -p PORT -U user", then `db`.
    pub fn pgbench(&self, user: &str, db: &str, args: &[&str]) -> PgbenchResult {
        run_pgbench(self.port, user, db, None, args)
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "--- last {} lines of {} ---\n{}\n--- end of pooler log ---",
                tail.len(),
                self.dir.join("pooler.log").display(),
                tail.join("\n")
            );
        }
    }
}

/// What one pgbench run reported.
#[derive(Debug, Clone, Default)]
pub struct PgbenchResult {
    /// pgbench exited with status 0 (no client aborted, no connection failure).
    pub ok: bool,
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    /// "latency average = X ms", 0 when absent.
    pub latency_ms: f64,
    /// Lines "client N aborted ...".
    pub aborted: u64,
    pub stdout: String,
    pub stderr: String,
}

impl PgbenchResult {
    /// Parses pgbench 15 output (also tolerates the older "tps = X (including ...)" form).
    pub fn parse(ok: bool, stdout: &str, stderr: &str) -> PgbenchResult {
        let number_after = |prefix: &str| -> Option<&str> {
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split([' ', '/']).next())
        };
        PgbenchResult {
            ok,
            tps: number_after("tps = ")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0),
            transactions: number_after("number of transactions actually processed: ")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            failed: number_after("number of failed transactions: ")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            latency_ms: number_after("latency average = ")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0),
            aborted: format!("{stdout}\n{stderr}")
                .lines()
                .filter(|l| l.contains("client ") && l.contains(" aborted"))
                .count() as u64,
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
        }
    }
}

/// pgbench -h 127.0.0.1 -p PORT -U USER ARGS... DB, with an optional password; 30 min at most.
pub fn run_pgbench(
    port: u16,
    user: &str,
    db: &str,
    password: Option<&str>,
    args: &[&str],
) -> PgbenchResult {
    let mut cmd = Command::new("pgbench");
    clear_pg_env(&mut cmd);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
        .args(args)
        .arg(db)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/dev/null");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = run_with_timeout(cmd, Duration::from_secs(1800)).unwrap_or_else(|e| panic!("{e}"));
    PgbenchResult::parse(
        out.status.success(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}
