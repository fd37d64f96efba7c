//! Runs the pooler binary with a lab-style config (config/lab.toml's settings on temporary ports) for demo and test.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{free_port, tail};

/// A running pooler; killed on Drop if still running.
pub struct PoolerProcess {
    pub port: u16,
    pub log_path: PathBuf,
    child: Child,
}

/// config/lab.toml's settings: transaction mode, pool 50 + reserve 10, 1000 clients, trust,
/// admin user postgres, every database to the given PostgreSQL.
pub fn lab_config(port: u16, unix_dir: &Path, pg_port: u16) -> String {
    format!(
        "# Written by cargo xtask: config/lab.toml's settings on temporary ports.\n\
         [pooler]\n\
         listen_addr = \"127.0.0.1\"\n\
         listen_port = {port}\n\
         unix_socket_dir = \"{}\"\n\
         max_client_conn = 1000\n\
         default_pool_size = 50\n\
         reserve_pool_size = 10\n\
         reserve_pool_timeout = 5\n\
         pool_mode = \"transaction\"\n\
         auth_type = \"trust\"\n\
         admin_users = \"postgres\"\n\
         \n\
         [databases]\n\
         \"*\" = {{ host = \"127.0.0.1\", port = {pg_port} }}\n",
        unix_dir.display()
    )
}

impl PoolerProcess {
    /// Writes <dir>/config.toml and starts `bin -c` it, output to <dir>/pooler.log; waits until
    /// the TCP port accepts (15 s). Tries the next free port if the chosen one was taken.
    /// `own_group`: keep the pooler out of the terminal's Ctrl-C (the caller stops it).
    pub fn start(
        bin: &Path,
        dir: &Path,
        preferred_port: Option<u16>,
        pg_port: u16,
        own_group: bool,
    ) -> Result<PoolerProcess> {
        let unix_dir = dir.join("sock");
        std::fs::create_dir_all(&unix_dir)?;
        let config_path = dir.join("config.toml");
        let log_path = dir.join("pooler.log");
        let mut preferred = preferred_port;
        for attempt in 1..=5 {
            let port = free_port(preferred)?;
            std::fs::write(&config_path, lab_config(port, &unix_dir, pg_port))?;
            let log = std::fs::File::create(&log_path)?;
            let mut cmd = Command::new(bin);
            cmd.arg("-c")
                .arg(&config_path)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            if own_group {
                cmd.process_group(0);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            let mut pooler = PoolerProcess {
                port,
                log_path: log_path.clone(),
                child,
            };
            match pooler.wait_listening(Duration::from_secs(15)) {
                Ok(()) => return Ok(pooler),
                Err(exited) => {
                    pooler.kill();
                    let mut log = tail(&log_path, 60);
                    if log.trim().is_empty() {
                        log = "(the log is empty)".into();
                    }
                    if exited && log.contains("Address already in use") && attempt < 5 {
                        preferred = preferred.map(|p| port.max(p) + 1);
                        continue;
                    }
                    let why = if exited {
                        "it exited"
                    } else {
                        "not listening after 15 s"
                    };
                    bail!("the pooler did not start on 127.0.0.1:{port} ({why}); log:\n{log}");
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Polls a TCP connect every 50 ms; Err(true) if the process exited, Err(false) on timeout.
    fn wait_listening(&mut self, timeout: Duration) -> Result<(), bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if it has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        // SAFETY: kill on our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: the pooler ignored SIGTERM for 10 s; killing it");
        self.kill();
        None
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PoolerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
