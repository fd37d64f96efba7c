//! `--profile`: where the pooler's time goes under select-only load. perf record with call graphs
//! where perf can sample (hardware cycles, else the cpu-clock software event on VMs without a
//! PMU), else valgrind --tool=callgrind on a shorter, lighter run; a flame graph SVG when inferno
//! is (or can be `cargo install`ed) available; the top 20 functions printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::json::ProfileResult;
use super::sys;
use super::targets::{Env, Variant};
use super::workloads::pgbench_command;
use crate::{in_path, is_root, run_cmd};

enum Tool {
    Perf { event: &'static str },
    Callgrind,
}

fn perf_counts(event: &str) -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", event, "true"])
        .stdout(Stdio::null())
        .output()
        .is_ok_and(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            o.status.success() && !err.contains("not supported") && !err.contains("not counted")
        })
}

fn choose(notes: &mut Vec<String>) -> Result<Tool> {
    let forced = std::env::var("XTASK_BENCH_PROFILER").unwrap_or_default();
    if forced != "callgrind" {
        if !in_path("perf") && is_root() {
            println!("== installing linux-perf");
            let _ = crate::apt_install(&["linux-perf"]);
        }
        if in_path("perf") {
            if perf_counts("instructions") {
                return Ok(Tool::Perf { event: "cycles" });
            }
            if perf_counts("cpu-clock") {
                notes.push(
                    "no hardware counters here (perf stat -e instructions: not supported): \
                     perf samples the cpu-clock software event instead"
                        .into(),
                );
                return Ok(Tool::Perf { event: "cpu-clock" });
            }
        }
        notes.push("perf cannot sample here: valgrind --tool=callgrind instead".into());
    }
    if !in_path("valgrind") && is_root() {
        crate::apt_install(&["valgrind"])?;
    }
    Ok(Tool::Callgrind)
}

/// Profiles our pooler (default settings) under select-only load; files under `out_dir`.
pub fn run(env: &Env, out_dir: &Path, stamp: &str, quick: bool) -> Result<ProfileResult> {
    let mut notes = Vec::new();
    let tool = choose(&mut notes)?;
    std::fs::create_dir_all(out_dir)?;
    let base = env
        .variants()
        .into_iter()
        .next()
        .context("no pooler variant")?;
    let result = match tool {
        Tool::Perf { event } => perf(env, &base, out_dir, stamp, quick, event, notes)?,
        Tool::Callgrind => {
            // valgrind runs one thread at a time and does not treat io_uring_enter as a blocking
            // call: a worker waiting in it stalls the others. epoll and one worker run fine.
            let v = Variant {
                name: "us-callgrind",
                io_backend: Some("epoll"),
                workers: Some(1),
                ..base
            };
            notes.push("under valgrind: io_backend = epoll, workers = 1 (io_uring_enter stalls valgrind's threads)".into());
            callgrind(env, &v, out_dir, stamp, notes)?
        }
    };
    println!(
        "\n== profile ({}, {}): top {} functions by self time",
        result.tool,
        result.workload,
        result.top.len()
    );
    for (pct, name) in &result.top {
        let short: String = name.chars().take(150).collect();
        println!("{pct:6.2}%  {short}");
    }
    for (label, pct) in &result.breakdown {
        println!("   {pct:6.2}%  {label}");
    }
    for f in &result.files {
        println!("   {f}");
    }
    Ok(result)
}

fn load(port: u16, clients: u32, threads: u32, secs: u32) -> Result<std::process::Child> {
    let mut cmd = pgbench_command(port);
    cmd.args([
        "-n",
        "-S",
        "-c",
        &clients.to_string(),
        "-j",
        &threads.to_string(),
    ])
    .args(["-T", &secs.to_string(), "postgres"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd.spawn().context("cannot start pgbench")
}

fn perf(
    env: &Env,
    v: &Variant,
    out_dir: &Path,
    stamp: &str,
    quick: bool,
    event: &str,
    notes: Vec<String>,
) -> Result<ProfileResult> {
    let (secs, sample) = if quick { (10, 5) } else { (25, 15) };
    let mut server = env.start_us(v, 1000)?;
    let pgbench = load(server.port, 500, 8, secs)?;
    std::thread::sleep(Duration::from_secs(4));
    let data = out_dir.join(format!("{stamp}-perf.data"));
    println!("== perf record -e {event} --call-graph dwarf on the pooler for {sample} s");
    run_cmd(
        Command::new("perf")
            .args([
                "record",
                "-q",
                "-e",
                event,
                "-F",
                "999",
                "--call-graph",
                "dwarf,16384",
            ])
            .arg("-p")
            .arg(server.pid().to_string())
            .arg("-o")
            .arg(&data)
            .args(["--", "sleep", &sample.to_string()])
            .stdout(Stdio::null()),
    )?;
    let ended = sys::wait_with_deadline(pgbench, Duration::from_secs(secs as u64 + 120))?;
    server.stop();
    if ended.code != Some(0) {
        bail!("pgbench failed under the profiler (exit {:?})", ended.code);
    }
    let report = |children: bool, file: &PathBuf| -> Result<String> {
        let out = Command::new("perf")
            .arg("report")
            .arg("-i")
            .arg(&data)
            .args([
                "--stdio",
                "--sort",
                "symbol",
                "-g",
                "none",
                "--percent-limit",
            ])
            .arg(if children { "0.2" } else { "0.01" })
            .arg(if children {
                "--children"
            } else {
                "--no-children"
            })
            .output()
            .context("perf report")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        std::fs::write(file, &text)?;
        Ok(text)
    };
    let self_file = out_dir.join(format!("{stamp}-perf-self.txt"));
    let children_file = out_dir.join(format!("{stamp}-perf-children.txt"));
    let text = report(false, &self_file)?;
    let entries = perf_entries(&text);
    let children = perf_entries(&report(true, &children_file)?);
    let top = entries.iter().take(20).cloned().collect();
    let sum = |f: &dyn Fn(&str) -> bool| -> f64 {
        entries.iter().filter(|(_, n)| f(n)).map(|(p, _)| p).sum()
    };
    let mut breakdown = vec![
        (
            "kernel (self, all [k] symbols)".to_string(),
            sum(&|n| n.starts_with("[k]")),
        ),
        (
            "user space (self, all [.] symbols)".to_string(),
            sum(&|n| n.starts_with("[.]")),
        ),
        (
            "malloc/free/realloc (self)".to_string(),
            sum(&|n| {
                let n = n.trim_start_matches("[.] ");
                [
                    "malloc",
                    "_int_malloc",
                    "free",
                    "_int_free",
                    "cfree",
                    "realloc",
                    "_int_realloc",
                ]
                .contains(&n)
                    || n.starts_with("malloc_")
                    || n.starts_with("__libc_")
            }),
        ),
        (
            "memcpy/memmove (self)".to_string(),
            sum(&|n| n.contains("memmove") || n.contains("memcpy")),
        ),
    ];
    for (label, symbol) in [
        ("io_uring_enter, inclusive", "[k] __do_sys_io_uring_enter"),
        ("epoll_wait, inclusive", "[k] __x64_sys_epoll_wait"),
        (
            "tcp_sendmsg (incl. loopback delivery), inclusive",
            "[k] tcp_sendmsg",
        ),
        ("tcp_recvmsg, inclusive", "[k] tcp_recvmsg"),
        (
            "Session::poll, inclusive",
            "[.] pooler::client::session::Session::poll",
        ),
    ] {
        if let Some((pct, _)) = children.iter().find(|(_, n)| n == symbol) {
            breakdown.push((label.to_string(), *pct));
        }
    }
    let mut result = ProfileResult {
        tool: "perf".into(),
        event: event.into(),
        workload: format!("select-only, 500 clients, 8 threads, {sample} s sampled"),
        files: vec![
            data.display().to_string(),
            self_file.display().to_string(),
            children_file.display().to_string(),
        ],
        top,
        breakdown,
        notes,
    };
    match flamegraph(&data, out_dir, stamp) {
        Ok(svg) => result.files.push(svg.display().to_string()),
        Err(e) => result.notes.push(format!("no flame graph: {e:#}")),
    }
    Ok(result)
}

/// (%, "[k] symbol") from `perf report --stdio` lines; with --children the first column (the
/// inclusive %) is kept.
fn perf_entries(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            let rest = rest.trim_start();
            let rest = match rest.split_once('%') {
                Some((self_pct, tail)) if self_pct.trim().parse::<f64>().is_ok() => {
                    tail.trim_start()
                }
                _ => rest,
            };
            // The symbol ends where perf pads its column (two or more spaces).
            let name = rest.split("  ").next()?.trim();
            Some((pct.trim().parse().ok()?, name.to_string()))
        })
        .collect()
}

/// inferno's two programs, from PATH or ~/.cargo/bin, `cargo install`ed when missing.
fn inferno() -> Result<(PathBuf, PathBuf)> {
    let find = |name: &str| -> Option<PathBuf> {
        if in_path(name) {
            return Some(PathBuf::from(name));
        }
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let p = home.join("bin").join(name);
        p.is_file().then_some(p)
    };
    if find("inferno-flamegraph").is_none() {
        println!("== cargo install inferno (flame graphs; once)");
        run_cmd(crate::cargo().args(["install", "--locked", "--quiet", "inferno"]))?;
    }
    Ok((
        find("inferno-collapse-perf").context("inferno-collapse-perf not found")?,
        find("inferno-flamegraph").context("inferno-flamegraph not found")?,
    ))
}

fn flamegraph(data: &Path, out_dir: &Path, stamp: &str) -> Result<PathBuf> {
    let (collapse, flame) = inferno()?;
    let script = out_dir.join(format!("{stamp}-perf.script"));
    run_cmd(
        Command::new("perf")
            .args(["script", "--no-inline", "-i"])
            .arg(data)
            .stdout(std::fs::File::create(&script)?)
            .stderr(Stdio::null()),
    )?;
    let folded = out_dir.join(format!("{stamp}-perf.folded"));
    run_cmd(
        Command::new(collapse)
            .arg(&script)
            .stdout(std::fs::File::create(&folded)?),
    )?;
    let _ = std::fs::remove_file(&script);
    let svg = out_dir.join(format!("{stamp}-flamegraph.svg"));
    run_cmd(
        Command::new(flame)
            .args(["--title", "pooler, select-only 500 clients"])
            .arg(&folded)
            .stdout(std::fs::File::create(&svg)?),
    )?;
    Ok(svg)
}

fn callgrind(
    env: &Env,
    v: &Variant,
    out_dir: &Path,
    stamp: &str,
    notes: Vec<String>,
) -> Result<ProfileResult> {
    let out = out_dir.join(format!("{stamp}-callgrind.out"));
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let mut server = env.start_us_wrapped(v, 1000, &wrapper)?;
    println!("== callgrind: pgbench -S -c 50 -j 4 -T 15 through the pooler under valgrind");
    let pgbench = load(server.port, 50, 4, 15)?;
    let ended = sys::wait_with_deadline(pgbench, Duration::from_secs(200))?;
    server.stop();
    if ended.code != Some(0) {
        bail!("pgbench failed under callgrind (exit {:?})", ended.code);
    }
    let annotated = Command::new("callgrind_annotate")
        .arg(&out)
        .output()
        .context("callgrind_annotate")?;
    let text = String::from_utf8_lossy(&annotated.stdout).into_owned();
    let report = out_dir.join(format!("{stamp}-callgrind.txt"));
    std::fs::write(&report, &text)?;
    // Lines like "12,345,678 (12.34%)  file:function [object]".
    let top = text
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" (")?;
            let (pct, name) = rest.split_once("%)")?;
            Some((pct.trim().parse().ok()?, name.trim().to_string()))
        })
        .filter(|(_, n): &(f64, String)| !n.is_empty() && !n.starts_with("PROGRAM TOTALS"))
        .take(20)
        .collect();
    Ok(ProfileResult {
        tool: "callgrind".into(),
        event: "Ir (instructions)".into(),
        workload: "select-only, 50 clients, 4 threads, 15 s under valgrind (epoll, 1 worker)"
            .into(),
        files: vec![out.display().to_string(), report.display().to_string()],
        top,
        breakdown: Vec::new(),
        notes,
    })
}
