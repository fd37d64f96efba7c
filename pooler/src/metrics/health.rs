//! /healthz (is the pooler taking connections?) and /readyz (can it reach every configured
//! database?), for load balancers and orchestrators.
//!
//! Readiness first looks at what the pools already know (an idle server, or a login that
//! succeeded within `server_check_delay`), so a busy pooler is judged without any extra
//! connection; only a database without such evidence gets a plain TCP connect to its
//! host:port (or Unix socket), remembered for `server_check_delay`, so frequent probes do
//! not turn into a stream of connects to PostgreSQL.

use std::{
    collections::HashMap,
    io,
    net::{TcpStream, ToSocketAddrs},
    os::unix::net::UnixStream,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::http::Response;
use crate::{app::App, config::Database, stats::now_micros};

/// How long a probe's connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// When a probe ran and what it found.
type Probe = (Instant, Result<(), String>);

/// Probe results per (host, port), shared by the connection threads.
#[derive(Default)]
pub(super) struct Readiness {
    probes: Mutex<HashMap<(String, u16), Probe>>,
}

/// 200 while new connections are accepted, 503 once a shutdown has begun (so a load
/// balancer stops sending clients while existing ones finish).
pub(super) fn live(app: &App) -> Response {
    if app.stop_accepting.is_raised() {
        Response::text(503, "shutting down: new connections are refused\n")
    } else {
        Response::text(200, "ok\n")
    }
}

/// One line per configured database; 200 if all are reachable, else 503.
pub(super) fn ready(app: &App, readiness: &Readiness) -> Response {
    let cfg = app.config();
    let interval = cfg.pooler.server_check_delay.max(Duration::from_secs(1));
    let mut entries: Vec<(&str, &Database)> = cfg
        .databases
        .iter()
        .filter(|(name, _)| name.as_str() != "*")
        .map(|(name, db)| (name.as_str(), db))
        .collect();
    if entries.is_empty()
        && let Some(star) = cfg.databases.get("*")
    {
        // Only the fallback entry: its host stands for every database.
        entries.push(("*", star));
    }
    let pools = app.pools.all();
    let now = now_micros();
    let window = interval.as_micros() as u64;
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (name, db) in entries {
        let proven = pools.iter().filter(|p| p.key.db == name).any(|p| {
            let last = p.last_connect_ok();
            p.counts().idle > 0 || (last != 0 && now.saturating_sub(last) < window)
        });
        if proven {
            ok.push(format!("{name}: ok (server connection in pool)"));
            continue;
        }
        match readiness.probe(&db.host, db.port, interval) {
            Ok(()) => ok.push(format!("{name}: ok ({} reachable)", target(db))),
            Err(e) => failed.push(format!("{name}: unreachable: {}: {e}", target(db))),
        }
    }
    let status = if failed.is_empty() { 200 } else { 503 };
    let mut body = String::new();
    for line in failed.iter().chain(&ok) {
        body.push_str(line);
        body.push('\n');
    }
    if body.is_empty() {
        body.push_str("ok (no databases configured)\n");
    }
    Response::text(status, body)
}

fn target(db: &Database) -> String {
    if db.is_unix_socket() {
        format!("{}/.s.PGSQL.{}", db.host, db.port)
    } else {
        format!("{}:{}", db.host, db.port)
    }
}

impl Readiness {
    /// The cached result for host:port if younger than `max_age`, else a new probe.
    fn probe(&self, host: &str, port: u16, max_age: Duration) -> Result<(), String> {
        let key = (host.to_string(), port);
        let lock = || self.probes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, result)) = lock().get(&key)
            && at.elapsed() < max_age
        {
            return result.clone();
        }
        // Probed without the lock: a slow connect must not hold up other databases.
        let result = connect(host, port).map_err(|e| e.to_string());
        lock().insert(key, (Instant::now(), result.clone()));
        result
    }
}

/// A plain connect, as PostgreSQL clients would make it; nothing is sent.
fn connect(host: &str, port: u16) -> io::Result<()> {
    if host.starts_with('/') {
        return UnixStream::connect(format!("{host}/.s.PGSQL.{port}")).map(drop);
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_cached_per_interval() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Readiness::default();
        assert_eq!(r.probe("127.0.0.1", port, Duration::from_secs(60)), Ok(()));
        drop(listener);
        // Within the interval the cached success stands; a zero interval probes again.
        assert_eq!(r.probe("127.0.0.1", port, Duration::from_secs(60)), Ok(()));
        assert!(r.probe("127.0.0.1", port, Duration::ZERO).is_err());
    }

    #[test]
    fn unix_socket_paths() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display().to_string();
        assert!(connect(&host, 5432).is_err());
        let _l = std::os::unix::net::UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
        assert!(connect(&host, 5432).is_ok());
    }
}
