//! State shared by every worker: configuration, auth file, pools and the client registry.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::{
    auth::AuthFile, client::registry::ClientRegistry, config::Config, net::Backend, pool::Pools,
    shutdown::Shutdown,
};

pub struct App {
    config: RwLock<Arc<Config>>,
    auth_file: RwLock<Option<Arc<AuthFile>>>,
    pub pools: Pools,
    pub clients: ClientRegistry,
    pub backend: Backend,
    /// Raised when the pooler is to exit.
    pub shutdown: Shutdown,
    /// Raised when new connections are to be refused (shutdown in progress).
    pub stop_accepting: Shutdown,
    db_flags: Mutex<crate::control::DbFlags>,
    config_generation: std::sync::atomic::AtomicU64,
    pub periodic: crate::stats::periodic::Periodic,
    /// Per-worker counters for /metrics, indexed by worker number.
    pub workers: Box<[crate::metrics::WorkerStats]>,
    /// Kernel-side socket statistics (eBPF), or why there are none.
    pub kernel: crate::kernel::Kernel,
    /// SUSPEND: sessions flush what they owe and then read nothing until RESUME.
    pub(crate) suspended: std::sync::atomic::AtomicBool,
    /// When a session that has not flushed by then is dropped (suspend_timeout).
    pub(crate) suspend_deadline: Mutex<Option<std::time::Instant>>,
}

impl App {
    pub fn new(config: Config, auth_file: Option<AuthFile>, backend: Backend) -> Arc<App> {
        let workers = crate::metrics::WorkerStats::for_workers(config.pooler.worker_count());
        Arc::new(App {
            config: RwLock::new(Arc::new(config)),
            auth_file: RwLock::new(auth_file.map(Arc::new)),
            pools: Pools::new(),
            clients: ClientRegistry::default(),
            backend,
            shutdown: Shutdown::new(),
            stop_accepting: Shutdown::new(),
            db_flags: Mutex::new(Default::default()),
            config_generation: Default::default(),
            periodic: Default::default(),
            workers,
            kernel: Default::default(),
            suspended: Default::default(),
            suspend_deadline: Mutex::new(None),
        })
    }

    /// The configuration in force (a snapshot: a reload swaps it, holders keep theirs).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn db_flags(&self) -> MutexGuard<'_, crate::control::DbFlags> {
        self.db_flags.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bumped at every successful reload, so sessions can refresh their snapshot cheaply.
    pub fn config_generation(&self) -> u64 {
        self.config_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Installs a new configuration and auth file (RELOAD, SET).
    pub(crate) fn install(&self, config: Config, auth_file: Option<AuthFile>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        *self.auth_file.write().unwrap_or_else(|e| e.into_inner()) = auth_file.map(Arc::new);
        self.config_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether SUSPEND has waited suspend_timeout for the sessions to flush.
    pub fn suspend_expired(&self) -> bool {
        self.suspend_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| std::time::Instant::now() >= d)
    }

    pub fn auth_file(&self) -> Option<Arc<AuthFile>> {
        self.auth_file
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
