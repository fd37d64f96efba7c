//! Client drivers for the driver scenarios (psycopg 3, asyncpg, node-postgres, pgjdbc),
//! installed from the package registries only when missing, and scripts run with them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::{Pooler, clear_pg_env, run_with_timeout};

/// Where installed drivers are kept between runs (under the cargo target directory).
fn deps_dir() -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join("test-deps")
}

/// Runs `cmd` with a time limit; Ok(stdout) on success, Err(what happened) otherwise.
fn output(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    clear_pg_env(&mut cmd);
    let out = run_with_timeout(cmd, timeout)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        ))
    }
}

/// Holds an exclusive lock on `<deps>/<name>.lock` while `f` runs, so that test processes
/// running in parallel do not install into the same directory at once.
fn locked<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let dir = deps_dir();
    let _ = fs::create_dir_all(&dir);
    let file = fs::File::create(dir.join(format!("{name}.lock"))).ok();
    if let Some(file) = &file {
        // SAFETY: flock on a file descriptor we own; released when `file` is dropped.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(file), libc::LOCK_EX) };
    }
    f()
}

/// Caches the outcome of a driver setup for the whole test process.
fn once(
    cell: &'static OnceLock<Result<Driver, String>>,
    f: impl FnOnce() -> Result<Driver, String>,
) -> Result<Driver, String> {
    cell.get_or_init(f).clone()
}

/// A ready driver: the program to run scripts with and its environment.
#[derive(Clone, Debug)]
pub struct Driver {
    pub program: String,
    pub env: Vec<(String, String)>,
    /// pgjdbc: the jar to compile and run against.
    pub classpath: Option<PathBuf>,
}

impl Driver {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        clear_pg_env(&mut cmd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Writes `source` to `<dir>/<file>` and runs it with `args`; Ok(stdout) when it exits 0,
    /// Err(stdout and stderr) otherwise. Java sources are compiled with javac first.
    pub fn run(&self, file: &str, source: &str, args: &[String]) -> Result<String, String> {
        let tmp = tempfile::Builder::new()
            .prefix("driver-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let path = tmp.path().join(file);
        fs::write(&path, source).map_err(|e| e.to_string())?;
        let limit = Duration::from_secs(300);
        let mut cmd = match &self.classpath {
            Some(jar) => {
                let cp = format!("{}:{}", tmp.path().display(), jar.display());
                let mut javac = self.command("javac");
                javac
                    .arg("-cp")
                    .arg(&cp)
                    .arg("-d")
                    .arg(tmp.path())
                    .arg(&path);
                output(javac, limit)?;
                let mut java = self.command(&self.program);
                let class = file.trim_end_matches(".java");
                java.arg("-cp").arg(&cp).arg(class);
                java
            }
            None => {
                let mut cmd = self.command(&self.program);
                cmd.arg(&path);
                cmd
            }
        };
        cmd.args(args).current_dir(tmp.path());
        output(cmd, limit)
    }
}

/// Python with the given modules importable: the system's if it has them, else installed
/// with pip into a directory of ours (put on PYTHONPATH).
fn python_with(import: &str, requirement: &str) -> Result<Driver, String> {
    let check = |pythonpath: Option<&Path>| {
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(format!("import {import}"));
        if let Some(p) = pythonpath {
            cmd.env("PYTHONPATH", p);
        }
        output(cmd, Duration::from_secs(60)).is_ok()
    };
    if check(None) {
        return Ok(Driver {
            program: "python3".into(),
            env: Vec::new(),
            classpath: None,
        });
    }
    let dir = deps_dir().join("python");
    let driver = Driver {
        program: "python3".into(),
        env: vec![("PYTHONPATH".into(), dir.display().to_string())],
        classpath: None,
    };
    locked("python", || {
        if !check(Some(&dir)) {
            let mut pip = Command::new("python3");
            pip.args(["-m", "pip", "install", "--quiet", "--upgrade", "--target"])
                .arg(&dir)
                .arg(requirement);
            output(pip, Duration::from_secs(600))
                .map_err(|e| format!("cannot install {requirement} from PyPI: {e}"))?;
            if !check(Some(&dir)) {
                return Err(format!("{import} still not importable after pip install"));
            }
        }
        Ok(driver)
    })
}

/// psycopg 3 (with its binary libpq build).
pub fn psycopg() -> Result<Driver, String> {
    static CELL: OnceLock<Result<Driver, String>> = OnceLock::new();
    once(&CELL, || python_with("psycopg", "psycopg[binary]"))
}

/// prometheus_client, for its exposition-format parser.
pub fn prometheus_client() -> Result<Driver, String> {
    static CELL: OnceLock<Result<Driver, String>> = OnceLock::new();
    once(&CELL, || {
        python_with("prometheus_client", "prometheus_client")
    })
}

/// asyncpg.
pub fn asyncpg() -> Result<Driver, String> {
    static CELL: OnceLock<Result<Driver, String>> = OnceLock::new();
    once(&CELL, || python_with("asyncpg", "asyncpg"))
}

/// node-postgres (`pg`), installed with npm into a directory of ours (put on NODE_PATH).
pub fn node_pg() -> Result<Driver, String> {
    static CELL: OnceLock<Result<Driver, String>> = OnceLock::new();
    once(&CELL, || {
        let dir = deps_dir().join("node");
        let modules = dir.join("node_modules");
        let check = || {
            let mut cmd = Command::new("node");
            cmd.args(["-e", "require('pg')"]).env("NODE_PATH", &modules);
            output(cmd, Duration::from_secs(60)).is_ok()
        };
        locked("node", || {
            if !check() {
                fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let mut npm = Command::new("npm");
                npm.args(["install", "--no-save", "--silent", "--prefix"])
                    .arg(&dir)
                    .arg("pg");
                output(npm, Duration::from_secs(600))
                    .map_err(|e| format!("cannot install pg from npm: {e}"))?;
                if !check() {
                    return Err("pg still not loadable after npm install".into());
                }
            }
            Ok(Driver {
                program: "node".into(),
                env: vec![("NODE_PATH".into(), modules.display().to_string())],
                classpath: None,
            })
        })
    })
}

/// pgjdbc from Debian's libpostgresql-jdbc-java (apt-get install when the jar is missing).
pub fn pgjdbc() -> Result<Driver, String> {
    static CELL: OnceLock<Result<Driver, String>> = OnceLock::new();
    once(&CELL, || {
        let jar = PathBuf::from("/usr/share/java/postgresql.jar");
        for tool in ["java", "javac"] {
            let mut cmd = Command::new(tool);
            cmd.arg("-version");
            output(cmd, Duration::from_secs(60)).map_err(|e| format!("no {tool}: {e}"))?;
        }
        locked("apt", || {
            if !jar.is_file() {
                let install = || {
                    let mut apt = Command::new("apt-get");
                    apt.args(["install", "-y", "-q", "libpostgresql-jdbc-java"])
                        .env("DEBIAN_FRONTEND", "noninteractive");
                    output(apt, Duration::from_secs(600))
                };
                if install().is_err() {
                    let mut update = Command::new("apt-get");
                    update.args(["update", "-q"]);
                    output(update, Duration::from_secs(600))
                        .map_err(|e| format!("apt-get update: {e}"))?;
                    install().map_err(|e| format!("cannot install pgjdbc: {e}"))?;
                }
            }
            if !jar.is_file() {
                return Err(format!("{} missing after apt-get install", jar.display()));
            }
            Ok(Driver {
                program: "java".into(),
                env: Vec::new(),
                classpath: Some(jar.clone()),
            })
        })
    })
}

/// Prints why a test did nothing (straight to stderr, past the test harness' capture).
/// Under `cargo xtask test` (POOLER_TEST_REQUIRE_DRIVERS set) a driver that cannot be
/// installed fails the test instead: CI must run every driver for real.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    if std::env::var_os("POOLER_TEST_REQUIRE_DRIVERS").is_some() {
        panic!("{test}: the driver is required (POOLER_TEST_REQUIRE_DRIVERS) but: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Rows of an admin console command (SHOW ...) by column name, through psql.
pub fn admin_rows(pooler: &Pooler, cmd: &str) -> Vec<HashMap<String, String>> {
    let mut psql = Command::new("psql");
    clear_pg_env(&mut psql);
    psql.args(["-X", "-A", "-q", "-w", "-P", "footer=off", "-d"])
        .arg(pooler.connstr("postgres", "pgbouncer"))
        .arg("-c")
        .arg(cmd);
    let text = output(psql, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('|'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// A numeric column of the row of `cmd` whose `key` column is `value` (0 when absent).
pub fn admin_number(pooler: &Pooler, cmd: &str, key: &str, value: &str, column: &str) -> u64 {
    admin_rows(pooler, cmd)
        .iter()
        .find(|r| r.get(key).map(String::as_str) == Some(value))
        .and_then(|r| r.get(column))
        .map_or(0, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{cmd}: {column} = {v:?}"))
        })
}
