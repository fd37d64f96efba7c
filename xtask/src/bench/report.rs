//! Medians, per-round ratios, the per-workload tables, the verdict against the targets,
//! and `--compare`.

use super::json::{BenchFile, Run, Stat, TargetResult, WorkloadResult};

pub fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Per-round ratios `f(a) / f(b)` over the rounds both targets completed.
fn paired(a: &[Run], b: &[Run], f: impl Fn(&Run) -> Option<f64>) -> Option<Stat> {
    stat(a.iter().filter_map(|ra| {
        let rb = b.iter().find(|rb| rb.round == ra.round)?;
        let (x, y) = (f(ra)?, f(rb)?);
        (y > 0.0).then(|| x / y)
    }))
}

/// Fills every target's statistics and ratios from its runs.
pub fn summarize(wl: &mut WorkloadResult) {
    let pgb = wl.targets.iter().find(|t| t.name == "pgbouncer").cloned();
    let d50 = wl.targets.iter().find(|t| t.name == "direct-50").cloned();
    for t in &mut wl.targets {
        let runs = &t.runs;
        t.tps = stat(runs.iter().map(|r| r.tps));
        t.lat_mean_ms = stat(runs.iter().map(|r| r.lat_mean_ms));
        t.lat_p99_ms = stat(runs.iter().map(|r| r.lat_p99_ms));
        t.failed_total = runs.iter().map(|r| r.failed).sum();
        t.pooler_cpu_us_per_txn = stat(runs.iter().filter_map(|r| r.pooler_cpu_us_per_txn));
        t.pooler_sys_pct = stat(runs.iter().filter_map(|r| r.pooler_sys_pct));
        t.pg_cpu_us_per_txn = stat(runs.iter().map(|r| r.pg_cpu_us_per_txn));
        t.pooler_peak_rss_kb = runs.iter().filter_map(|r| r.pooler_peak_rss_kb).max();
        t.foreign_cpu_pct = stat(runs.iter().map(|r| r.foreign_cpu_pct));
        if let Some(p) = pgb.as_ref().filter(|p| p.name != t.name) {
            t.tps_vs_pgbouncer = paired(runs, &p.runs, |r| Some(r.tps));
            t.cpu_vs_pgbouncer = paired(runs, &p.runs, |r| r.pooler_cpu_us_per_txn);
            t.p99_vs_pgbouncer = paired(runs, &p.runs, |r| Some(r.lat_p99_ms));
        }
        if let Some(d) = d50.as_ref().filter(|d| d.name != t.name) {
            t.tps_vs_direct50 = paired(runs, &d.runs, |r| Some(r.tps));
        }
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn opt(s: Option<Stat>, f: impl Fn(f64) -> String) -> String {
    s.map_or("-".into(), |s| f(s.median))
}

fn ratio(s: Option<Stat>) -> String {
    opt(s, |m| format!("{m:.2}"))
}

const HEADER: [&str; 13] = [
    "target",
    "tps median [min-max]",
    "x PgB",
    "x d-50",
    "mean ms",
    "p99 ms",
    "p99 x PgB",
    "failed",
    "pooler us/txn",
    "CPU x PgB",
    "PG us/txn",
    "peak RSS",
    "other CPU",
];

fn row(t: &TargetResult) -> [String; 13] {
    let tps = t.tps.map_or("-".into(), |s| {
        format!(
            "{} [{}-{}]",
            thousands(s.median),
            thousands(s.min),
            thousands(s.max)
        )
    });
    let aborted: u64 = t.runs.iter().map(|r| r.aborted_clients).sum();
    let bad = t.runs.iter().filter(|r| !r.ok).count();
    let mut failed = t.failed_total.to_string();
    if aborted > 0 || bad > 0 {
        failed += &format!(" ({aborted} aborted, {bad} bad runs)");
    }
    [
        t.name.clone(),
        tps,
        ratio(t.tps_vs_pgbouncer),
        ratio(t.tps_vs_direct50),
        opt(t.lat_mean_ms, |m| format!("{m:.1}")),
        opt(t.lat_p99_ms, |m| format!("{m:.1}")),
        ratio(t.p99_vs_pgbouncer),
        failed,
        opt(t.pooler_cpu_us_per_txn, |m| {
            t.pooler_sys_pct.map_or(format!("{m:.1}"), |s| {
                format!("{m:.1} ({:.0}% sys)", s.median)
            })
        }),
        ratio(t.cpu_vs_pgbouncer),
        opt(t.pg_cpu_us_per_txn, |m| format!("{m:.0}")),
        t.pooler_peak_rss_kb
            .map_or("-".into(), |k| format!("{:.1} MB", k as f64 / 1024.0)),
        opt(t.foreign_cpu_pct, |m| format!("{m:.0}%")),
    ]
}

fn heading(wl: &WorkloadResult) -> String {
    let args = if wl.args.is_empty() {
        "(TPC-B-like)".to_string()
    } else {
        wl.args.join(" ")
    };
    format!(
        "{} ({}): pgbench {args} -c {} -j {} -T {} x {} rounds",
        wl.name, wl.title, wl.clients, wl.threads, wl.duration_s, wl.rounds
    )
}

/// The workload's table, aligned for a terminal.
pub fn print_table(wl: &WorkloadResult) {
    let rows: Vec<[String; 13]> = wl.targets.iter().map(row).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!("\n== {}", heading(wl));
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(HEADER.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Every workload as a Markdown table (written beside the JSON, pasted into the README).
pub fn markdown(file: &BenchFile) -> String {
    let mut out = String::new();
    for wl in &file.workloads {
        out += &format!("\n**{}**\n\n| {} |\n|", heading(wl), HEADER.join(" | "));
        out += &"---|".repeat(HEADER.len());
        out += "\n";
        for t in &wl.targets {
            out += &format!("| {} |\n", row(t).join(" | "));
        }
    }
    if let Some(idle) = &file.idle {
        out += &format!(
            "\n**idle memory: {} idle authenticated clients**\n\n| target | RSS idle | RSS with clients | per client |\n|---|---|---|---|\n",
            idle.clients
        );
        for t in &idle.targets {
            out += &format!(
                "| {} | {:.1} MB | {:.1} MB | {:.0} bytes |\n",
                t.name,
                t.rss_idle_kb as f64 / 1024.0,
                t.rss_loaded_kb as f64 / 1024.0,
                t.bytes_per_client
            );
        }
    }
    out
}

fn find<'a>(file: &'a BenchFile, wl: &str, target: &str) -> Option<&'a TargetResult> {
    file.workloads
        .iter()
        .find(|w| w.name == wl)?
        .targets
        .iter()
        .find(|t| t.name == target)
}

/// The targets, each with what this run measured; lines to print.
pub fn verdict(file: &BenchFile) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |ok: Option<bool>, what: String| {
        let word = match ok {
            Some(true) => "met    ",
            Some(false) => "NOT met",
            None => "n/a    ",
        };
        out.push(format!("  [{word}] {what}"));
    };
    let us = find(file, "select-500", "us");
    let med = |s: Option<Stat>| s.map(|s| s.median);
    let (d50, pgb) = (
        us.and_then(|t| med(t.tps_vs_direct50)),
        us.and_then(|t| med(t.tps_vs_pgbouncer)),
    );
    say(
        d50.zip(pgb).map(|(d, p)| d >= 0.92 && p >= 1.15),
        format!(
            "1. select-only 500: tps >= 0.92x direct-50 and >= 1.15x PgBouncer: {} x direct-50, {} x PgBouncer",
            fmt2(d50),
            fmt2(pgb)
        ),
    );
    let cpu = us.and_then(|t| med(t.cpu_vs_pgbouncer));
    let pgb_t = find(file, "select-500", "pgbouncer");
    say(
        cpu.map(|c| c <= 0.5),
        format!(
            "2. pooler CPU per txn <= 0.5x PgBouncer's: {} x ({} vs {} us)",
            fmt2(cpu),
            fmt1(us.and_then(|t| med(t.pooler_cpu_us_per_txn))),
            fmt1(pgb_t.and_then(|t| med(t.pooler_cpu_us_per_txn)))
        ),
    );
    let p99 = us.and_then(|t| med(t.p99_vs_pgbouncer));
    say(
        p99.map(|p| p <= 1.0),
        format!("3. p99 latency <= PgBouncer's: {} x", fmt2(p99)),
    );
    let tpcb = find(file, "tpcb-500", "us");
    let tp = tpcb.and_then(|t| med(t.tps_vs_pgbouncer));
    let failed =
        tpcb.map(|t| t.failed_total + t.runs.iter().map(|r| r.aborted_clients).sum::<u64>());
    say(
        tp.zip(failed).map(|(r, f)| r >= 1.0 && f == 0),
        format!(
            "4. TPC-B 500: tps >= PgBouncer's, 0 failed: {} x PgBouncer, {} failed/aborted",
            fmt2(tp),
            failed.map_or("-".into(), |f| f.to_string())
        ),
    );
    let ebpf = find(file, "select-500", "us-ebpf");
    let (etps, ecpu) = match (ebpf, us) {
        (Some(e), Some(u)) => (
            med(paired(&e.runs, &u.runs, |r| Some(r.tps))),
            med(paired(&e.runs, &u.runs, |r| r.pooler_cpu_us_per_txn)),
        ),
        _ => (None, None),
    };
    say(
        etps.zip(ecpu).map(|(t, c)| t >= 0.98 && c <= 1.02),
        format!(
            "5. eBPF on costs <= 2% tps and CPU: tps {} x, CPU {} x (of us with ebpf off, per-round medians)",
            fmt2(etps),
            fmt2(ecpu)
        ),
    );
    let idle = file
        .idle
        .as_ref()
        .and_then(|i| i.targets.iter().find(|t| t.name == "us"));
    say(
        idle.map(|t| t.bytes_per_client <= 2048.0),
        format!(
            "6. <= 2 kB RSS per idle client: {} bytes ({} clients)",
            idle.map_or("-".into(), |t| format!("{:.0}", t.bytes_per_client)),
            file.idle.as_ref().map_or(0, |i| i.clients)
        ),
    );
    for wl in &file.workloads {
        let (u, e) = (find(file, &wl.name, "us"), find(file, &wl.name, "us-epoll"));
        if let (Some(u), Some(e)) = (u, e) {
            say(
                None,
                format!(
                    "7. {}: {} (default) / epoll, per-round medians: tps {} x, pooler CPU {} x, p99 {} x",
                    wl.name,
                    file.machine.pooler_backend,
                    fmt2(med(paired(&u.runs, &e.runs, |r| Some(r.tps)))),
                    fmt2(med(paired(&u.runs, &e.runs, |r| r.pooler_cpu_us_per_txn))),
                    fmt2(med(paired(&u.runs, &e.runs, |r| Some(r.lat_p99_ms))))
                ),
            );
        }
    }
    out
}

fn ratio_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).and_then(|(a, b)| (b > 0.0).then(|| a / b))
}

fn fmt2(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}"))
}

fn fmt1(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.1}"))
}

/// `--compare A B`: B against A, target by target, and the in-run ratios of each.
pub fn compare(a: &BenchFile, b: &BenchFile) {
    println!(
        "A = {} ({})\nB = {} ({})",
        a.timestamp, a.command, b.timestamp, b.command
    );
    println!(
        "Absolute figures drift between runs on a shared machine; the in-run ratios (x PgB, x d-50) are the ones to trust."
    );
    for wb in &b.workloads {
        let Some(wa) = a.workloads.iter().find(|w| w.name == wb.name) else {
            println!("\n== {}: only in B", wb.name);
            continue;
        };
        println!("\n== {} ({})", wb.name, wb.title);
        println!(
            "{:<14} {:>9} {:>9} {:>6}   {:>8} {:>8} {:>6}   {:>7} {:>7} {:>6}   {:>11} {:>11}",
            "target",
            "tps A",
            "tps B",
            "B/A",
            "CPU A",
            "CPU B",
            "B/A",
            "p99 A",
            "p99 B",
            "B/A",
            "x PgB A->B",
            "x d50 A->B"
        );
        for tb in &wb.targets {
            let Some(ta) = wa.targets.iter().find(|t| t.name == tb.name) else {
                println!("{:<14} only in B", tb.name);
                continue;
            };
            let m = |s: Option<Stat>| s.map(|s| s.median);
            let arrow =
                |x: Option<Stat>, y: Option<Stat>| format!("{}->{}", fmt2(m(x)), fmt2(m(y)));
            println!(
                "{:<14} {:>9} {:>9} {:>6}   {:>8} {:>8} {:>6}   {:>7} {:>7} {:>6}   {:>11} {:>11}",
                tb.name,
                m(ta.tps).map_or("-".into(), thousands),
                m(tb.tps).map_or("-".into(), thousands),
                fmt2(ratio_of(m(tb.tps), m(ta.tps))),
                fmt1(m(ta.pooler_cpu_us_per_txn)),
                fmt1(m(tb.pooler_cpu_us_per_txn)),
                fmt2(ratio_of(
                    m(tb.pooler_cpu_us_per_txn),
                    m(ta.pooler_cpu_us_per_txn)
                )),
                fmt1(m(ta.lat_p99_ms)),
                fmt1(m(tb.lat_p99_ms)),
                fmt2(ratio_of(m(tb.lat_p99_ms), m(ta.lat_p99_ms))),
                arrow(ta.tps_vs_pgbouncer, tb.tps_vs_pgbouncer),
                arrow(ta.tps_vs_direct50, tb.tps_vs_direct50),
            );
        }
    }
    if let (Some(ia), Some(ib)) = (&a.idle, &b.idle) {
        println!(
            "\n== idle memory, bytes per idle client (A: {} clients, B: {})",
            ia.clients, ib.clients
        );
        for tb in &ib.targets {
            let pa = ia.targets.iter().find(|t| t.name == tb.name);
            println!(
                "{:<14} {:>9} {:>9.0}",
                tb.name,
                pa.map_or("-".into(), |t| format!("{:.0}", t.bytes_per_client)),
                tb.bytes_per_client
            );
        }
    }
}
