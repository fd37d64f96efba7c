//! Temporary PostgreSQL 15 clusters for the integration tests: one shared per test binary, or private ones.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::{
    clear_pg_env, conninfo, free_port, psql_conninfo, run_with_timeout, sql_ident, sql_literal,
    wait_until,
};

pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5_pass";
pub const SCRAM_USER: &str = "scram_user";
pub const SCRAM_PASSWORD: &str = "scram_pass";
pub const PLAIN_USER: &str = "plain_user";
pub const PLAIN_PASSWORD: &str = "plain_pass";
pub const TRUST_USER: &str = "trust_user";

const PG_HBA: &str = "\
local all all trust
host all md5_user 127.0.0.1/32 md5
host all scram_user 127.0.0.1/32 scram-sha-256
host all plain_user 127.0.0.1/32 password
host all all 127.0.0.1/32 trust
";

const SETUP_SQL: &[&str] = &[
    "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5_pass'",
    "SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN PASSWORD 'scram_pass'",
    "CREATE ROLE plain_user LOGIN PASSWORD 'plain_pass'",
    "CREATE ROLE trust_user LOGIN",
    "CREATE DATABASE app",
    "GRANT ALL ON DATABASE app TO PUBLIC",
];

/// Options of a cluster.
pub struct PgOptions {
    pub max_connections: u32,
    /// Extra postgresql.conf lines, appended last (so they win).
    pub extra_conf: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 300,
            extra_conf: Vec::new(),
        }
    }
}

/// The unprivileged account the server runs as when the tests run as root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// A PostgreSQL 15 cluster in a temporary directory, owned by an unprivileged user.
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub socket_dir: PathBuf,
    pub data_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    conf_base: String,
    /// Holds the write end of the watchdog's stdin: when this process dies, however it dies,
    /// the watchdog reads EOF, stops the server and removes the directory.
    watchdog: Mutex<Option<Child>>,
    tmp: Mutex<Option<tempfile::TempDir>>,
}

static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some(Ok(pg)) = SHARED.get() {
        pg.shutdown();
    }
}

fn run_as() -> Option<RunAs> {
    static RUN_AS: OnceLock<Option<RunAs>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let name = std::env::var("PG_TEST_USER").unwrap_or_else(|_| "postgres".into());
        let cname = CString::new(name.clone()).expect("user name without NUL");
        // SAFETY: getpwnam reads a NUL-terminated string; the result is copied out at once,
        // and this runs once per process (OnceLock), so no other call can overwrite it meanwhile.
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if pw.is_null() {
            panic!(
                "running as root: PostgreSQL must run as an unprivileged user, but user {name:?} \
                 does not exist (install postgresql-15, which creates `postgres`, or set PG_TEST_USER)"
            );
        }
        // SAFETY: pw is non-null and points to getpwnam's static buffer.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Some(RunAs { uid, gid })
    })
}

fn bin_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("PG_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    if dir.join("initdb").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "PostgreSQL binaries not found: {} has no initdb (apt-get install postgresql-15, or set PG_BIN_DIR)",
            dir.display()
        ))
    }
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Postgres {
    /// One cluster per test binary, started on first use and stopped at process exit.
    pub fn shared() -> &'static Postgres {
        let result = SHARED.get_or_init(|| {
            let pg = Postgres::try_start(&PgOptions::default())?;
            // SAFETY: registering a plain extern "C" fn without captures.
            unsafe { libc::atexit(stop_shared_at_exit) };
            Ok(pg)
        });
        match result {
            Ok(pg) => pg,
            Err(e) => panic!("the shared PostgreSQL cluster could not start:\n{e}"),
        }
    }

    /// A private cluster, stopped (immediate) and removed on Drop.
    pub fn start(opts: PgOptions) -> Postgres {
        Postgres::try_start(&opts).unwrap_or_else(|e| panic!("PostgreSQL could not start:\n{e}"))
    }

    fn try_start(opts: &PgOptions) -> Result<Postgres, String> {
        let bin_dir = bin_dir()?;
        let run_as = run_as();
        // As root the server user must reach the directory: use /tmp, whatever TMPDIR says.
        let base = match run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let tmp = tempfile::Builder::new()
            .prefix("pgtest-")
            .tempdir_in(&base)
            .map_err(|e| format!("create a temp dir in {}: {e}", base.display()))?;
        let root = tmp.path().to_path_buf();
        let socket_dir = root.join("sock");
        fs::create_dir(&socket_dir).map_err(|e| format!("mkdir {}: {e}", socket_dir.display()))?;
        let mut pg = Postgres {
            host: "127.0.0.1".into(),
            port: 0,
            socket_dir,
            data_dir: root.join("data"),
            bin_dir,
            run_as,
            conf_base: String::new(),
            watchdog: Mutex::new(None),
            tmp: Mutex::new(Some(tmp)),
        };
        for dir in [&root, &pg.socket_dir] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
            pg.give(dir)?;
        }
        pg.spawn_watchdog(&root)?;

        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(&pg.data_dir)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=trust"])
            .args([
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]);
        let out = run_with_timeout(initdb, Duration::from_secs(120))?;
        if !out.status.success() {
            return Err(format!("initdb failed:\n{}", output_text(&out)));
        }
        pg.write_file("pg_hba.conf", PG_HBA)?;
        let conf_path = pg.data_dir.join("postgresql.conf");
        let mut conf = fs::read_to_string(&conf_path).map_err(|e| format!("read conf: {e}"))?;
        conf.push_str(&format!(
            "\n# test harness\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = {}\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 128MB\nlogging_collector = off\nlog_line_prefix = '%m [%p] %q%u@%d '\n",
            pg.socket_dir.display(),
            opts.max_connections
        ));
        for line in &opts.extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        pg.conf_base = conf;

        // The port is only known free until someone else binds it: retry on a bind collision.
        let mut last = String::new();
        for _ in 0..8 {
            pg.port = free_port();
            pg.write_file(
                "postgresql.conf",
                &format!("{}port = {}\n", pg.conf_base, pg.port),
            )?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(log) if is_bind_failure(&log) => last = log,
                Err(log) => return Err(log),
            }
        }
        if !last.is_empty() {
            return Err(format!("no free port after 8 tries; last attempt:\n{last}"));
        }
        for sql in SETUP_SQL {
            pg.try_psql("postgres", sql)
                .map_err(|e| format!("cluster setup `{sql}` failed: {e}"))?;
        }
        pg.try_psql("app", "GRANT ALL ON SCHEMA public TO PUBLIC")
            .map_err(|e| format!("cluster setup failed: {e}"))?;
        Ok(pg)
    }

    /// A command for one of the server binaries, run as the server user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        clear_pg_env(&mut cmd);
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        if let Some(dir) = self.data_dir.parent() {
            cmd.current_dir(dir).env("HOME", dir);
        }
        cmd
    }

    /// chown to the server user (no-op when not root).
    fn give(&self, path: &Path) -> Result<(), String> {
        match self.run_as {
            Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", path.display())),
            None => Ok(()),
        }
    }

    fn write_file(&self, name: &str, text: &str) -> Result<(), String> {
        let path = self.data_dir.join(name);
        fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        self.give(&path)
    }

    /// `sh` waiting for EOF on stdin, then stopping the server and removing the directory.
    fn spawn_watchdog(&self, root: &Path) -> Result<(), String> {
        let script = r#"cat >/dev/null
if [ -f "$1/postmaster.pid" ]; then "$2/pg_ctl" -D "$1" -m immediate -w -t 30 stop; fi
rm -rf "$3""#;
        let mut cmd = Command::new("sh");
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd.arg("-c")
            .arg(script)
            .arg("pgtest-watchdog")
            .arg(&self.data_dir)
            .arg(&self.bin_dir)
            .arg(root)
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C on the terminal must not kill it before it cleans up.
            .process_group(0);
        let child = cmd.spawn().map_err(|e| format!("spawn watchdog: {e}"))?;
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// pg_ctl start -w; Err carries pg_ctl's output and the server log written by this attempt.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let before = fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0) as usize;
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"]);
        let out = run_with_timeout(cmd, Duration::from_secs(90))?;
        if out.status.success() {
            return Ok(());
        }
        let log = self.log();
        Err(format!(
            "pg_ctl start (port {}) failed:\n{}\n--- PostgreSQL log ({}) ---\n{}",
            self.port,
            output_text(&out).trim(),
            self.log_path().display(),
            log.get(before..).unwrap_or(&log)
        ))
    }

    fn pg_ctl_stop(&self) -> Result<(), String> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"]);
        let out = run_with_timeout(cmd, Duration::from_secs(90))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl stop failed: {}", output_text(&out)))
        }
    }

    /// psql as superuser "postgres" over TCP; Ok(stdout trimmed) or Err(stderr).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        psql_conninfo(&self.connstr("postgres", db), None, sql)
    }

    /// Same, panicking with stderr on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql on {db} failed: {e}\nSQL: {sql}"))
    }

    /// libpq-style connection string to this cluster over TCP.
    pub fn connstr(&self, user: &str, db: &str) -> String {
        conninfo(&self.host, self.port, user, db)
    }

    /// CREATE DATABASE if missing; safe to call from parallel tests.
    pub fn create_database(&self, name: &str) {
        let exists = || {
            self.psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_database WHERE datname = {}",
                    sql_literal(name)
                ),
            ) == "1"
        };
        let mut last = String::new();
        let done = wait_until(Duration::from_secs(30), || {
            if exists() {
                return true;
            }
            match self.try_psql("postgres", &format!("CREATE DATABASE {}", sql_ident(name))) {
                Ok(_) => true,
                // A concurrent creator won (already exists / unique violation), or the template is
                // briefly busy: look again. Anything else is a real error.
                Err(e) if is_create_race(&e) => {
                    last = e;
                    exists()
                }
                Err(e) => panic!("CREATE DATABASE {name} failed: {e}"),
            }
        });
        assert!(done, "CREATE DATABASE {name} failed: {last}");
    }

    /// Stop with -m immediate and start again on the same port (waits until it accepts connections).
    pub fn restart_immediate(&self) {
        self.pg_ctl_stop().unwrap_or_else(|e| panic!("{e}"));
        let mut last = String::new();
        let started = wait_until(Duration::from_secs(30), || match self.pg_ctl_start() {
            Ok(()) => true,
            Err(log) if is_bind_failure(&log) => {
                last = log;
                false
            }
            Err(log) => panic!("restart failed:\n{log}"),
        });
        assert!(started, "restart: port {} stayed busy:\n{last}", self.port);
    }

    /// Client backends connected to `db` (optionally as `user`), not counting the query's own.
    pub fn backend_count(&self, db: &str, user: Option<&str>) -> i64 {
        let mut sql = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid() AND datname = {}",
            sql_literal(db)
        );
        if let Some(user) = user {
            sql.push_str(&format!(" AND usename = {}", sql_literal(user)));
        }
        let out = self.psql("postgres", &sql);
        out.parse()
            .unwrap_or_else(|_| panic!("backend_count: unexpected output {out:?}"))
    }

    /// The role's stored password verifier ("md5..." or "SCRAM-SHA-256$..."), as an auth_file
    /// (userlist.txt) secret; empty when the role has no password.
    pub fn role_secret(&self, user: &str) -> String {
        self.psql(
            "postgres",
            &format!(
                "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = {}",
                sql_literal(user)
            ),
        )
    }

    /// Run pgbench as superuser "postgres" against this cluster directly.
    pub fn pgbench(&self, db: &str, args: &[&str]) -> super::PgbenchResult {
        super::run_pgbench(self.port, "postgres", db, None, args)
    }

    /// Stops the server and removes the directory; idempotent, never panics.
    fn shutdown(&self) {
        let Some(tmp) = self.tmp.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if self.data_dir.join("postmaster.pid").exists()
            && let Err(e) = self.pg_ctl_stop()
        {
            eprintln!("test harness: {e}");
        }
        if let Some(mut watchdog) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
        drop(tmp);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn is_create_race(err: &str) -> bool {
    err.contains("already exists")
        || err.contains("duplicate key")
        || err.contains("being accessed by other users")
}

fn is_bind_failure(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}
