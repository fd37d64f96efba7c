//! Kernel-side socket statistics: loads the eBPF programs of `pooler_ebpf` (per the `ebpf`
//! setting), harvests closed connections once a second, and computes what the
//! SHOW KERNEL_* commands print.
//!
//! The loaded object lives behind a mutex: reading a map is a syscall per lookup, fine for
//! the admin console and the janitor, and nothing on the per-query path ever touches it
//! (the kernel programs count on their own).

mod rows;

use std::{collections::HashMap, sync::Mutex};

pub use pooler_ebpf::Hist;
pub use rows::{ConnRow, LatencyRow, StatsRow};

use crate::{
    app::App,
    config::{EbpfMode, General},
};
use pooler_ebpf::{Closed, Loaded, Options};

/// Figures of connections that closed, summed from the kernel's close records.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    harvested: u64,
    bytes_received: u64,
    bytes_acked: u64,
}

impl Totals {
    fn add(&mut self, c: &Closed) {
        self.harvested += 1;
        self.bytes_received += c.conn.bytes_received;
        self.bytes_acked += c.conn.bytes_acked;
    }
}

enum State {
    Active {
        loaded: Box<Loaded>,
        totals: Totals,
        rtt_sampling: bool,
    },
    Off(String),
}

/// The pooler's handle on the kernel programs (or the reason there are none).
pub struct Kernel {
    state: Mutex<State>,
}

impl Default for Kernel {
    fn default() -> Self {
        Kernel::off("not loaded")
    }
}

impl Kernel {
    fn off(reason: &str) -> Kernel {
        Kernel {
            state: Mutex::new(State::Off(reason.to_string())),
        }
    }

    /// Loads and attaches the programs per `ebpf`. Must run before the listeners are
    /// bound: it may move the process into a cgroup of its own, and the kernel only
    /// follows sockets created after that. Err only with `ebpf = "on"`.
    pub fn start(g: &General) -> Result<Kernel, String> {
        if g.ebpf == EbpfMode::Off {
            return Ok(Kernel::off("ebpf = \"off\" in the configuration"));
        }
        let opts = Options {
            rtt_sampling: g.ebpf_rtt_samples,
            ignored_port: metrics_port(&g.metrics_addr),
            max_connections: map_capacity(g.max_client_conn),
            pin_path: g.ebpf_pin_path.clone(),
        };
        match pooler_ebpf::load(&opts) {
            Ok(loaded) => {
                tracing::info!(
                    "kernel stats: eBPF programs attached to cgroup {} (capacity {} connections{}{})",
                    loaded.cgroup(),
                    loaded.max_connections(),
                    if g.ebpf_rtt_samples {
                        ", RTT sampling on"
                    } else {
                        ""
                    },
                    match &g.ebpf_pin_path {
                        Some(p) => format!(", maps pinned in {}", p.display()),
                        None => String::new(),
                    }
                );
                if let Some(w) = loaded.warning() {
                    tracing::warn!("kernel stats: {w}");
                }
                Ok(Kernel {
                    state: Mutex::new(State::Active {
                        loaded: Box::new(loaded),
                        totals: Totals::default(),
                        rtt_sampling: g.ebpf_rtt_samples,
                    }),
                })
            }
            Err(e) if g.ebpf == EbpfMode::On => Err(format!(
                "ebpf = \"on\" but the kernel stats cannot run: {e}"
            )),
            Err(e) => {
                // The one line `ebpf = "auto"` promises; the pooler runs on without them.
                tracing::warn!("kernel stats off (ebpf = \"auto\"): {e}");
                Ok(Kernel::off(&e.to_string()))
            }
        }
    }

    /// Takes over what `other` loaded (main loads before App exists).
    pub fn install(&self, other: Kernel) {
        let state = other.state.into_inner().unwrap_or_else(|e| e.into_inner());
        *self.lock() = state;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the programs are attached.
    pub fn is_active(&self) -> bool {
        matches!(*self.lock(), State::Active { .. })
    }

    /// Why there are no kernel stats (None when there are).
    pub fn off_reason(&self) -> Option<String> {
        match &*self.lock() {
            State::Active { .. } => None,
            State::Off(r) => Some(r.clone()),
        }
    }

    /// Folds the close records the kernel left in its ring buffer into the totals (the
    /// kernel already removed those connections from its map). Called once a second.
    pub fn harvest(&self) {
        if let State::Active { loaded, totals, .. } = &mut *self.lock() {
            loaded.drain_closed(|c| totals.add(c));
        }
    }

    /// Detaches the programs and leaves the child cgroup, if one was made.
    pub fn shutdown(&self) {
        let old = std::mem::replace(&mut *self.lock(), State::Off("the pooler stopped".into()));
        drop(old);
    }

    /// SHOW KERNEL_CLIENTS rows; Err(reason) when eBPF is off.
    pub fn clients(&self, app: &App) -> Result<Vec<ConnRow>, String> {
        let ids: HashMap<u64, u64> = app
            .clients
            .all()
            .iter()
            .filter(|c| c.info.cookie != 0)
            .map(|c| (c.info.cookie, c.id))
            .collect();
        self.conn_rows(pooler_ebpf::types::SIDE_CLIENT, &ids)
    }

    /// SHOW KERNEL_SERVERS rows; Err(reason) when eBPF is off.
    pub fn servers(&self, app: &App) -> Result<Vec<ConnRow>, String> {
        let ids: HashMap<u64, u64> = app
            .pools
            .all()
            .iter()
            .flat_map(|p| p.servers())
            .map(|s| (s.cookie.load(std::sync::atomic::Ordering::Relaxed), s.id))
            .filter(|(cookie, _)| *cookie != 0)
            .collect();
        self.conn_rows(pooler_ebpf::types::SIDE_SERVER, &ids)
    }

    fn conn_rows(&self, side: u32, ids: &HashMap<u64, u64>) -> Result<Vec<ConnRow>, String> {
        match &*self.lock() {
            State::Off(r) => Err(r.clone()),
            State::Active { loaded, .. } => {
                let clock = rows::Clock::now();
                let mut out: Vec<ConnRow> = loaded
                    .connections()
                    .into_iter()
                    .filter(|(_, c)| c.side == side)
                    .map(|(cookie, c)| {
                        rows::conn_row(cookie, &c, ids.get(&cookie).copied(), &clock)
                    })
                    .collect();
                out.sort_by_key(|r| (r.id.is_none(), r.id, r.cookie));
                Ok(out)
            }
        }
    }

    /// SHOW KERNEL_STATS: always one row, saying whether eBPF is active and why not.
    pub fn stats(&self) -> StatsRow {
        match &*self.lock() {
            State::Off(r) => StatsRow::off(r),
            State::Active {
                loaded,
                totals,
                rtt_sampling,
            } => {
                let globals = loaded.globals();
                let hists = loaded.histograms();
                match (globals, hists) {
                    (Ok(g), Ok(h)) => rows::stats_row(
                        loaded.cgroup(),
                        *rtt_sampling,
                        loaded.max_connections(),
                        &g,
                        &h,
                        totals.harvested,
                        totals.bytes_received,
                        totals.bytes_acked,
                        &loaded.connections(),
                    ),
                    (Err(e), _) | (_, Err(e)) => {
                        StatsRow::off(&format!("reading the eBPF maps failed: {e}"))
                    }
                }
            }
        }
    }

    /// The client-side and server-side latency histograms; Err(reason) when eBPF is off.
    pub fn histograms(&self) -> Result<[Hist; 2], String> {
        match &*self.lock() {
            State::Off(r) => Err(r.clone()),
            State::Active { loaded, .. } => loaded.histograms(),
        }
    }

    /// SHOW KERNEL_LATENCY rows; Err(reason) when eBPF is off.
    pub fn latency(&self) -> Result<Vec<LatencyRow>, String> {
        match &*self.lock() {
            State::Off(r) => Err(r.clone()),
            State::Active { loaded, .. } => loaded
                .histograms()
                .map(|[client, server]| rows::latency_rows(&client, &server)),
        }
    }
}

/// The port of `metrics_addr` ("host:port", checked when the config was read), 0 if off:
/// scrapes are not the pooler's clients.
fn metrics_port(addr: &str) -> u16 {
    addr.trim()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0)
}

/// Live-connection map size: every client the pooler admits plus as many servers, and
/// room for connections still closing or not yet admitted.
fn map_capacity(max_client_conn: u32) -> u32 {
    max_client_conn
        .saturating_mul(2)
        .saturating_add(4096)
        .min(1 << 20)
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_port_of_metrics_addr() {
        assert_eq!(super::metrics_port("127.0.0.1:9127"), 9127);
        assert_eq!(super::metrics_port(" [::1]:9128 "), 9128);
        assert_eq!(super::metrics_port("localhost:9129"), 9129);
        assert_eq!(super::metrics_port(""), 0);
    }
}
