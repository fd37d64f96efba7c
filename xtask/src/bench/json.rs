//! The results file (target/bench/<timestamp>.json): what a run measured, to compare two runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Format version of the results file.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct BenchFile {
    pub version: u32,
    pub timestamp: String,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub workloads: Vec<WorkloadResult>,
    pub idle: Option<IdleResult>,
    pub profile: Option<ProfileResult>,
    /// Skipped targets and workloads, and why.
    pub notes: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres: String,
    pub pgbench: String,
    pub pgbouncer: String,
    pub pooler_commit: String,
    /// The io_backend that `auto` resolved to, and the worker count of `workers = 0`.
    pub pooler_backend: String,
    pub pooler_workers: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Settings {
    pub quick: bool,
    pub rounds: u32,
    pub duration_s: u32,
    pub scale: u32,
    pub pool_size: u32,
    pub reserve_pool_size: u32,
    pub idle_clients: u32,
}

/// One pgbench run against one target.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Run {
    pub round: u32,
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    pub aborted_clients: u64,
    /// pgbench exited 0 within its deadline.
    pub ok: bool,
    pub lat_mean_ms: f64,
    pub lat_p99_ms: f64,
    pub lat_samples: u64,
    pub pooler_cpu_us_per_txn: Option<f64>,
    /// Share of the pooler's CPU spent in the kernel (stime / (utime + stime)), %.
    #[serde(default)]
    pub pooler_sys_pct: Option<f64>,
    pub pooler_peak_rss_kb: Option<u64>,
    pub pg_cpu_us_per_txn: f64,
    pub pgbench_cpu_us_per_txn: f64,
    /// CPU used by everything else on the machine during the run, % of all cores.
    pub foreign_cpu_pct: f64,
    pub wall_s: f64,
}

/// Median and range of one figure over the rounds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct TargetResult {
    pub name: String,
    pub description: String,
    pub runs: Vec<Run>,
    pub tps: Option<Stat>,
    pub lat_mean_ms: Option<Stat>,
    pub lat_p99_ms: Option<Stat>,
    pub failed_total: u64,
    pub pooler_cpu_us_per_txn: Option<Stat>,
    #[serde(default)]
    pub pooler_sys_pct: Option<Stat>,
    pub pg_cpu_us_per_txn: Option<Stat>,
    pub pooler_peak_rss_kb: Option<u64>,
    pub foreign_cpu_pct: Option<Stat>,
    /// Per-round ratios against the same round's PgBouncer and direct-50 runs.
    pub tps_vs_pgbouncer: Option<Stat>,
    pub tps_vs_direct50: Option<Stat>,
    pub cpu_vs_pgbouncer: Option<Stat>,
    pub p99_vs_pgbouncer: Option<Stat>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct WorkloadResult {
    pub name: String,
    pub title: String,
    pub clients: u32,
    pub threads: u32,
    pub args: Vec<String>,
    pub duration_s: u32,
    pub rounds: u32,
    pub targets: Vec<TargetResult>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct IdleTarget {
    pub name: String,
    pub connected: u32,
    pub rss_idle_kb: u64,
    pub rss_loaded_kb: u64,
    pub bytes_per_client: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct IdleResult {
    pub clients: u32,
    pub targets: Vec<IdleTarget>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct ProfileResult {
    /// "perf" or "callgrind".
    pub tool: String,
    pub event: String,
    pub workload: String,
    pub files: Vec<String>,
    /// (self %, function), highest first.
    pub top: Vec<(f64, String)>,
    /// Where the time goes, by category: (label, % of the pooler's samples).
    pub breakdown: Vec<(String, f64)>,
    pub notes: Vec<String>,
}

/// target/bench (honours CARGO_TARGET_DIR).
pub fn bench_dir() -> PathBuf {
    let release = crate::release_pooler();
    release
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| crate::workspace_root().join("target/bench"))
}

pub fn save(file: &BenchFile, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(file)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

pub fn load(path: &Path) -> Result<BenchFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}
