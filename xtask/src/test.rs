//! cargo xtask test: system packages, fmt, clippy, cargo test, a short fuzz run, the pgbench
//! load acceptance through the pooler, and `cargo xtask bench --quick` end to end.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::pg::{self, Cluster};
use crate::pooler::PoolerProcess;
use crate::{build_release_pooler, cargo, in_path, make_temp_dir, run_cmd, tail, workspace_root};

enum Outcome {
    Passed,
    Failed(String),
    Skipped(&'static str),
}

struct Step {
    name: &'static str,
    outcome: Outcome,
    secs: f64,
}

/// Returns Ok(true) when every step that ran passed.
pub fn run(args: &[String]) -> Result<bool> {
    let mut lint = true;
    let mut load = true;
    let mut fuzz = true;
    let mut bench = true;
    let mut test_args: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--no-lint" => lint = false,
            "--no-load" => load = false,
            "--no-fuzz" => fuzz = false,
            "--no-bench" => bench = false,
            "--" => test_args.extend(rest.by_ref().cloned()),
            other => bail!("xtask test: unknown argument {other:?} (see cargo xtask help)"),
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    // Runs one step unless `skip` gives a reason not to, and records the outcome.
    let mut step = |name: &'static str,
                    skip: Option<&'static str>,
                    f: &mut dyn FnMut() -> Result<()>| {
        let started = Instant::now();
        let outcome = match skip {
            Some(why) => Outcome::Skipped(why),
            None => {
                println!("\n== xtask test: {name}");
                match f() {
                    Ok(()) => Outcome::Passed,
                    Err(e) => {
                        eprintln!("xtask test: {name} failed: {e:#}");
                        Outcome::Failed(format!("{e:#}").lines().next().unwrap_or("").to_string())
                    }
                }
            }
        };
        steps.push(Step {
            name,
            outcome,
            secs: started.elapsed().as_secs_f64(),
        });
    };

    let mut deps_ok = false;
    step("system packages", None, &mut || {
        install_missing_packages()?;
        deps_ok = true;
        Ok(())
    });
    let no_lint = (!lint).then_some("--no-lint");
    step("cargo fmt --check", no_lint, &mut || {
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))
    });
    step("cargo clippy", no_lint, &mut || {
        run_cmd(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
    let no_deps = (!deps_ok).then_some("system packages missing");
    step("cargo test", no_deps, &mut || {
        // Driver scenarios fail rather than skip when a driver cannot be installed.
        run_cmd(
            cargo()
                .args(["test", "--workspace"])
                .args(&test_args)
                .env("POOLER_TEST_REQUIRE_DRIVERS", "1"),
        )
    });
    let no_fuzz = if fuzz {
        fuzz_ready()
    } else {
        Some("--no-fuzz")
    };
    step("fuzz (short run)", no_fuzz, &mut fuzz_run);
    let no_load = if !load { Some("--no-load") } else { no_deps };
    step("load acceptance", no_load, &mut load_acceptance);
    let no_bench = if !bench { Some("--no-bench") } else { no_deps };
    step("bench --quick", no_bench, &mut || {
        // End to end only: the figures are printed, never asserted; a run that fails or
        // loses transactions through our pooler fails the step.
        if crate::bench::run(&["--quick".to_string()])? {
            Ok(())
        } else {
            bail!("cargo xtask bench --quick: a run failed or lost transactions")
        }
    });

    println!("\n== xtask test: summary");
    let mut failed = 0;
    for s in &steps {
        let (word, detail) = match &s.outcome {
            Outcome::Passed => ("passed", String::new()),
            Outcome::Failed(why) => {
                failed += 1;
                ("FAILED", format!("  {why}"))
            }
            Outcome::Skipped(why) => ("skipped", format!("  ({why})")),
        };
        println!("  {:<20} {word:<8} {:>7.1} s{detail}", s.name, s.secs);
    }
    if failed == 0 {
        println!("xtask test: OK");
    } else {
        println!("xtask test: {failed} step(s) FAILED");
    }
    Ok(failed == 0)
}

/// The cargo-fuzz targets in pooler/fuzz, and how long each runs in `cargo xtask test`.
const FUZZ_TARGETS: [&str; 5] = ["startup", "frame", "scram", "config", "client_stream"];
const FUZZ_SECS: u32 = 20;

/// `cargo +nightly ...` through rustup's proxy (this process's CARGO is one toolchain's).
fn cargo_nightly() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(workspace_root());
    for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(var);
    }
    cmd
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// None when `cargo +nightly fuzz` works (cargo-fuzz is installed when missing); otherwise
/// why the fuzz step is skipped.
fn fuzz_ready() -> Option<&'static str> {
    if succeeds(cargo_nightly().args(["fuzz", "--version"])) {
        return None;
    }
    if !succeeds(cargo_nightly().arg("--version")) {
        println!(
            "xtask test: no nightly toolchain (rustup toolchain install nightly): no fuzz run"
        );
        return Some("no nightly toolchain");
    }
    println!("xtask test: installing cargo-fuzz (cargo install cargo-fuzz)");
    let mut install = Command::new("cargo");
    install.args(["install", "--locked", "cargo-fuzz"]);
    if run_cmd(&mut install).is_err() || !succeeds(cargo_nightly().args(["fuzz", "--version"])) {
        println!("xtask test: cargo-fuzz could not be installed: no fuzz run");
        return Some("cargo-fuzz not installable");
    }
    None
}

/// Builds the fuzz targets and runs each for FUZZ_SECS, seeded with its regression corpus
/// (read only: new inputs go to a scratch directory). A crash or a hang fails the step;
/// libFuzzer leaves the reproducer in pooler/fuzz/artifacts/<target>/.
fn fuzz_run() -> Result<()> {
    run_cmd(cargo_nightly().args(["fuzz", "build", "--fuzz-dir", "pooler/fuzz"]))?;
    let scratch = make_temp_dir("xtask-fuzz")?;
    let mut failed = Vec::new();
    for target in FUZZ_TARGETS {
        println!("\n-- fuzz {target} ({FUZZ_SECS} s)");
        let work = scratch.join(target);
        std::fs::create_dir_all(&work)?;
        let seeds = workspace_root().join("pooler/fuzz/corpus").join(target);
        let run = run_cmd(
            cargo_nightly()
                .args(["fuzz", "run", "--fuzz-dir", "pooler/fuzz", target])
                .arg(&work)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={FUZZ_SECS}"))
                .arg("-timeout=10"),
        );
        if let Err(e) = run {
            failed.push(format!("{target}: {e:#}"));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed (reproducers in pooler/fuzz/artifacts/): {}",
            failed.join("; ")
        );
    }
    Ok(())
}

/// Debian packages for what the tests run, installed only when missing.
fn install_missing_packages() -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    if !pg::bin_dir().join("initdb").is_file() {
        missing.push("postgresql-15");
    }
    if !["psql", "pgbench", "pg_isready"].iter().all(|t| in_path(t)) {
        missing.push("postgresql-client-15");
    }
    if !in_path("ps") {
        missing.push("procps");
    }
    // The eBPF programs are C built by pooler-ebpf's build script: without these the
    // pooler builds without kernel stats and the eBPF tests cannot prove anything.
    if !in_path("clang") {
        missing.push("clang");
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").is_file() {
        missing.push("libbpf-dev");
    }
    // The eBPF tests drop packets with nft and compare with `ss` (iproute2).
    if !in_path("nft") {
        missing.push("nftables");
    }
    if !in_path("ss") {
        missing.push("iproute2");
    }
    // The driver scenarios: psycopg 3 and asyncpg are pip-installed by the tests, pg by
    // npm, pgjdbc is Debian's jar compiled against with javac.
    let python_has_pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !python_has_pip {
        missing.push("python3-pip");
    }
    if !in_path("node") || !in_path("npm") {
        missing.extend(["nodejs", "npm"]);
    }
    if !in_path("java") || !in_path("javac") {
        missing.push("default-jdk-headless");
    }
    if !Path::new("/usr/share/java/postgresql.jar").is_file() {
        missing.push("libpostgresql-jdbc-java");
    }
    if missing.is_empty() {
        println!(
            "all present: PostgreSQL 15 server and client, procps, clang, libbpf-dev, nftables, \
             iproute2, pip, node and npm, a JDK, pgjdbc"
        );
        return Ok(());
    }
    crate::apt_install(&missing)?;
    if !pg::bin_dir().join("initdb").is_file() || !in_path("pgbench") {
        bail!(
            "installed {}, but PostgreSQL 15 is still incomplete",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Release pooler in front of a temporary cluster; the acceptance script in simple and extended mode.
fn load_acceptance() -> Result<()> {
    let bin = build_release_pooler()?;
    crate::raise_nofile_limit();
    let cluster = Cluster::start(200)?;
    println!(
        "PostgreSQL 15 on 127.0.0.1:{} ({})",
        cluster.port,
        cluster.root.display()
    );
    let dir = make_temp_dir("xtask-pooler")?;
    let result = (|| -> Result<()> {
        let mut pooler = PoolerProcess::start(&bin, &dir, None, cluster.port, false)?;
        println!("pooler on 127.0.0.1:{} (pid {})", pooler.port, pooler.pid());
        let script = workspace_root().join("tests/load/pgbench_acceptance.sh");
        let mut failures = Vec::new();
        for protocol in ["simple", "extended"] {
            println!("\n-- acceptance, {protocol} protocol");
            if let Err(e) = run_script(&script, pooler.port, protocol) {
                failures.push(format!("{protocol}: {e}"));
            }
            if let Some(status) = pooler.try_wait() {
                bail!(
                    "the pooler died ({status}); log:\n{}",
                    tail(&pooler.log_path, 60)
                );
            }
        }
        let status = pooler.stop();
        println!("pooler stopped: {status:?}");
        if !failures.is_empty() {
            eprintln!(
                "--- pooler log (last 60 lines) ---\n{}",
                tail(&pooler.log_path, 60)
            );
            bail!("{}", failures.join("; "));
        }
        Ok(())
    })();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_script(script: &Path, port: u16, protocol: &str) -> Result<()> {
    let mut cmd = Command::new("bash");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.arg(script)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .env("ACCEPT_DURATION", "10")
        .env("ACCEPT_PROTOCOL", protocol)
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres");
    run_cmd(&mut cmd)
}
