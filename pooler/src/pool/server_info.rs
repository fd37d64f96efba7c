//! What the pooler knows about one server connection, independent of the thread it is on.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use socket2::Socket;

use crate::stats::{ServerState, StateCell, now_micros};

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_server_id() -> u64 {
    NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed)
}

/// The part of a server connection the admin console reads (SHOW SERVERS), from any
/// thread. Lives as long as the connection; pools keep weak references to list them.
#[derive(Debug)]
pub struct ServerShared {
    pub id: u64,
    pub pid: AtomicU64,
    pub connect_time: u64,
    pub local_addr: String,
    pub state: StateCell,
    /// Id of the client it is linked to (0 = none).
    pub client: AtomicU64,
    /// When it was last assigned to a client (µs since the epoch).
    pub request_time: AtomicU64,
    /// The pool generation it belongs to (see `Pool::reconnect`).
    pub generation: AtomicU64,
    /// SO_COOKIE of the server socket (the key of eBPF per-connection maps).
    pub cookie: AtomicU64,
    /// Prepared statements it holds (SHOW SERVERS prepared_statements).
    pub prepared: AtomicU64,
}

impl ServerShared {
    pub fn new(id: u64, local_addr: String) -> Arc<ServerShared> {
        let now = now_micros();
        let s = ServerShared {
            id,
            pid: AtomicU64::new(0),
            connect_time: now,
            local_addr,
            state: StateCell::default(),
            client: AtomicU64::new(0),
            request_time: AtomicU64::new(now),
            generation: AtomicU64::new(0),
            cookie: AtomicU64::new(0),
            prepared: AtomicU64::new(0),
        };
        s.state.set_server(ServerState::Login);
        Arc::new(s)
    }

    /// Linked to `client` (0 = released).
    pub fn set_client(&self, client: u64) {
        self.client.store(client, Ordering::Relaxed);
        if client != 0 {
            self.state.set_server(ServerState::Active);
            self.request_time.store(now_micros(), Ordering::Relaxed);
        }
    }
}

/// Facts about a server connection that travel with it between threads.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub id: u64,
    pub shared: Arc<ServerShared>,
    /// The server's current values of reported (and pooler-set) parameters.
    pub params: Vec<(String, String)>,
    /// BackendKeyData: what a CancelRequest for this server must carry.
    pub pid: i32,
    pub secret: i32,
    pub created: Instant,
    pub last_used: Instant,
    /// The pool generation it was opened in (see `Pool::reconnect`).
    pub generation: u64,
    /// Prepared statements it holds under the pooler's names.
    pub prepared: super::statements::ServerStatements,
    /// Fingerprint of the client parameters last brought in line on this server, while
    /// none of its parameters changed since (0 = none): a client with the same
    /// fingerprint needs no comparison at all.
    pub synced: u64,
}

impl ServerInfo {
    /// A fresh record for a connection being opened now.
    pub fn new(local_addr: String) -> ServerInfo {
        let id = next_server_id();
        let now = Instant::now();
        ServerInfo {
            id,
            shared: ServerShared::new(id, local_addr),
            params: Vec::new(),
            pid: 0,
            secret: 0,
            created: now,
            last_used: now,
            generation: 0,
            prepared: Default::default(),
            synced: 0,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_param(&mut self, name: &str, value: &str) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) if slot.1 == value => return,
            Some(slot) => slot.1 = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
        self.synced = 0;
    }
}

/// An idle server connection: a plain socket (movable to any worker) and its facts.
#[derive(Debug)]
pub struct IdleServer {
    pub socket: Socket,
    pub info: ServerInfo,
}
