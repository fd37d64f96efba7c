//! The pgbench workloads, and one measured run of one workload against one target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::json::Run;
use super::sys;
use super::targets::{Env, MAX_CLIENT_CONN, Target};

pub struct Workload {
    pub name: &'static str,
    pub title: String,
    pub clients: u32,
    pub threads: u32,
    /// pgbench arguments that select the script and protocol.
    pub args: Vec<&'static str>,
    /// One pgbench thread per client (prepared mode: see shared/docs/platform.md).
    pub thread_per_client: bool,
}

fn workload(name: &'static str, what: &str, clients: u32, args: &[&'static str]) -> Workload {
    Workload {
        name,
        title: format!("{what}, {clients} clients, 8 threads"),
        clients,
        threads: 8,
        args: args.to_vec(),
        thread_per_client: false,
    }
}

/// The workloads of a run: the list, or the quick subset; `prepared` adds -M prepared.
pub fn catalogue(quick: bool, prepared: bool, notes: &mut Vec<String>) -> Vec<Workload> {
    let mut out = vec![workload(
        "select-500",
        "select-only (-S), simple protocol",
        500,
        &["-S"],
    )];
    if !quick {
        out.push(workload(
            "select-extended-500",
            "select-only (-S), extended protocol (-M extended)",
            500,
            &["-S", "-M", "extended"],
        ));
    }
    out.push(workload(
        "tpcb-500",
        "TPC-B-like, simple protocol",
        500,
        &[],
    ));
    if !quick {
        out.push(workload(
            "select-50",
            "select-only (-S), simple protocol",
            50,
            &["-S"],
        ));
        out.push(workload(
            "select-1000",
            "select-only (-S), simple protocol",
            1000,
            &["-S"],
        ));
    }
    let clients = if quick { 100 } else { 500 };
    if prepared || !quick {
        out.push(Workload {
            name: "select-prepared",
            title: format!(
                "select-only (-S), prepared (-M prepared), {clients} clients, one thread per client \
                 (fewer threads deadlock through a transaction pooler)"
            ),
            clients,
            threads: clients,
            args: vec!["-S", "-M", "prepared"],
            thread_per_client: true,
        });
    } else {
        notes.push(
            "select-prepared (-M prepared, -j = -c) not in --quick (--prepared adds it)".into(),
        );
    }
    out
}

/// direct-50, direct at the workload's client count, PgBouncer, and our variants.
pub fn targets_for(wl: &Workload, env: &Env) -> Vec<Target> {
    let mut out = vec![Target::Direct(50)];
    if wl.clients != 50 {
        out.push(Target::Direct(wl.clients));
    }
    if wl.thread_per_client {
        // Prepared mode: PgBouncer only where it has max_prepared_statements (1.21+), and
        // our default configuration alone (500 pgbench threads make each run heavy).
        if env.pgbouncer_prepared {
            out.push(Target::PgBouncer);
        }
        out.extend(env.variants().into_iter().take(1).map(Target::Us));
        return out;
    }
    out.push(Target::PgBouncer);
    out.extend(env.variants().into_iter().map(Target::Us));
    out
}

/// What every run shares.
pub struct Bench<'a> {
    pub env: &'a Env,
    pub data_dir: PathBuf,
    pub duration_s: u32,
    /// pgbench --sampling-rate for select-only workloads (TPC-B logs every transaction).
    pub sampling: f64,
}

impl Bench<'_> {
    /// Starts the target's pooler, runs pgbench, measures, stops the pooler.
    pub fn run_once(&self, wl: &Workload, target: &Target, round: u32) -> Result<Run> {
        let postmaster = sys::postmaster_pid(&self.data_dir)?;
        let (_, pg_children_before) = sys::postgres_cpu_us(postmaster);
        let mut server = self.env.start(target, MAX_CLIENT_CONN)?;
        let port = server.as_ref().map_or(self.env.pg_port, |s| s.port);
        let clients = match target {
            Target::Direct(n) => *n,
            _ => wl.clients,
        };
        let threads = if wl.thread_per_client {
            clients
        } else {
            wl.threads.min(clients)
        };
        let dir = self
            .env
            .work
            .join(format!("{}-{}-{round}", wl.name, target.name()));
        std::fs::create_dir_all(&dir)?;
        let sampling = if wl.args.contains(&"-S") {
            self.sampling
        } else {
            1.0
        };
        std::thread::sleep(Duration::from_millis(300));

        let pooler_before = server
            .as_ref()
            .and_then(|s| sys::process_cpu_split_us(s.pid()));
        let (pg_before, _) = sys::postgres_cpu_us(postmaster);
        let (busy_before, total_before) = sys::machine_cpu_us();
        let mut cmd = pgbench_command(port);
        cmd.args(["-n", "-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(["-T", &self.duration_s.to_string()])
            .args(&wl.args)
            .arg("-l")
            .arg(format!("--log-prefix={}", dir.join("txn").display()))
            .arg(format!("--sampling-rate={sampling}"))
            .arg("postgres")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout"))?)
            .stderr(std::fs::File::create(dir.join("stderr"))?);
        let child = cmd.spawn().context("cannot start pgbench")?;
        let limit = Duration::from_secs(u64::from(self.duration_s) + 60 + u64::from(clients) / 10);
        let ended = sys::wait_with_deadline(child, limit)?;
        let (busy_after, total_after) = sys::machine_cpu_us();
        let (pg_after, _) = sys::postgres_cpu_us(postmaster);
        let pooler_after = server
            .as_ref()
            .and_then(|s| sys::process_cpu_split_us(s.pid()));
        let hwm = server
            .as_ref()
            .and_then(|s| sys::status_kb(s.pid(), "VmHWM"));
        let mut died = None;
        if let Some(s) = server.as_mut() {
            // A pooler that died during the run is a zombie now: its CPU figures are void.
            let alive = std::fs::read_to_string(format!("/proc/{}/stat", s.pid()))
                .is_ok_and(|t| !t.contains(") Z"));
            if !alive {
                died = Some(crate::tail(&s.log, 20));
            }
            s.stop();
        }
        drop(server);
        wait_pg_quiet(postmaster, pg_children_before);

        let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
        let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        if let Some(log) = died {
            bail!("{} died during the run; its log:\n{log}", target.name());
        }
        let transactions =
            field(&stdout, "number of transactions actually processed:").map_or(0.0, |v| v) as u64;
        if transactions == 0 {
            bail!(
                "pgbench processed no transaction (exit {:?}{}):\n{}{}",
                ended.code,
                if ended.timed_out {
                    ", killed at its deadline"
                } else {
                    ""
                },
                crate::tail(&dir.join("stdout"), 10),
                crate::tail(&dir.join("stderr"), 10)
            );
        }
        let (lat_mean_ms, lat_p99_ms, lat_samples) = latencies(&dir)?;
        let txn = transactions as f64;
        let window = (total_after - total_before).max(1.0);
        let (pooler_cpu, pooler_sys) = match (pooler_before, pooler_after) {
            (Some(a), Some(b)) => (Some(b.0 - a.0 + b.1 - a.1), Some(b.1 - a.1)),
            _ => (None, None),
        };
        let accounted = pooler_cpu.unwrap_or(0.0) + (pg_after - pg_before) + ended.cpu_us;
        let run = Run {
            round,
            tps: field(&stdout, "tps =").unwrap_or(0.0),
            transactions,
            failed: field(&stdout, "number of failed transactions:").map_or(0, |v| v as u64),
            aborted_clients: stderr
                .lines()
                .filter(|l| l.contains("client ") && l.contains(" aborted"))
                .count() as u64,
            ok: ended.code == Some(0) && !ended.timed_out,
            lat_mean_ms,
            lat_p99_ms,
            lat_samples,
            pooler_cpu_us_per_txn: pooler_cpu.map(|c| c / txn),
            pooler_sys_pct: pooler_cpu
                .zip(pooler_sys)
                .and_then(|(c, s)| (c > 0.0).then(|| s / c * 100.0)),
            pooler_peak_rss_kb: hwm,
            pg_cpu_us_per_txn: (pg_after - pg_before) / txn,
            pgbench_cpu_us_per_txn: ended.cpu_us / txn,
            foreign_cpu_pct: ((busy_after - busy_before - accounted) / window * 100.0).max(0.0),
            wall_s: ended.wall.as_secs_f64(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        Ok(run)
    }
}

/// pgbench against 127.0.0.1:port as postgres, without the caller's PG* environment.
pub fn pgbench_command(port: u16) -> Command {
    let mut cmd = Command::new("pgbench");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"]);
    cmd
}

/// The number after `label` on pgbench's summary line.
fn field(text: &str, label: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Mean and p99 latency (ms) and sample count from pgbench's per-transaction logs
/// (`client_id transaction_no time_us script_no epoch epoch_us`; failed transactions say "failed").
fn latencies(dir: &Path) -> Result<(f64, f64, u64)> {
    let mut samples: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with("txn.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())?;
        samples.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    if samples.is_empty() {
        return Ok((0.0, 0.0, 0));
    }
    samples.sort_unstable();
    let n = samples.len();
    let mean = samples.iter().sum::<u64>() as f64 / n as f64;
    let p99 = samples[((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1];
    Ok((mean / 1000.0, p99 as f64 / 1000.0, n as u64))
}

/// Waits (up to 5 s) until the server connections of the stopped pooler have left PostgreSQL.
fn wait_pg_quiet(postmaster: u32, children: usize) {
    for _ in 0..100 {
        if sys::postgres_cpu_us(postmaster).1 <= children {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
