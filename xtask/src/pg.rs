//! A temporary PostgreSQL 15 cluster run as an unprivileged user (postgres when we are root), for demo and test.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{free_port, is_root, make_temp_dir};

/// A running cluster; stopped and removed on Drop.
pub struct Cluster {
    pub port: u16,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// Its stdin is our end of a pipe: if xtask dies, it stops the server and removes `root`.
    watchdog: Option<Child>,
}

pub fn bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// uid/gid of the `postgres` account, used when running as root (initdb refuses root).
fn postgres_account() -> Result<(u32, u32)> {
    let name = CString::new("postgres")?;
    // SAFETY: NUL-terminated name; the fields are copied out before any other getpw* call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!(
            "running as root but there is no `postgres` user to run PostgreSQL as (apt-get install postgresql-15 creates it)"
        );
    }
    // SAFETY: pw is non-null and points to getpwnam's static buffer.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

impl Cluster {
    /// initdb (trust everywhere) and start on a free port, retrying when the port is taken.
    /// (pg_ctl puts the server in a session of its own: a Ctrl-C on the terminal does not reach it.)
    pub fn start(max_connections: u32) -> Result<Cluster> {
        let bin_dir = bin_dir();
        if !bin_dir.join("initdb").is_file() {
            bail!(
                "no initdb in {} (apt-get install postgresql-15, or set PG_BIN_DIR)",
                bin_dir.display()
            );
        }
        let run_as = if is_root() {
            Some(postgres_account()?)
        } else {
            None
        };
        let root = make_temp_dir("xtask-pg")?;
        let mut cluster = Cluster {
            port: 0,
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            root,
            bin_dir,
            run_as,
            watchdog: None,
        };
        std::fs::create_dir(&cluster.socket_dir)?;
        cluster.give(&cluster.root)?;
        cluster.give(&cluster.socket_dir)?;
        cluster.spawn_watchdog()?;

        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&cluster.data_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let conf_path = cluster.data_dir.join("postgresql.conf");
        let base = std::fs::read_to_string(&conf_path)?;
        for attempt in 1..=8 {
            cluster.port = free_port(None)?;
            let conf = format!(
                "{base}\n# cargo xtask\nlisten_addresses = '127.0.0.1'\nport = {}\n\
                 unix_socket_directories = '{}'\nmax_connections = {max_connections}\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 shared_buffers = 128MB\nlogging_collector = off\n",
                cluster.port,
                cluster.socket_dir.display()
            );
            std::fs::write(&conf_path, conf)?;
            cluster.give(&conf_path)?;
            let log_before = std::fs::metadata(cluster.log_path())
                .map(|m| m.len())
                .unwrap_or(0);
            let mut start = cluster.command("pg_ctl");
            start
                .arg("-D")
                .arg(&cluster.data_dir)
                .arg("-l")
                .arg(cluster.log_path())
                .args(["-w", "-t", "60", "start"])
                .stdout(Stdio::null());
            if start.status().context("run pg_ctl start")?.success() {
                return Ok(cluster);
            }
            let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
            let new = log.get(log_before as usize..).unwrap_or(&log);
            if !new.contains("could not bind") || attempt == 8 {
                bail!(
                    "PostgreSQL did not start; {}:\n{new}",
                    cluster.log_path().display()
                );
            }
        }
        unreachable!("the last attempt returns")
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(&self.root).env("HOME", &self.root);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn give(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }

    fn spawn_watchdog(&mut self) -> Result<()> {
        let script = r#"cat >/dev/null
if [ -f "$1/postmaster.pid" ]; then "$2/pg_ctl" -D "$1" -m immediate -w -t 30 stop; fi
rm -rf "$3""#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("xtask-pg-watchdog")
            .arg(&self.data_dir)
            .arg(&self.bin_dir)
            .arg(&self.root)
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        self.watchdog = Some(cmd.spawn().context("spawn the cleanup watchdog")?);
        Ok(())
    }

    /// pg_ctl stop -m fast (falling back to immediate); idempotent.
    pub fn stop(&mut self) {
        for mode in ["fast", "immediate"] {
            if !self.data_dir.join("postmaster.pid").exists() {
                break;
            }
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", mode, "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
