//! Integration-test harness: temporary PostgreSQL clusters, the pooler process, raw wire clients.
#![allow(dead_code)]

mod drivers;
mod pooler;
mod postgres;
mod raw;
mod seccomp;

// Scenario files use only some of these.
#[allow(unused_imports)]
pub use drivers::{
    Driver, admin_number, admin_rows, asyncpg, node_pg, pgjdbc, prometheus_client, psycopg, skip,
};
#[allow(unused_imports)]
pub use pooler::{PgbenchResult, Pooler, TRUST_TRANSACTION_CONFIG, run_pgbench};
#[allow(unused_imports)]
pub use postgres::{
    MD5_PASSWORD, MD5_USER, PLAIN_PASSWORD, PLAIN_USER, PgOptions, Postgres, SCRAM_PASSWORD,
    SCRAM_USER, TRUST_USER,
};
#[allow(unused_imports)]
pub use raw::{Msg, RawClient, backend_key, data_rows, fe};
#[allow(unused_imports)]
pub use seccomp::deny_io_uring;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// tokio-postgres client connected to `connstr`; the connection future is spawned on the current tokio runtime.
pub async fn pg_connect(connstr: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(connstr, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The error (if any) surfaces on the client's next call; nothing to do with it here.
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether the kernel lets this process load the eBPF programs; prints why not (the test
/// then skips). A missing object or a verifier rejection is a failure.
#[allow(dead_code)]
pub fn kernel_allows() -> bool {
    match pooler_ebpf::probe() {
        Ok(()) => true,
        Err(e @ (pooler_ebpf::LoadError::NotBuilt(_) | pooler_ebpf::LoadError::Rejected(_))) => {
            panic!("the eBPF programs must build and load: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: the kernel refuses eBPF to this process: {e}");
            false
        }
    }
}

/// User plus system CPU ticks a process has used (/proc/PID/stat), to show it idles.
#[allow(dead_code)]
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Poll `cond` every 20 ms until it returns true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on 127.0.0.1 (bind port 0, read it, close). Never hands out the same port twice
/// in one process, so parallel tests cannot be given the same one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused port found");
}

/// libpq key=value connection string for host/port/user/database.
pub fn conninfo(host: &str, port: u16, user: &str, db: &str) -> String {
    format!("host={host} port={port} user={user} dbname={db}")
}

/// Removes every PG* variable of the caller's environment, so that a developer's PGHOST,
/// PGPASSWORD or PGOPTIONS cannot change what a test does.
pub(crate) fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// Runs `cmd` (stdin closed, stdout/stderr captured) and kills it if it has not finished
/// within `timeout`.
pub(crate) fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout piped")),
        Box::new(child.stderr.take().expect("stderr piped")),
    ];
    for (i, mut pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    let deadline = Instant::now() + timeout;
    let mut outs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, buf)) => outs[i] = buf,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {timeout:?} (killed)"));
            }
        }
    }
    let status = child.wait().map_err(|e| format!("wait for {what}: {e}"))?;
    let [stdout, stderr] = outs;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// psql -X -A -t -q -w -v ON_ERROR_STOP=1 -c SQL against a libpq connection string.
/// The SQL is sent as one simple Query message (several statements run as one implicit
/// transaction). Ok(stdout trimmed) or Err(stderr).
pub fn psql_conninfo(conninfo: &str, password: Option<&str>, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    clear_pg_env(&mut cmd);
    cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo)
        .arg("-c")
        .arg(sql)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/dev/null");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = run_with_timeout(cmd, Duration::from_secs(120))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL quoted identifier.
pub fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
