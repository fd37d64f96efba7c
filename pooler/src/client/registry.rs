//! Every logged-in client's cancel key, so a CancelRequest arriving on any worker can find
//! the client and the server currently serving it.
//!
//! The link between a client and its server is published with plain atomics, written once
//! when a server is linked and once when it is released, so the per-transaction hot path
//! takes no lock. A cancel must never reach a server after it has moved on to another
//! client (PgBouncer's test_cancel_race): the canceller increments `cancels_in_flight`
//! *before* reading the link, and the session clears the link *before* reading
//! `cancels_in_flight`; with sequentially consistent ordering at least one of them sees
//! the other, so either the canceller finds no server, or the session waits for the
//! cancel to be delivered before giving the server back.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::Context,
};

use futures_util::task::AtomicWaker;

use crate::{
    app::App,
    pool::Pool,
    stats::{ClientState, StateCell, Traffic},
};

const SHARDS: usize = 16;

/// Who a client is, fixed at login.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The user the client logged in as.
    pub user: String,
    /// The database name the client asked for.
    pub database: String,
    /// Peer address ("unix" for the Unix socket) and port (0 for the Unix socket).
    pub addr: String,
    pub port: u16,
    pub local_addr: String,
    pub local_port: u16,
    /// Login time, µs since the epoch.
    pub connect_time: u64,
    /// SO_COOKIE of the client's socket (the key of eBPF per-connection maps).
    pub cookie: u64,
}

impl ClientInfo {
    /// The peer as the accept saw it: `ip:port` (`[ip]:port` for IPv6), or `unix`.
    pub fn peer(&self) -> String {
        match self.addr.parse::<std::net::IpAddr>() {
            Ok(ip) if self.port != 0 => std::net::SocketAddr::new(ip, self.port).to_string(),
            _ => self.addr.clone(),
        }
    }
}

/// The part of a client session other threads may touch.
pub struct ClientShared {
    pub id: u64,
    pub info: ClientInfo,
    pub application_name: Mutex<String>,
    pub state: StateCell,
    /// Traffic counters, written only by the client's own worker.
    pub stats: Traffic,
    /// Id of the linked server (0 = none), for SHOW CLIENTS' link column.
    pub server: AtomicU64,
    /// When the client started waiting for a server / sent its last request (µs since
    /// the epoch).
    pub wait_since: AtomicU64,
    pub request_time: AtomicU64,
    /// Named prepared statements it holds (SHOW CLIENTS prepared_statements).
    pub prepared: AtomicU64,
    /// Our BackendKeyData for this client.
    pub pid: i32,
    pub secret: i32,
    /// BackendKeyData of the linked server, packed (pid << 32 | secret); 0 = none.
    linked: AtomicU64,
    cancels_in_flight: AtomicU32,
    /// Set by a cancel aimed at this client while it waits in a pool's queue.
    wait_cancelled: AtomicBool,
    /// Set by KILL/KILL_CLIENT: the session ends with this reason.
    killed: Mutex<Option<String>>,
    /// Whether `killed` holds a reason: checked on every poll without taking the lock.
    kill_flag: AtomicBool,
    waker: AtomicWaker,
    pub pool: OnceLock<Arc<Pool>>,
    /// Set by the session once it has flushed everything under SUSPEND.
    pub parked: AtomicBool,
}

fn pack(pid: i32, secret: i32) -> u64 {
    ((pid as u32 as u64) << 32) | secret as u32 as u64
}

impl ClientShared {
    pub fn set_linked(&self, pid: i32, secret: i32) {
        self.linked.store(pack(pid, secret), Ordering::SeqCst);
    }

    /// Clears the link; returns true if a cancel is still being delivered to the old
    /// server, in which case the server must not be released yet.
    pub fn clear_linked(&self) -> bool {
        self.linked.store(0, Ordering::SeqCst);
        self.cancels_in_flight.load(Ordering::SeqCst) > 0
    }

    pub fn cancels_pending(&self) -> bool {
        self.cancels_in_flight.load(Ordering::SeqCst) > 0
    }

    /// Registers the session's waker for "cancel delivered" and "wait cancelled".
    pub fn register(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Starts a cancel: returns the linked server's key, or None (nothing to cancel on a
    /// server). A returned key must be followed by `cancel_done`.
    pub fn begin_cancel(&self) -> Option<(i32, i32)> {
        self.cancels_in_flight.fetch_add(1, Ordering::SeqCst);
        let v = self.linked.load(Ordering::SeqCst);
        if v == 0 {
            self.cancel_done();
            return None;
        }
        Some(((v >> 32) as u32 as i32, v as u32 as i32))
    }

    /// A cancel the session itself sends (its client left mid-query) is in flight.
    pub fn cancel_started(&self) {
        self.cancels_in_flight.fetch_add(1, Ordering::SeqCst);
    }

    pub fn cancel_done(&self) {
        self.cancels_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Marks the client's wait in a queue as cancelled and wakes the session.
    pub fn cancel_wait(&self) {
        self.wait_cancelled.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub fn take_wait_cancelled(&self) -> bool {
        self.wait_cancelled.swap(false, Ordering::SeqCst)
    }

    /// Ends the session from another thread (admin KILL, shutdown).
    pub fn kill(&self, reason: &str) {
        if let Ok(mut k) = self.killed.lock()
            && k.is_none()
        {
            *k = Some(reason.to_string());
        }
        self.kill_flag.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Wakes the session (SUSPEND and RESUME).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Checked on every poll of the session: a plain load first, the swap only when set.
    pub fn take_killed(&self) -> Option<String> {
        if !self.kill_flag.load(Ordering::Acquire) || !self.kill_flag.swap(false, Ordering::SeqCst)
        {
            return None;
        }
        self.killed.lock().ok().and_then(|mut k| k.take())
    }
}

/// Registry of logged-in clients by cancel key, sharded to keep connects on different
/// workers from contending.
pub struct ClientRegistry {
    shards: Vec<Mutex<HashMap<i32, Arc<ClientShared>>>>,
    next_id: AtomicU64,
    /// Client connections currently admitted (for max_client_conn).
    connected: AtomicU32,
    /// Connections accepted and not yet logged in (or refused): a graceful shutdown waits
    /// for them as for logged-in clients.
    arriving: AtomicU32,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        ClientRegistry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            connected: AtomicU32::new(0),
            arriving: AtomicU32::new(0),
        }
    }
}

/// A counted client connection; uncounted on drop. Owned (not a borrow of the
/// registry), so it can move into the session's own task.
pub struct Admission {
    app: Arc<App>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.app.clients.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a client against `max_client_conn`; None when the limit is reached.
pub fn admit(app: &Arc<App>, max: u32) -> Option<Admission> {
    app.clients
        .connected
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c < max).then_some(c + 1)
        })
        .ok()
        .map(|_| Admission { app: app.clone() })
}

impl ClientRegistry {
    /// Counts a connection as arriving; [`ClientRegistry::arrived`] uncounts it.
    pub fn arrive(&self) {
        self.arriving.fetch_add(1, Ordering::AcqRel);
    }

    pub fn arrived(&self) {
        self.arriving.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections in their startup or login right now.
    pub fn arriving(&self) -> u32 {
        self.arriving.load(Ordering::Acquire)
    }

    fn shard(&self, pid: i32) -> &Mutex<HashMap<i32, Arc<ClientShared>>> {
        &self.shards[pid as u32 as usize % SHARDS]
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn connected(&self) -> u32 {
        self.connected.load(Ordering::Acquire)
    }

    /// Every logged-in client.
    pub fn all(&self) -> Vec<Arc<ClientShared>> {
        let mut v: Vec<Arc<ClientShared>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Registers a client under a fresh random cancel key.
    pub fn register(
        &self,
        id: u64,
        info: ClientInfo,
        application_name: String,
    ) -> Arc<ClientShared> {
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            let secret = rand::random::<i32>();
            if pid == 0 {
                continue;
            }
            let mut shard = self.shard(pid).lock().unwrap_or_else(|e| e.into_inner());
            if shard.contains_key(&pid) {
                continue;
            }
            let c = Arc::new(ClientShared {
                id,
                info: info.clone(),
                application_name: Mutex::new(application_name.clone()),
                state: StateCell::default(),
                stats: Traffic::default(),
                server: AtomicU64::new(0),
                wait_since: AtomicU64::new(0),
                request_time: AtomicU64::new(info.connect_time),
                prepared: AtomicU64::new(0),
                pid,
                secret,
                linked: AtomicU64::new(0),
                cancels_in_flight: AtomicU32::new(0),
                wait_cancelled: AtomicBool::new(false),
                killed: Mutex::new(None),
                kill_flag: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                pool: OnceLock::new(),
                parked: AtomicBool::new(false),
            });
            c.state.set_client(ClientState::Active);
            shard.insert(pid, c.clone());
            return c;
        }
    }

    pub fn unregister(&self, c: &ClientShared) {
        let mut shard = self.shard(c.pid).lock().unwrap_or_else(|e| e.into_inner());
        shard.remove(&c.pid);
    }

    /// The client a CancelRequest names, if the secret matches.
    pub fn find(&self, pid: i32, secret: i32) -> Option<Arc<ClientShared>> {
        let shard = self.shard(pid).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(&pid).filter(|c| c.secret == secret).cloned()
    }
}
