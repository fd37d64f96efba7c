//! What pgbench is pointed at: PostgreSQL directly, Debian's PgBouncer, or our pooler in one of
//! its variants; each pooler is started fresh for every run and stopped after it.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::sys;
use crate::{free_port, tail};

/// Pool settings shared by PgBouncer and us (the issue's: pool 50, reserve 10, 1000 clients).
pub const POOL_SIZE: u32 = 50;
pub const RESERVE_POOL_SIZE: u32 = 10;
pub const MAX_CLIENT_CONN: u32 = 1000;

/// One configuration of our pooler.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub name: &'static str,
    pub io_backend: Option<&'static str>,
    pub workers: Option<u32>,
    pub ebpf: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// pgbench straight to PostgreSQL with this many clients.
    Direct(u32),
    PgBouncer,
    Us(Variant),
}

impl Target {
    pub fn name(&self) -> String {
        match self {
            Target::Direct(n) => format!("direct-{n}"),
            Target::PgBouncer => "pgbouncer".into(),
            Target::Us(v) => v.name.into(),
        }
    }
}

/// What the bench knows about the programs it runs.
pub struct Env {
    pub pooler_bin: PathBuf,
    pub pgbouncer_bin: PathBuf,
    pub pg_port: u16,
    pub work: PathBuf,
    /// Who PgBouncer runs as (it refuses root).
    pub run_as: Option<(u32, u32)>,
    /// `ebpf` key: Ok(()) when `ebpf = "on"` starts, Err(why the eBPF variant is skipped).
    pub ebpf: Result<(), String>,
    pub backend: String,
    pub workers: u32,
    /// PgBouncer has `max_prepared_statements` (1.21+): it can run `-M prepared` in
    /// transaction mode.
    pub pgbouncer_prepared: bool,
}

/// A pooler process (PgBouncer or ours) listening on 127.0.0.1:port.
pub struct Server {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        sys::terminate(&mut self.child, Duration::from_secs(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Env {
    /// Our variants for this machine: the defaults (`workers = 0`, `io_backend = auto`), epoll,
    /// one worker, and eBPF on when the pooler has it (the others then say `ebpf = "off"`).
    pub fn variants(&self) -> Vec<Variant> {
        let ebpf_off = self.ebpf.is_ok().then_some("off");
        let base = Variant {
            name: "us",
            io_backend: None,
            workers: None,
            ebpf: ebpf_off,
        };
        let mut out = vec![
            base.clone(),
            Variant {
                name: "us-epoll",
                io_backend: Some("epoll"),
                ..base.clone()
            },
            Variant {
                name: "us-1-worker",
                workers: Some(1),
                ..base.clone()
            },
        ];
        if self.ebpf.is_ok() {
            out.push(Variant {
                name: "us-ebpf",
                ebpf: Some("on"),
                ..base
            });
        }
        out
    }

    pub fn describe(&self, target: &Target) -> String {
        match target {
            Target::Direct(n) => format!("PostgreSQL directly, {n} clients"),
            Target::PgBouncer => "PgBouncer (Debian), transaction mode".into(),
            Target::Us(v) => format!(
                "pooler: io_backend={}, workers={}{}",
                v.io_backend
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("auto ({})", self.backend)),
                v.workers
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| format!("0 ({})", self.workers)),
                v.ebpf.map(|e| format!(", ebpf={e}")).unwrap_or_default()
            ),
        }
    }

    /// Starts the pooler of `target` (None for Direct).
    pub fn start(&self, target: &Target, max_clients: u32) -> Result<Option<Server>> {
        match target {
            Target::Direct(_) => Ok(None),
            Target::PgBouncer => self.start_pgbouncer(max_clients).map(Some),
            Target::Us(v) => self.start_us(v, max_clients).map(Some),
        }
    }

    fn run_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir)?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        Ok(dir)
    }

    /// Our pooler's TOML, config/lab.toml's settings plus the variant's keys.
    pub fn us_config(&self, v: &Variant, port: u16, dir: &Path, max_clients: u32) -> String {
        let mut extra = format!(
            "log_connections = false\nlog_disconnections = false\nmax_client_conn = {max_clients}\n"
        );
        if let Some(b) = v.io_backend {
            extra += &format!("io_backend = \"{b}\"\n");
        }
        if let Some(w) = v.workers {
            extra += &format!("workers = {w}\n");
        }
        if let Some(e) = v.ebpf {
            extra += &format!("ebpf = \"{e}\"\n");
        }
        crate::pooler::lab_config(port, &dir.join("sock"), self.pg_port)
            .replace("max_client_conn = 1000\n", "")
            .replacen("[pooler]\n", &format!("[pooler]\n{extra}"), 1)
    }

    pub fn start_us(&self, v: &Variant, max_clients: u32) -> Result<Server> {
        self.start_us_wrapped(v, max_clients, &[])
    }

    /// Our pooler run under `wrapper` (e.g. valgrind and its options) when not empty.
    pub fn start_us_wrapped(
        &self,
        v: &Variant,
        max_clients: u32,
        wrapper: &[String],
    ) -> Result<Server> {
        let dir = self.run_dir(v.name)?;
        std::fs::create_dir_all(dir.join("sock"))?;
        spawn_listening(v.name, &dir, |port| {
            let config = dir.join("config.toml");
            std::fs::write(&config, self.us_config(v, port, &dir, max_clients))?;
            let mut cmd = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(args).arg(&self.pooler_bin);
                    cmd
                }
                None => Command::new(&self.pooler_bin),
            };
            cmd.arg("-c").arg(&config).env_remove("RUST_LOG");
            Ok(cmd)
        })
    }

    pub fn start_pgbouncer(&self, max_clients: u32) -> Result<Server> {
        let dir = self.run_dir("pgbouncer")?;
        let userlist = dir.join("userlist.txt");
        std::fs::write(&userlist, "\"postgres\" \"\"\n")?;
        spawn_listening("pgbouncer", &dir, |port| {
            let ini = dir.join("pgbouncer.ini");
            let text = format!(
                "[databases]\n* = host=127.0.0.1 port={pg}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\nadmin_users = postgres\n\
                 pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\n\
                 reserve_pool_size = {RESERVE_POOL_SIZE}\nreserve_pool_timeout = 5\n\
                 max_client_conn = {max_clients}\nignore_startup_parameters = extra_float_digits\n\
                 log_connections = 0\nlog_disconnections = 0\n{prepared}",
                pg = self.pg_port,
                users = userlist.display(),
                prepared = if self.pgbouncer_prepared {
                    "max_prepared_statements = 200\n"
                } else {
                    ""
                }
            );
            std::fs::write(&ini, text)?;
            let mut cmd = Command::new(&self.pgbouncer_bin);
            cmd.arg(&ini);
            if let Some((uid, gid)) = self.run_as {
                cmd.uid(uid).gid(gid);
            }
            Ok(cmd)
        })
    }

    /// Starts our pooler with `ebpf = "on"`: Err(why not) when the key is unknown or eBPF fails.
    pub fn probe_ebpf(&self) -> Result<(), String> {
        let v = Variant {
            name: "ebpf-probe",
            io_backend: None,
            workers: None,
            ebpf: Some("on"),
        };
        let dir = self.run_dir(v.name).map_err(|e| e.to_string())?;
        let config = dir.join("config.toml");
        std::fs::write(&config, self.us_config(&v, 6432, &dir, 100)).map_err(|e| e.to_string())?;
        let out = Command::new(&self.pooler_bin)
            .arg("-c")
            .arg(&config)
            .arg("--check")
            .output()
            .map_err(|e| e.to_string())?;
        let said = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let line = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!(
                "the pooler does not accept `ebpf = \"on\"` ({})",
                line.trim()
            ));
        }
        match self.start_us(&v, 100) {
            Ok(mut server) => {
                std::thread::sleep(Duration::from_millis(500));
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                server.stop();
                match log
                    .lines()
                    .find(|l| l.contains("ERROR") || l.contains("WARN"))
                {
                    Some(l) if l.to_lowercase().contains("ebpf") || l.contains("bpf") => {
                        Err(format!("eBPF did not start: {}", l.trim()))
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => Err(format!(
                "eBPF unavailable: {}",
                format!("{e:#}").lines().last().unwrap_or("")
            )),
        }
    }
}

/// Picks a free port, spawns `make(port)` with its output in <dir>/<name>.log, and waits until
/// the port accepts; a new port on each of 4 attempts (loopback ports sometimes collide).
fn spawn_listening(
    name: &str,
    dir: &Path,
    make: impl Fn(u16) -> Result<Command>,
) -> Result<Server> {
    let log = dir.join(format!("{name}.log"));
    let mut last = String::new();
    for _ in 0..4 {
        let port = free_port(None)?;
        let mut cmd = make(port)?;
        let file = std::fs::File::create(&log)?;
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        let mut server = Server {
            port,
            log: log.clone(),
            child,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = server.child.try_wait() {
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        server.stop();
        last = tail(&log, 20);
    }
    bail!("{name} did not start listening; its log:\n{last}")
}
