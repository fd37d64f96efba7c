//! Debian's prometheus-pgbouncer-exporter (installed with apt when missing) pointed at our
//! admin console: what it can read of PgBouncer's SHOW output it reads from us.

mod common;
use common::*;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "metrics_support.rs"]
mod metrics_support;
use metrics_support::*;

/// Debian's exporter (installed if missing); None with the reason when apt cannot get it.
fn debian_exporter() -> Option<&'static str> {
    const BIN: &str = "/usr/bin/prometheus-pgbouncer-exporter";
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "prometheus-pgbouncer-exporter"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !std::path::Path::new(BIN).exists() && !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        if !install() {
            eprintln!("SKIPPED: apt-get cannot install prometheus-pgbouncer-exporter");
            return None;
        }
    }
    Some(BIN)
}

#[test]
fn debian_exporter_reads_the_console() {
    const DB: &str = "metrics_exporter";
    Postgres::shared().create_database(DB);
    let Some(bin) = debian_exporter() else { return };
    let pooler = Pooler::start(&config(free_port(), ""));
    let (_client, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    let eport = free_port();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--pgbouncer-host",
        "127.0.0.1",
        "--pgbouncer-user",
        "postgres",
        "--host",
        "127.0.0.1",
    ])
    .args([
        "--pgbouncer-port",
        &pooler.port.to_string(),
        "--port",
        &eport.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut exporter = cmd.spawn().expect("start the exporter");
    let mut exited = None;
    wait_until(Duration::from_secs(20), || {
        exited = exporter.try_wait().ok().flatten();
        exited.is_some() || TcpStream::connect(("127.0.0.1", eport)).is_ok()
    });
    let pool = labels(&[("database", DB), ("user", "postgres")]);
    if exited.is_none() {
        let (status, body) = get(eport, "/metrics");
        let _ = exporter.kill();
        let _ = exporter.wait();
        assert_eq!(status, 200, "{body}");
        let e = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        assert_eq!(
            e.value("pgbouncer_active_clients", &pool),
            Some(1.0),
            "{body}"
        );
        return;
    }
    let mut stderr = String::new();
    let _ = exporter
        .stderr
        .take()
        .map(|mut s| s.read_to_string(&mut stderr));
    // Version 1.7 (2016) reads SHOW STATS' total_requests, gone since PgBouncer 1.8, so it
    // stops the same way against a real PgBouncer. Anything else is ours to fix.
    assert!(
        stderr.contains("KeyError: 'total_requests'"),
        "the exporter failed:\n{stderr}"
    );
    eprintln!("NOTE: the Debian exporter cannot run against PgBouncer >= 1.8 (nor us):\n{stderr}");
    // Its collectors for columns PgBouncer still has, run through its own code.
    let script = format!(
        "import sys\nfrom prometheus_client import CollectorRegistry, generate_latest\n\
         from prometheus_pgbouncer_exporter.utils import get_connection\n\
         from prometheus_pgbouncer_exporter.collectors import PoolsCollector, ListsCollector\n\
         c = get_connection('postgres', {}, '127.0.0.1')\n\
         r = CollectorRegistry(auto_describe=True)\n\
         r.register(PoolsCollector(connection=c, databases=None))\n\
         r.register(ListsCollector(connection=c))\n\
         sys.stdout.write(generate_latest(r).decode())\n",
        pooler.port
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        e.value("pgbouncer_active_clients", &pool),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        e.value("pgbouncer_waiting_clients", &pool),
        Some(0.0),
        "{text}"
    );
    assert!(
        e.value("pgbouncer_used_clients", &labels(&[])) >= Some(1.0),
        "{text}"
    );
}
