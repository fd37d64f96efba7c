//! cargo xtask bench: our pooler side by side with PgBouncer and direct PostgreSQL, interleaved
//! rounds, one table per workload, results as JSON under target/bench/ (see USAGE in main.rs).

mod idle;
mod json;
mod profile;
mod report;
mod setup;
mod sys;
mod targets;
mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pg::{self, Cluster};
use crate::{build_release_pooler, is_root, make_temp_dir};
use json::{BenchFile, Settings, TargetResult, WorkloadResult};
use setup::SCALE;
use targets::{Env, Target};
use workloads::Bench;

struct Options {
    quick: bool,
    profile: bool,
    prepared: bool,
    compare: Option<(PathBuf, PathBuf)>,
    report: Option<PathBuf>,
    filter: Vec<String>,
    rounds: u32,
    duration_s: u32,
    idle_clients: u32,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        quick: args.iter().any(|a| a == "--quick"),
        profile: false,
        prepared: false,
        compare: None,
        report: None,
        filter: Vec::new(),
        rounds: 3,
        duration_s: 15,
        idle_clients: 10_000,
    };
    if o.quick {
        (o.rounds, o.duration_s, o.idle_clients) = (1, 5, 1000);
    }
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<u32> {
        v.and_then(|v| v.parse().ok())
            .with_context(|| format!("{what} takes a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {}
            "--profile" => o.profile = true,
            "--prepared" => o.prepared = true,
            "--compare" => {
                let (Some(a), Some(b)) = (it.next(), it.next()) else {
                    bail!("--compare takes two JSON files");
                };
                o.compare = Some((a.into(), b.into()));
            }
            "--report" => o.report = Some(it.next().context("--report takes a JSON file")?.into()),
            "--filter" => o.filter.extend(
                it.next()
                    .context("--filter takes a workload name")?
                    .split(',')
                    .map(String::from),
            ),
            "--rounds" => o.rounds = number(it.next(), "--rounds")?.max(1),
            "--duration" => o.duration_s = number(it.next(), "--duration")?.max(1),
            "--idle-clients" => o.idle_clients = number(it.next(), "--idle-clients")?,
            other => bail!("xtask bench: unknown argument {other:?} (see cargo xtask help)"),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<bool> {
    let o = parse(args)?;
    if let Some((a, b)) = &o.compare {
        report::compare(&json::load(a)?, &json::load(b)?);
        return Ok(true);
    }
    if let Some(path) = &o.report {
        let mut file = json::load(path)?;
        println!(
            "{} ({}), {}",
            file.timestamp, file.command, file.machine.cpu_model
        );
        for wl in &mut file.workloads {
            report::summarize(wl);
            report::print_table(wl);
        }
        print!(
            "{}",
            report::markdown(&BenchFile {
                workloads: Vec::new(),
                ..file.clone()
            })
        );
        println!(
            "\n== against the targets of the issue (select-only at 500 clients unless stated)"
        );
        for line in report::verdict(&file) {
            println!("{line}");
        }
        return Ok(true);
    }
    let started = Instant::now();
    let (iso, stamp) = sys::utc_now();
    let out_dir = json::bench_dir();
    let json_path = out_dir.join(format!("{stamp}.json"));
    let pgbouncer = setup::install_missing()?;
    let nofile = sys::raise_fd_limit(65_536);
    if u64::from(o.idle_clients) + 200 > nofile {
        println!("note: open-files limit {nofile}: the idle test may not reach its client count");
    }
    let pooler_bin = build_release_pooler()?;
    let cluster = Cluster::start(1200)?;
    println!(
        "== PostgreSQL 15 on 127.0.0.1:{} ({})",
        cluster.port,
        cluster.root.display()
    );
    setup::prepare_cluster(&cluster, o.quick)?;
    let work = make_temp_dir("xtask-bench")?;
    let result = (|| -> Result<bool> {
        let mut file = BenchFile {
            version: json::VERSION,
            timestamp: iso,
            command: format!("cargo xtask bench {}", args.join(" "))
                .trim()
                .into(),
            machine: setup::machine(&pg::bin_dir(), &pgbouncer),
            settings: Settings {
                quick: o.quick,
                rounds: o.rounds,
                duration_s: o.duration_s,
                scale: SCALE,
                pool_size: targets::POOL_SIZE,
                reserve_pool_size: targets::RESERVE_POOL_SIZE,
                idle_clients: o.idle_clients,
            },
            ..BenchFile::default()
        };
        let mut env = Env {
            pooler_bin,
            pgbouncer_bin: pgbouncer.clone(),
            pg_port: cluster.port,
            work: work.clone(),
            run_as: if is_root() {
                sys::account("postgres")
            } else {
                None
            },
            ebpf: Err(String::new()),
            backend: String::new(),
            workers: 0,
            pgbouncer_prepared: false,
        };
        env.pgbouncer_prepared = pgbouncer_has_prepared(&file.machine.pgbouncer);
        if !env.pgbouncer_prepared {
            file.notes.push(format!(
                "select-prepared: {} has no max_prepared_statements (PgBouncer 1.21+): not run \
                 against it",
                file.machine.pgbouncer
            ));
        }
        probe_pooler(&mut env, &mut file)?;
        let mut failed_runs = Vec::new();
        if o.profile {
            file.profile = Some(profile::run(&env, &out_dir, &stamp, o.quick)?);
        } else {
            failed_runs = run_workloads(&o, &env, &cluster, &mut file, &json_path)?;
            let idle_wanted = o.filter.is_empty() || o.filter.iter().any(|f| f == "idle");
            if o.idle_clients > 0 && idle_wanted {
                println!(
                    "\n== idle memory: {} idle authenticated clients",
                    o.idle_clients
                );
                let idle = idle::measure(&env, o.idle_clients, &mut file.notes);
                file.idle = Some(idle);
            }
        }
        json::save(&file, &json_path)?;
        let md = json_path.with_extension("md");
        if !o.profile {
            std::fs::write(&md, report::markdown(&file))?;
        }
        if !o.profile {
            println!(
                "\n== against the targets of the issue (select-only at 500 clients unless stated)"
            );
            for line in report::verdict(&file) {
                println!("{line}");
            }
        }
        for note in &file.notes {
            println!("note: {note}");
        }
        println!("\nresults: {}", json_path.display());
        if !o.profile {
            println!("tables:  {}", md.display());
        }
        println!("({:.0} s)", started.elapsed().as_secs_f64());
        let mut broken = failed_runs;
        broken.extend(broken_runs(&file));
        for b in &broken {
            eprintln!("xtask bench: {b}");
        }
        Ok(broken.is_empty())
    })();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Starts our pooler once: fails early if it does not start, learns what `auto` and `workers = 0`
/// resolve to, and whether the `ebpf` variant can run.
fn probe_pooler(env: &mut Env, file: &mut BenchFile) -> Result<()> {
    let base = env.variants().remove(0);
    let mut server = env.start_us(&base, 100)?;
    std::thread::sleep(Duration::from_millis(300));
    drop(idle::login(server.port).context("log in through the pooler")?);
    server.stop();
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    // "pooler 0.1.0 starting: 2 workers, io_uring backend"
    if let Some(line) = log.lines().find(|l| l.contains(" starting: ")) {
        let words: Vec<&str> = line
            .rsplit(" starting: ")
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        env.workers = words.first().and_then(|w| w.parse().ok()).unwrap_or(0);
        env.backend = words
            .get(2)
            .unwrap_or(&"?")
            .trim_end_matches(',')
            .to_string();
    }
    env.ebpf = env.probe_ebpf();
    if let Err(why) = &env.ebpf {
        file.notes.push(format!("us-ebpf variant skipped: {why}"));
        println!("note: us-ebpf variant skipped: {why}");
    }
    file.machine.pooler_backend = env.backend.clone();
    file.machine.pooler_workers = env.workers;
    println!(
        "== pooler: io_backend auto = {}, workers 0 = {}",
        env.backend, env.workers
    );
    Ok(())
}

fn run_workloads(
    o: &Options,
    env: &Env,
    cluster: &Cluster,
    file: &mut BenchFile,
    json_path: &std::path::Path,
) -> Result<Vec<String>> {
    let mut failed_runs = Vec::new();
    let bench = Bench {
        env,
        data_dir: cluster.data_dir.clone(),
        duration_s: o.duration_s,
        sampling: if o.quick { 1.0 } else { 0.25 },
    };
    let all = workloads::catalogue(o.quick, o.prepared, &mut file.notes);
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|w| o.filter.is_empty() || o.filter.iter().any(|f| w.name.contains(f.as_str())))
        .collect();
    for wl in &chosen {
        let targets = workloads::targets_for(wl, env);
        let mut result = WorkloadResult {
            name: wl.name.into(),
            title: wl.title.clone(),
            clients: wl.clients,
            threads: wl.threads,
            args: wl.args.iter().map(|a| a.to_string()).collect(),
            duration_s: o.duration_s,
            rounds: o.rounds,
            targets: targets
                .iter()
                .map(|t| TargetResult {
                    name: t.name(),
                    description: env.describe(t),
                    ..TargetResult::default()
                })
                .collect(),
        };
        println!("\n== {}: {}", wl.name, wl.title);
        for round in 1..=o.rounds {
            for (i, target) in targets.iter().enumerate() {
                let label = format!("[{} {round}/{}] {:<12}", wl.name, o.rounds, target.name());
                match bench.run_once(wl, target, round) {
                    Ok(run) => {
                        println!("{label} {}", run_line(&run, target));
                        result.targets[i].runs.push(run);
                    }
                    Err(e) => {
                        let msg = format!("{} round {round}, {}: {e:#}", wl.name, target.name());
                        eprintln!("{label} FAILED: {e:#}");
                        failed_runs.push(format!("run failed: {msg}"));
                        file.notes.push(msg);
                    }
                }
            }
        }
        report::summarize(&mut result);
        report::print_table(&result);
        file.workloads.push(result);
        json::save(file, json_path)?;
    }
    Ok(failed_runs)
}

fn run_line(r: &json::Run, target: &Target) -> String {
    let pooler = match (target, r.pooler_cpu_us_per_txn) {
        (Target::Direct(_), _) | (_, None) => String::new(),
        (_, Some(c)) => format!(
            ", pooler {c:.1} us/txn ({:.0}% sys), RSS {:.1} MB",
            r.pooler_sys_pct.unwrap_or(0.0),
            r.pooler_peak_rss_kb.unwrap_or(0) as f64 / 1024.0
        ),
    };
    format!(
        "{:>8.0} tps, mean {:.1} ms, p99 {:.1} ms, failed {}{}, PG {:.0} us/txn{pooler}, other CPU {:.0}%{}",
        r.tps,
        r.lat_mean_ms,
        r.lat_p99_ms,
        r.failed,
        if r.aborted_clients > 0 {
            format!(" ({} clients aborted)", r.aborted_clients)
        } else {
            String::new()
        },
        r.pg_cpu_us_per_txn,
        r.foreign_cpu_pct,
        if r.ok { "" } else { " [pgbench exit not 0]" }
    )
}

/// Runs of our pooler that lost transactions or clients: with runs that could not be
/// done at all, what makes the bench itself fail (for `cargo xtask test`). Slow figures
/// never do.
fn broken_runs(file: &BenchFile) -> Vec<String> {
    let mut out = Vec::new();
    for wl in &file.workloads {
        for t in wl.targets.iter().filter(|t| t.name.starts_with("us")) {
            for r in t
                .runs
                .iter()
                .filter(|r| !r.ok || r.failed > 0 || r.aborted_clients > 0)
            {
                out.push(format!(
                    "{} round {}, {}: {} failed transactions, {} aborted clients",
                    wl.name, r.round, t.name, r.failed, r.aborted_clients
                ));
            }
        }
    }
    out
}

/// Whether a `pgbouncer --version` line ("PgBouncer 1.18.0", ...) names 1.21 or later.
fn pgbouncer_has_prepared(version: &str) -> bool {
    let Some(v) = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 21)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pgbouncer_versions_with_prepared_statements() {
        assert!(!super::pgbouncer_has_prepared("PgBouncer 1.18.0"));
        assert!(super::pgbouncer_has_prepared("PgBouncer 1.21.0"));
        assert!(super::pgbouncer_has_prepared("PgBouncer 1.25.2"));
        assert!(!super::pgbouncer_has_prepared(""));
    }
}
