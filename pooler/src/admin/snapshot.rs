//! A plain-data copy of what the SHOW commands report, taken from the live App in one
//! go, so each listing is a pure function of it and can be tested on constructed data.

use std::{
    collections::BTreeSet,
    sync::{Arc, atomic::Ordering},
};

use crate::{
    app::App,
    config::Config,
    pool::{PoolCounts, PoolSettings},
    stats::{ClientState, ServerState, TrafficValues, now_micros},
};

/// Names of the console's virtual database.
pub const ADMIN_DBS: [&str; 2] = ["pgbouncer", "pooler"];

pub fn is_admin_db(name: &str) -> bool {
    ADMIN_DBS.contains(&name)
}

#[derive(Debug, Clone)]
pub struct ServerSnap {
    pub id: u64,
    pub pid: u64,
    pub connect_time: u64,
    pub request_time: u64,
    pub local_addr: String,
    pub local_port: u16,
    pub state: ServerState,
    /// Linked client id (0 = none).
    pub client: u64,
    pub prepared: u64,
}

#[derive(Debug, Clone)]
pub struct PoolSnap {
    pub db: String,
    pub user: String,
    pub counts: PoolCounts,
    /// Logged-in clients of the pool (active or waiting).
    pub clients: u32,
    pub settings: PoolSettings,
    pub host: String,
    pub port: u16,
    pub open: u32,
    pub servers: Vec<ServerSnap>,
}

#[derive(Debug, Clone)]
pub struct ClientSnap {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub addr: String,
    pub port: u16,
    pub local_addr: String,
    pub local_port: u16,
    pub connect_time: u64,
    pub request_time: u64,
    pub wait_since: u64,
    pub state: ClientState,
    /// Linked server id (0 = none).
    pub server: u64,
    pub application_name: String,
    pub stats: TrafficValues,
    /// (database, user) of its pool; None for console clients.
    pub pool: Option<(String, String)>,
    pub prepared: u64,
}

impl ClientSnap {
    pub fn is_console(&self) -> bool {
        self.pool.is_none() && is_admin_db(&self.database)
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// µs since the epoch when it was taken.
    pub now: u64,
    pub config: Arc<Config>,
    pub pools: Vec<PoolSnap>,
    pub clients: Vec<ClientSnap>,
    pub paused_all: bool,
    pub paused: BTreeSet<String>,
    pub disabled: BTreeSet<String>,
    /// Connections admitted but not logged in yet.
    pub logging_in: u32,
    pub suspended: bool,
}

/// "1.2.3.4:5" or "[::1]:5" -> ("1.2.3.4", 5); anything else (a Unix socket) -> (s, 0).
pub fn split_addr(s: &str) -> (String, u16) {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => (s.to_string(), 0),
    }
}

impl Snapshot {
    pub fn take(app: &App) -> Snapshot {
        let now = now_micros();
        let pools = app
            .pools
            .all()
            .iter()
            .map(|p| {
                let servers = p
                    .servers()
                    .iter()
                    .map(|s| {
                        let (local_addr, local_port) = split_addr(&s.local_addr);
                        ServerSnap {
                            id: s.id,
                            pid: s.pid.load(Ordering::Relaxed),
                            connect_time: s.connect_time,
                            request_time: s.request_time.load(Ordering::Relaxed),
                            local_addr,
                            local_port,
                            state: s.state.server(),
                            client: s.client.load(Ordering::Relaxed),
                            prepared: s.prepared.load(Ordering::Relaxed),
                        }
                    })
                    .collect();
                let target = p.target();
                PoolSnap {
                    db: p.key.db.clone(),
                    user: p.key.user.clone(),
                    counts: p.counts(),
                    clients: p.client_count(),
                    settings: p.settings(),
                    host: target.addr.host.clone(),
                    port: target.addr.port,
                    open: p.open_servers(),
                    servers,
                }
            })
            .collect();
        let clients: Vec<ClientSnap> = app
            .clients
            .all()
            .iter()
            .map(|c| ClientSnap {
                id: c.id,
                user: c.info.user.clone(),
                database: c.info.database.clone(),
                addr: c.info.addr.clone(),
                port: c.info.port,
                local_addr: c.info.local_addr.clone(),
                local_port: c.info.local_port,
                connect_time: c.info.connect_time,
                request_time: c.request_time.load(Ordering::Relaxed),
                wait_since: c.wait_since.load(Ordering::Relaxed),
                state: c.state.client(),
                server: c.server.load(Ordering::Relaxed),
                application_name: c
                    .application_name
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default(),
                stats: c.stats.values(),
                pool: c.pool.get().map(|p| (p.key.db.clone(), p.key.user.clone())),
                prepared: c.prepared.load(Ordering::Relaxed),
            })
            .collect();
        let (paused_all, paused, disabled) = {
            let f = app.db_flags();
            (
                f.paused_all,
                f.paused.iter().cloned().collect(),
                f.disabled.iter().cloned().collect(),
            )
        };
        let logging_in = app.clients.connected().saturating_sub(clients.len() as u32);
        Snapshot {
            now,
            config: app.config(),
            pools,
            clients,
            paused_all,
            paused,
            disabled,
            logging_in,
            suspended: app.is_suspended(),
        }
    }

    /// An empty snapshot over `config`.
    #[cfg(test)]
    pub fn empty(config: Config) -> Snapshot {
        Snapshot {
            now: now_micros(),
            config: Arc::new(config),
            pools: Vec::new(),
            clients: Vec::new(),
            paused_all: false,
            paused: BTreeSet::new(),
            disabled: BTreeSet::new(),
            logging_in: 0,
            suspended: false,
        }
    }

    pub fn is_paused(&self, db: &str) -> bool {
        self.paused_all || self.paused.contains(db)
    }

    /// Clients logged in to a pool of `db`/`user`.
    pub fn pool_clients<'a>(
        &'a self,
        db: &'a str,
        user: &'a str,
    ) -> impl Iterator<Item = &'a ClientSnap> + 'a {
        self.clients
            .iter()
            .filter(move |c| c.pool.as_ref().is_some_and(|(d, u)| d == db && u == user))
    }

    pub fn console_clients(&self) -> impl Iterator<Item = &ClientSnap> {
        self.clients.iter().filter(|c| c.is_console())
    }
}
