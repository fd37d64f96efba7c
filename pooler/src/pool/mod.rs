//! Server connection pools, one per (database, user), shared by every worker thread.
//!
//! A pool owns the *accounting* of its server connections; the connections themselves
//! live where their state is: idle ones as plain sockets in `PoolState::idle` (movable to
//! any worker), active ones inside the client session that holds them. Every count SHOW
//! POOLS will report is the size of one of these collections, changed only under the
//! pool's lock, so reports cannot disagree with behaviour.

mod control;
pub mod limits;
mod registry;
mod server_info;
pub mod statements;
mod wait;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use futures_channel::oneshot;
pub use registry::{PoolKey, Pools};
pub use server_info::{IdleServer, ServerInfo, ServerShared, next_server_id};
pub use wait::{ConnectPermit, WaitHandle};

use crate::{config::PoolMode, server::Target};
use limits::LimitGroup;

/// The ParameterStatus set new clients of a pool are greeted with.
pub type Welcome = Arc<Vec<(String, String)>>;

/// Settings of one pool, resolved from the config (user > database > global).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: u32,
    pub reserve: u32,
    pub min: u32,
    pub reserve_timeout: Duration,
    pub login_retry: Duration,
    /// server_login_concurrency: server logins in progress at once (u32::MAX = no limit).
    pub logins: u32,
    /// server_lifetime: a server older than this is closed when next released (0 = never).
    pub lifetime: Duration,
    /// server_idle_timeout: an idle server unused this long is closed (0 = never).
    pub idle_timeout: Duration,
}

impl PoolSettings {
    /// Settings of the pool for database entry `db` and server user `user`.
    pub fn from_config(
        cfg: &crate::config::Config,
        db: &crate::config::Database,
        user: &str,
    ) -> Self {
        let g = &cfg.pooler;
        PoolSettings {
            mode: cfg.pool_mode_for(db, user),
            size: cfg.pool_size_for(db, user),
            reserve: cfg.reserve_pool_size_for(db, user),
            min: cfg.min_pool_size_for(db),
            reserve_timeout: g.reserve_pool_timeout,
            login_retry: g.server_login_retry,
            logins: match g.server_login_concurrency {
                0 => u32::MAX,
                n => n,
            },
            lifetime: db.server_lifetime.unwrap_or(g.server_lifetime),
            idle_timeout: g.server_idle_timeout,
        }
    }
}

/// What a client gets from the pool.
pub enum Grant {
    /// An idle server, now counted as active.
    Server(IdleServer),
    /// Permission to open one more server connection, counted as connecting.
    Connect(ConnectPermit),
    /// No server can be had: the last login to PostgreSQL failed with this error.
    Failed(Arc<crate::server::ServerError>),
    /// Waited query_wait_timeout without getting one.
    TimedOut,
}

/// The outcome of asking for a server without waiting.
pub enum Acquire {
    Now(Grant),
    Wait(WaitHandle),
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Grant>,
    /// Queued because a database/user group, not this pool, is full.
    starving: bool,
    since: Instant,
    /// The worker thread the client runs on.
    worker: usize,
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Records which worker the calling thread is (set once per worker thread).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

fn worker() -> usize {
    WORKER.with(|w| w.get())
}

/// How far down the queue a released server looks for a client on its own worker.
/// Handing it to one there avoids waking the other worker (a system call and a context
/// switch); looking only this far keeps the queue close to first-come, first-served.
const SAME_WORKER_LOOKAHEAD: usize = 4;

pub(crate) struct PoolState {
    settings: PoolSettings,
    /// Most recently used at the back.
    idle: Vec<IdleServer>,
    waiters: VecDeque<Waiter>,
    active: u32,
    connecting: u32,
    login_error: Option<(Instant, Arc<crate::server::ServerError>)>,
    /// PAUSE/KILL: no server is handed out; released servers are closed.
    paused: bool,
    /// Bumped by RECONNECT and by a reload that changes the connection settings: servers
    /// of an older generation are closed when released, never mid-transaction.
    generation: u64,
}

impl PoolState {
    fn total(&self) -> u32 {
        self.idle.len() as u32 + self.active + self.connecting
    }

    /// Whether one more server login may start (server_login_concurrency).
    fn login_slot(&self) -> bool {
        self.connecting < self.settings.logins
    }
}

/// Counts for monitoring (SHOW POOLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub idle: u32,
    pub active: u32,
    pub connecting: u32,
    pub waiting: u32,
}

pub struct Pool {
    pub key: PoolKey,
    /// Where new server connections go; RELOAD may swap it.
    target: Mutex<Arc<Target>>,
    db_group: Arc<LimitGroup>,
    user_group: Arc<LimitGroup>,
    state: Mutex<PoolState>,
    /// ParameterStatus values a new client is greeted with, learnt from the first server.
    welcome: Mutex<Option<Welcome>>,
    /// ClientKey/ServerKey recovered from a client's SCRAM login, for SCRAM pass-through
    /// when the auth file holds only a SCRAM secret.
    scram_keys: Mutex<Option<([u8; 32], [u8; 32])>>,
    pools: std::sync::Weak<registry::PoolsInner>,
    /// Every server connection of this pool, for SHOW SERVERS (dead ones pruned lazily).
    servers: Mutex<Vec<std::sync::Weak<ServerShared>>>,
    /// Counters of clients that have left (live clients keep their own).
    pub totals: crate::stats::Traffic,
    clients: std::sync::atomic::AtomicU32,
    /// Bumped when a schema change made prepared plans stale on one server: every server
    /// of the pool then prepares its statements again before using them.
    statements_epoch: std::sync::atomic::AtomicU64,
    /// How long queued clients waited for a server (the /metrics histogram).
    pub wait_hist: crate::metrics::WaitHistogram,
    /// When a server connection last logged in (µs since the epoch, 0 = never), for /readyz.
    last_connect_ok: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a pool lock is a bug; keep serving rather than poison
    // every later client.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// Where new server connections of this pool go.
    pub fn target(&self) -> Arc<Target> {
        lock(&self.target).clone()
    }

    /// RELOAD changed the connection settings: new connections use `target`, existing
    /// ones are closed as they are released (never mid-transaction), and new clients are
    /// greeted with the parameters of a server of the new target.
    pub fn set_target(&self, target: Arc<Target>) {
        *lock(&self.target) = target;
        *lock(&self.welcome) = None;
        self.reconnect();
    }

    pub fn add_server(&self, info: &ServerInfo) {
        let mut v = lock(&self.servers);
        if v.len() >= 64 && v.len().is_power_of_two() {
            v.retain(|w| w.strong_count() > 0);
        }
        v.push(Arc::downgrade(&info.shared));
    }

    /// The pool's live server connections.
    pub fn servers(&self) -> Vec<Arc<ServerShared>> {
        let mut v = lock(&self.servers);
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(|w| w.upgrade()).collect()
    }

    pub fn statements_epoch(&self) -> u64 {
        self.statements_epoch
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn bump_statements_epoch(&self) {
        self.statements_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn client_joined(&self) {
        self.clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A client left: its counters move into the pool's totals.
    pub fn client_left(&self, stats: &crate::stats::TrafficValues) {
        self.totals.absorb(stats);
        self.clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Logged-in clients of this pool (active or waiting).
    pub fn client_count(&self) -> u32 {
        self.clients.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A queued client got a server after `micros` µs.
    pub fn record_wait(&self, micros: u64) {
        self.wait_hist.record(micros);
    }

    /// µs since the epoch of the last successful server login (0 = never).
    pub fn last_connect_ok(&self) -> u64 {
        self.last_connect_ok
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn settings(&self) -> PoolSettings {
        lock(&self.state).settings.clone()
    }

    pub fn mode(&self) -> PoolMode {
        lock(&self.state).settings.mode
    }

    pub fn counts(&self) -> PoolCounts {
        let st = lock(&self.state);
        PoolCounts {
            idle: st.idle.len() as u32,
            active: st.active,
            connecting: st.connecting,
            waiting: st.waiters.len() as u32,
        }
    }

    pub fn welcome(&self) -> Option<Welcome> {
        lock(&self.welcome).clone()
    }

    pub fn set_welcome(&self, params: &[(String, String)]) {
        let mut w = lock(&self.welcome);
        if w.is_none() {
            *w = Some(Arc::new(params.to_vec()));
        }
    }

    pub fn scram_keys(&self) -> Option<([u8; 32], [u8; 32])> {
        *lock(&self.scram_keys)
    }

    pub fn set_scram_keys(&self, keys: ([u8; 32], [u8; 32])) {
        *lock(&self.scram_keys) = Some(keys);
    }

    fn new_permit(self: &Arc<Self>, st: &mut PoolState) -> ConnectPermit {
        st.connecting += 1;
        ConnectPermit::new(self.clone())
    }

    /// Asks for a server: an idle one (most recently used first), else permission to
    /// connect if the limits allow, else a place at the back of the FIFO queue.
    pub fn acquire(self: &Arc<Self>, client_id: u64) -> Acquire {
        let mut evicted = false;
        loop {
            let mut st = lock(&self.state);
            if st.paused {
                let (tx, rx) = oneshot::channel();
                st.waiters.push_back(Waiter {
                    id: client_id,
                    tx,
                    starving: false,
                    since: Instant::now(),
                    worker: worker(),
                });
                return Acquire::Wait(WaitHandle::new(self.clone(), client_id, rx));
            }
            if let Some(s) = st.idle.pop() {
                st.active += 1;
                return Acquire::Now(Grant::Server(s));
            }
            if st.total() == 0
                && let Some((at, err)) = &st.login_error
                && at.elapsed() < st.settings.login_retry
            {
                return Acquire::Now(Grant::Failed(err.clone()));
            }
            // With server_login_concurrency logins already in progress, the client queues:
            // it gets a server back from a transaction or the next login slot, whichever
            // comes first.
            let may_connect = st.total() < st.settings.size && st.login_slot();
            if may_connect && st.waiters.is_empty() {
                if limits::acquire_both(&self.db_group, &self.user_group) {
                    let p = self.new_permit(&mut st);
                    return Acquire::Now(Grant::Connect(p));
                }
                if !evicted {
                    // A sibling pool of the same database/user may hold idle servers
                    // that count against the group: close one to make room.
                    drop(st);
                    evicted = true;
                    if self.evict_sibling_idle() {
                        continue;
                    }
                    st = lock(&self.state);
                }
            }
            let starving = may_connect && st.waiters.is_empty();
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter {
                id: client_id,
                tx,
                starving,
                since: Instant::now(),
                worker: worker(),
            });
            if starving {
                self.db_group.add_starving();
                self.user_group.add_starving();
            }
            return Acquire::Wait(WaitHandle::new(self.clone(), client_id, rx));
        }
    }

    fn evict_sibling_idle(&self) -> bool {
        let Some(pools) = self.pools.upgrade() else {
            return false;
        };
        for p in pools.all() {
            if std::ptr::eq(Arc::as_ptr(&p), self) {
                continue;
            }
            let shares_group = Arc::ptr_eq(&p.db_group, &self.db_group)
                && self.db_group.limit() != 0
                || Arc::ptr_eq(&p.user_group, &self.user_group) && self.user_group.limit() != 0;
            if !shares_group {
                continue;
            }
            let victim = {
                let mut st = lock(&p.state);
                if st.idle.is_empty() {
                    None
                } else {
                    // Least recently used first.
                    Some(st.idle.remove(0))
                }
            };
            if let Some(v) = victim {
                drop(v);
                limits::release_both(&p.db_group, &p.user_group);
                return true;
            }
        }
        false
    }

    fn pop_waiter(&self, st: &mut PoolState) -> Option<Waiter> {
        let w = st.waiters.pop_front()?;
        if w.starving {
            self.db_group.remove_starving();
            self.user_group.remove_starving();
        }
        Some(w)
    }

    /// Gives a clean, idle server back: to the first waiter if any, else to the idle list.
    pub fn release(self: &Arc<Self>, server: IdleServer) {
        server.info.shared.set_client(0);
        server
            .info
            .shared
            .state
            .set_server(crate::stats::ServerState::Idle);
        let mut st = lock(&self.state);
        let retired = !st.settings.lifetime.is_zero()
            && server.info.created.elapsed() >= st.settings.lifetime;
        // After a RELOAD made the pool smaller, surplus servers go as they come back.
        let surplus = st.total() > st.settings.size + st.settings.reserve;
        if st.paused || retired || surplus || server.info.generation != st.generation {
            // Paused, reconnecting, shrinking or past server_lifetime: it goes away now
            // that it is free, never mid-transaction.
            drop(st);
            crate::server::close_idle(server.socket);
            self.server_closed();
            return;
        }
        st.active = st.active.saturating_sub(1);
        let mut server = server;
        let here = worker();
        if let Some(i) = st
            .waiters
            .iter()
            .take(SAME_WORKER_LOOKAHEAD)
            .position(|w| w.worker == here)
            && i > 0
        {
            // Serve the nearby client on this worker first (see SAME_WORKER_LOOKAHEAD).
            if let Some(w) = st.waiters.remove(i) {
                st.waiters.push_front(w);
            }
        }
        while let Some(w) = self.pop_waiter(&mut st) {
            st.active += 1;
            match w.tx.send(Grant::Server(server)) {
                Ok(()) => return,
                Err(Grant::Server(s)) => {
                    st.active -= 1;
                    server = s;
                }
                Err(_) => return,
            }
        }
        if self.db_group.is_starving() || self.user_group.is_starving() {
            // Another pool of the group waits for a slot this server occupies.
            drop(st);
            drop(server);
            limits::release_both(&self.db_group, &self.user_group);
            self.kick_group();
            return;
        }
        st.idle.push(server);
    }

    /// An active server went away (closed, broken, retired): its slot is free.
    pub fn server_closed(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        st.active = st.active.saturating_sub(1);
        limits::release_both(&self.db_group, &self.user_group);
        self.grant_connect(&mut st);
        drop(st);
        self.kick_group();
    }

    /// Hands free slots to queued clients as permissions to connect.
    fn grant_connect(self: &Arc<Self>, st: &mut PoolState) {
        while !st.paused
            && !st.waiters.is_empty()
            && st.total() < st.settings.size
            && st.login_slot()
        {
            if !limits::acquire_both(&self.db_group, &self.user_group) {
                return;
            }
            let Some(w) = self.pop_waiter(st) else {
                limits::release_both(&self.db_group, &self.user_group);
                return;
            };
            let permit = self.new_permit(st);
            if let Err(Grant::Connect(p)) = w.tx.send(Grant::Connect(permit)) {
                // The waiter left: undo without re-entering this lock.
                p.forget();
                st.connecting -= 1;
                limits::release_both(&self.db_group, &self.user_group);
            }
        }
    }

    /// A slot freed in this pool's groups: let sibling pools' queued clients connect.
    fn kick_group(&self) {
        let Some(pools) = self.pools.upgrade() else {
            return;
        };
        for p in pools.all() {
            let related = Arc::ptr_eq(&p.db_group, &self.db_group)
                || Arc::ptr_eq(&p.user_group, &self.user_group);
            if related {
                let mut st = lock(&p.state);
                p.grant_connect(&mut st);
            }
        }
    }

    fn permit_used(self: &Arc<Self>, info: &mut ServerInfo) {
        let mut st = lock(&self.state);
        info.generation = st.generation;
        info.shared
            .generation
            .store(st.generation, std::sync::atomic::Ordering::Relaxed);
        st.connecting = st.connecting.saturating_sub(1);
        st.active += 1;
        st.login_error = None;
        self.last_connect_ok.store(
            crate::stats::now_micros(),
            std::sync::atomic::Ordering::Relaxed,
        );
        // A login slot is free: the next queued client may start one.
        self.grant_connect(&mut st);
    }

    fn permit_failed(self: &Arc<Self>, error: Option<Arc<crate::server::ServerError>>) {
        let mut st = lock(&self.state);
        st.connecting = st.connecting.saturating_sub(1);
        limits::release_both(&self.db_group, &self.user_group);
        if let Some(err) = error {
            st.login_error = Some((Instant::now(), err.clone()));
            if st.total() == 0 {
                // Nothing will be released to them: tell every queued client now.
                while let Some(w) = self.pop_waiter(&mut st) {
                    let _ = w.tx.send(Grant::Failed(err.clone()));
                }
                return;
            }
        }
        self.grant_connect(&mut st);
        drop(st);
        self.kick_group();
    }

    /// The queue's deadlines, checked by the janitor a few times a second (so no client
    /// arms a timer of its own while it waits): clients queued longer than
    /// `query_wait_timeout` are told so; those queued longer than reserve_pool_timeout
    /// may open reserve connections while the reserve has room, oldest first.
    pub fn check_waiters(self: &Arc<Self>, query_wait_timeout: Duration) {
        let mut st = lock(&self.state);
        if st.waiters.is_empty() {
            return;
        }
        let now = Instant::now();
        if !query_wait_timeout.is_zero() {
            while st
                .waiters
                .front()
                .is_some_and(|w| now.duration_since(w.since) >= query_wait_timeout)
            {
                if let Some(w) = self.pop_waiter(&mut st) {
                    let _ = w.tx.send(Grant::TimedOut);
                }
            }
        }
        let reserve_limit = st.settings.size + st.settings.reserve;
        while st.settings.reserve > 0
            && !st.paused
            && st.total() < reserve_limit
            && st.login_slot()
            && st
                .waiters
                .front()
                .is_some_and(|w| now.duration_since(w.since) >= st.settings.reserve_timeout)
        {
            if !limits::acquire_both(&self.db_group, &self.user_group) {
                break;
            }
            let Some(w) = self.pop_waiter(&mut st) else {
                limits::release_both(&self.db_group, &self.user_group);
                break;
            };
            let permit = self.new_permit(&mut st);
            tracing::info!(pool = ?self.key, client = w.id, "using the reserve pool after waiting {:?}", now.duration_since(w.since));
            if let Err(Grant::Connect(p)) = w.tx.send(Grant::Connect(permit)) {
                p.forget();
                st.connecting -= 1;
                limits::release_both(&self.db_group, &self.user_group);
            }
        }
    }

    /// Removes a client from the queue (it left or gave up). Returns whether it was there.
    fn dequeue(&self, client_id: u64) -> bool {
        let mut st = lock(&self.state);
        let Some(idx) = st.waiters.iter().position(|w| w.id == client_id) else {
            return false;
        };
        if let Some(w) = st.waiters.remove(idx)
            && w.starving
        {
            self.db_group.remove_starving();
            self.user_group.remove_starving();
        }
        true
    }

    /// Idle servers to close: those idle longer than server_idle_timeout or older than
    /// server_lifetime (0 = never). They leave the pool's accounting here.
    pub fn take_expired(&self) -> Vec<IdleServer> {
        let mut st = lock(&self.state);
        let (idle_timeout, lifetime) = (st.settings.idle_timeout, st.settings.lifetime);
        let now = Instant::now();
        let expired = |s: &IdleServer| {
            (!idle_timeout.is_zero() && now.duration_since(s.info.last_used) >= idle_timeout)
                || (!lifetime.is_zero() && now.duration_since(s.info.created) >= lifetime)
        };
        let (out, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut st.idle).into_iter().partition(expired);
        st.idle = keep;
        for _ in &out {
            limits::release_both(&self.db_group, &self.user_group);
        }
        out
    }

    /// Permission to open one more connection towards `min_pool_size`, if the pool is
    /// below it and a login slot (server_login_concurrency) is free.
    pub fn permit_for_min(self: &Arc<Self>) -> Option<ConnectPermit> {
        let mut st = lock(&self.state);
        if st.paused
            || st.total() >= st.settings.min.min(st.settings.size)
            || !st.login_slot()
            || !limits::acquire_both(&self.db_group, &self.user_group)
        {
            return None;
        }
        Some(self.new_permit(&mut st))
    }

    /// New max_db_connections / max_user_connections (RELOAD).
    pub fn set_limits(&self, db_limit: u32, user_limit: u32) {
        self.db_group.set_limit(db_limit);
        self.user_group.set_limit(user_limit);
    }

    /// Applies new settings (RELOAD); extra idle servers beyond a smaller size are closed.
    pub fn update_settings(self: &Arc<Self>, settings: PoolSettings) {
        let mut st = lock(&self.state);
        st.settings = settings;
        while st.total() > st.settings.size + st.settings.reserve && !st.idle.is_empty() {
            st.idle.remove(0);
            limits::release_both(&self.db_group, &self.user_group);
        }
        self.grant_connect(&mut st);
    }
}

#[cfg(test)]
mod tests;
