//! Monitoring over HTTP (`metrics_addr`): /metrics in Prometheus' text format, /healthz and
//! /readyz. Served by a thread of its own with blocking I/O, outside the workers' event
//! loops, so a scrape cannot delay client traffic; it reads the same snapshot as the admin
//! console's SHOW commands, so both always agree.

mod exporter;
mod health;
mod histogram;
mod http;
mod kernel;
mod prometheus;

use std::{
    io,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use histogram::{HistogramSnapshot, WaitHistogram};

use crate::{app::App, config::General};

/// Counters of one worker thread. Aligned to a cache line each, since every worker writes
/// only its own and they sit side by side in one array.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    accepted: AtomicU64,
    sessions: AtomicU64,
}

impl WorkerStats {
    /// One per worker, indexed by worker number.
    pub fn for_workers(n: usize) -> Box<[WorkerStats]> {
        (0..n).map(|_| WorkerStats::default()).collect()
    }

    /// Connections accepted by this worker since the start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Sessions (client connections) this worker runs now.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// Counts a connection accepted by `worker`, and its session until dropped.
pub struct SessionGuard {
    app: Arc<App>,
    worker: usize,
}

impl SessionGuard {
    pub fn new(app: &Arc<App>, worker: usize) -> SessionGuard {
        if let Some(w) = app.workers.get(worker) {
            w.accepted.fetch_add(1, Ordering::Relaxed);
            w.sessions.fetch_add(1, Ordering::Relaxed);
        }
        SessionGuard {
            app: app.clone(),
            worker,
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(w) = self.app.workers.get(self.worker) {
            w.sessions.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The bound monitoring socket, before the App exists.
pub struct MetricsListener {
    listener: TcpListener,
}

/// Binds `metrics_addr` (None when it is ""), at start like the client listeners, so a
/// taken port stops the pooler before it serves anyone.
pub fn bind(g: &General) -> io::Result<Option<MetricsListener>> {
    let addr = g.metrics_addr.trim();
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("metrics_addr {addr}: {e}")))?;
    Ok(Some(MetricsListener { listener }))
}

impl MetricsListener {
    /// Serves until the process exits, on a thread of its own.
    pub fn spawn(self, app: Arc<App>) -> io::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!("metrics on http://{addr}/metrics (also /healthz, /readyz)");
        std::thread::Builder::new()
            .name("pooler-metrics".into())
            .spawn(move || http::serve(self.listener, app))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(value: &str) -> Result<Config, String> {
        let text = format!("[pooler]\nauth_type = \"trust\"\nmetrics_addr = {value}\n");
        Config::parse_str(&text, None).map_err(|e| e.to_string())
    }

    #[test]
    fn metrics_addr_is_checked_when_read() {
        assert_eq!(parse("\"\"").unwrap().pooler.metrics_addr, "");
        assert_eq!(General::default().metrics_addr, "", "off by default");
        for ok in [
            "127.0.0.1:9127",
            "[::1]:9127",
            "localhost:9127",
            " 0.0.0.0:9127 ",
        ] {
            let c = parse(&format!("{ok:?}")).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(c.pooler.metrics_addr, ok.trim());
        }
        for bad in [
            "\"9127\"",
            "\"localhost\"",
            "\"host:port\"",
            "\"a b:1\"",
            "\"[::1]\"",
            "9127",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("pooler.metrics_addr"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_taken_port_names_metrics_addr() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let g = General {
            metrics_addr: taken.local_addr().unwrap().to_string(),
            ..General::default()
        };
        let e = bind(&g).err().expect("the port is taken");
        assert!(e.to_string().starts_with("metrics_addr 127.0.0.1:"), "{e}");
        assert!(
            bind(&General::default()).unwrap().is_none(),
            "off by default"
        );
    }

    #[test]
    fn sessions_are_counted_per_worker() {
        let g = General {
            workers: 2,
            ..General::default()
        };
        let config = Config::parse_str("[pooler]\nauth_type = \"trust\"\n", None).unwrap();
        let config = Config {
            pooler: g,
            ..config
        };
        let app = App::new(config, None, crate::net::Backend::Epoll);
        let guard = SessionGuard::new(&app, 1);
        let _out_of_range = SessionGuard::new(&app, 7);
        assert_eq!(
            (app.workers[1].accepted(), app.workers[1].sessions()),
            (1, 1)
        );
        drop(guard);
        assert_eq!(
            (app.workers[1].accepted(), app.workers[1].sessions()),
            (1, 0)
        );
        assert_eq!(app.workers[0].accepted(), 0);
    }
}
