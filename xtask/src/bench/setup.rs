//! Set-up on a fresh machine: Debian packages, the tuned temporary PostgreSQL, pgbench -i, and
//! the description of the machine recorded with the results.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::json::Machine;
use super::sys;
use super::workloads::pgbench_command;
use crate::pg::{self, Cluster};
use crate::{in_path, is_root, run_cmd};

pub const SCALE: u32 = 10;

pub fn install_missing() -> Result<PathBuf> {
    let mut missing = Vec::new();
    if !pg::bin_dir().join("initdb").is_file() {
        missing.push("postgresql-15");
    }
    if !in_path("pgbench") {
        missing.push("postgresql-client-15");
    }
    let pgbouncer = PathBuf::from("/usr/sbin/pgbouncer");
    if !pgbouncer.is_file() && !in_path("pgbouncer") {
        missing.push("pgbouncer");
    }
    if !missing.is_empty() {
        crate::apt_install(&missing)?;
    }
    Ok(if pgbouncer.is_file() {
        pgbouncer
    } else {
        PathBuf::from("pgbouncer")
    })
}

/// Runs a command as the owner of the cluster's data directory (initdb's user).
fn as_cluster_owner(cluster: &Cluster, program: PathBuf) -> Command {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    if let Ok(m) = std::fs::metadata(&cluster.data_dir)
        && is_root()
    {
        cmd.uid(m.uid()).gid(m.gid());
    }
    cmd.current_dir(&cluster.root).env("HOME", &cluster.root);
    cmd
}

/// shared_buffers 256MB and no checkpoint during a run (fsync and synchronous_commit are already
/// off in pg.rs), then a restart; pgbench -i -s 10; a short warm-up.
pub fn prepare_cluster(cluster: &Cluster, quick: bool) -> Result<()> {
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(cluster.data_dir.join("postgresql.conf"))?;
    use std::io::Write;
    writeln!(
        conf,
        "# cargo xtask bench\nshared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 30min"
    )?;
    println!("== restarting PostgreSQL with shared_buffers = 256MB");
    run_cmd(
        as_cluster_owner(cluster, pg::bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(&cluster.data_dir)
            .arg("-l")
            .arg(cluster.log_path())
            .args(["-w", "-t", "60", "-m", "fast", "restart"])
            .stdout(std::process::Stdio::null()),
    )?;
    println!("== pgbench -i -s {SCALE}");
    run_cmd(pgbench_command(cluster.port).args([
        "-i",
        "-q",
        "-s",
        &SCALE.to_string(),
        "postgres",
    ]))?;
    let secs = if quick { "2" } else { "5" };
    run_cmd(
        pgbench_command(cluster.port)
            .args(["-n", "-S", "-c", "8", "-j", "2", "-T", secs, "postgres"])
            .stdout(std::process::Stdio::null()),
    )
}

pub fn machine(cluster_bin: &Path, pgbouncer: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(crate::workspace_root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_string())
            })
            .unwrap_or_default(),
        memory_gib: (mem_kb / 1048576.0 * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into(),
        postgres: sys::first_line_of(
            &cluster_bin.join("postgres").to_string_lossy(),
            &["--version"],
        ),
        pgbench: sys::first_line_of("pgbench", &["--version"]),
        pgbouncer: sys::first_line_of(&pgbouncer.to_string_lossy(), &["--version"]),
        pooler_commit: format!("{}{dirty}", git(&["rev-parse", "--short", "HEAD"])),
        pooler_backend: String::new(),
        pooler_workers: 0,
    }
}
