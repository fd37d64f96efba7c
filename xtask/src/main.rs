//! cargo xtask: project automation (`test`: install, lint, test, load acceptance; `demo`: pooler + PostgreSQL to play with;
//! `bench`: side by side with PgBouncer and direct PostgreSQL).

mod bench;
mod demo;
mod pg;
mod pooler;
mod test;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [--no-lint] [--no-fuzz] [--no-load] [--no-bench] [-- ARGS...]
        install missing system packages (PostgreSQL 15 server and client, procps), then
        cargo fmt --check, cargo clippy -D warnings, cargo test --workspace ARGS...,
        each cargo-fuzz target of pooler/fuzz for 20 s (when a nightly toolchain is there),
        the pgbench load acceptance through the release pooler, and cargo xtask bench
        --quick end to end (figures printed, not asserted)
  demo  start a temporary PostgreSQL and the pooler in front of it; Ctrl-C stops both
  bench [--quick] [--profile] [--prepared] [--filter W[,W..]] [--rounds N] [--duration S]
        [--idle-clients N] | --compare A.json B.json | --report A.json
        pgbench through the release pooler (variants: io_uring/epoll, 1 worker, eBPF when
        available), Debian's PgBouncer and PostgreSQL directly (50 clients and the workload's),
        in interleaved rounds (default 3 x 15 s; --quick: 1 x 5 s, fewer workloads, 1,000 idle
        clients), on a temporary tuned PostgreSQL with pgbench -i -s 10; workloads select-500,
        select-extended-500, tpcb-500, select-50, select-1000, select-prepared (-M prepared,
        one thread per client; in --quick only with --prepared; PgBouncer only if 1.21+);
        then RSS per idle client at 10,000 idle clients (--filter ... skips it unless it names
        `idle`). Prints one table per workload and the issue's targets; writes
        target/bench/<timestamp>.json and .md. --profile: only a profile of the pooler under
        select-only load (perf, else callgrind; flame graph via inferno) in target/bench/.
        --compare prints B against A; --report prints a saved run's tables and verdict again.

environment: XTASK_POOLER_BIN=PATH uses that binary instead of building the release pooler;
  PG_BIN_DIR overrides /usr/lib/postgresql/15/bin; XTASK_BENCH_PROFILER=callgrind makes
  bench --profile use valgrind's callgrind instead of perf
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(true)
        }
        _ => {
            eprint!("{USAGE}");
            Ok(false)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo` as cargo itself was invoked (env CARGO), run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// apt-get install of `packages` (after one apt-get update), as root; as anyone else, an
/// error saying what to install.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing {}: install as root (apt-get install -y --no-install-recommends {0})",
            packages.join(" ")
        );
    }
    println!("== apt-get install {}", packages.join(" "));
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run_cmd(&mut apt(&["update", "-q"]))?;
    run_cmd(
        apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--no-upgrade",
        ])
        .args(packages),
    )
}

/// Runs a command with inherited output; Err when it cannot start or exits non-zero.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        let program = Path::new(cmd.get_program());
        let name = program.file_name().unwrap_or(program.as_os_str());
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        bail!(
            "`{} {}` failed ({status})",
            name.to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether an executable of that name is on PATH.
pub fn in_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

/// A free TCP port on 127.0.0.1, preferring `preferred` and the ports just above it.
pub fn free_port(preferred: Option<u16>) -> Result<u16> {
    if let Some(first) = preferred {
        for port in first..first.saturating_add(100) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Path of the release pooler binary (honours CARGO_TARGET_DIR).
pub fn release_pooler() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_relative() {
        workspace_root().join(target)
    } else {
        target
    };
    target.join("release").join("pooler")
}

/// cargo build --release -p pooler; returns the binary's path. XTASK_POOLER_BIN names a prebuilt
/// binary instead (another build, or a stand-in that takes `-c FILE`).
pub fn build_release_pooler() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("XTASK_POOLER_BIN") {
        println!("== using XTASK_POOLER_BIN={}", bin.to_string_lossy());
        return Ok(PathBuf::from(bin));
    }
    println!("== cargo build --release -p pooler");
    run_cmd(cargo().args(["build", "--release", "-p", "pooler"]))?;
    let bin = release_pooler();
    if !bin.is_file() {
        bail!("built, but {} is missing", bin.display());
    }
    Ok(bin)
}

/// A fresh directory under /tmp, readable by everyone (the PostgreSQL user must traverse it).
pub fn make_temp_dir(prefix: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for i in 0..1000u32 {
        let dir = Path::new("/tmp").join(format!("{prefix}-{}-{nanos:x}-{i}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("mkdir {}", dir.display())),
        }
    }
    bail!("cannot create a temp dir in /tmp")
}

/// Raise the soft open-files limit to the hard one (500 pgbench clients need the descriptors).
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The last `n` lines of a text file (for failure reports).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
