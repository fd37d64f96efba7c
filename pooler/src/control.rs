//! Operator actions on databases and clients (the admin console's control commands):
//! PAUSE/RESUME, DISABLE/ENABLE, RECONNECT, KILL, KILL_CLIENT. Each takes effect at once;
//! the ones that wait (PAUSE, WAIT_CLOSE) expose a "done?" check for the caller to await.

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
};

use crate::{
    app::App,
    auth::AuthFile,
    config::{Config, General},
    pool::{Pool, PoolSettings},
    server::Target,
};

/// Databases paused or disabled by the operator (by client-facing name; None = all).
#[derive(Debug, Default)]
pub struct DbFlags {
    pub paused_all: bool,
    pub paused: HashSet<String>,
    pub disabled: HashSet<String>,
}

impl App {
    fn pools_of(&self, db: Option<&str>) -> Result<Vec<Arc<Pool>>, String> {
        let pools: Vec<_> = self
            .pools
            .all()
            .into_iter()
            .filter(|p| db.is_none_or(|d| p.key.db == d))
            .collect();
        if let Some(d) = db
            && pools.is_empty()
            && self.config().database(d).is_none()
        {
            return Err(format!("no such database: {d}"));
        }
        Ok(pools)
    }

    /// Whether new pools of `db` start paused.
    pub fn is_paused(&self, db: &str) -> bool {
        let f = self.db_flags();
        f.paused_all || f.paused.contains(db)
    }

    pub fn is_disabled(&self, db: &str) -> bool {
        self.db_flags().disabled.contains(db)
    }

    /// PAUSE [db]: servers are released and closed as transactions end; new queries wait.
    pub fn pause(&self, db: Option<&str>) -> Result<(), String> {
        let pools = self.pools_of(db)?;
        {
            let mut f = self.db_flags();
            match db {
                Some(d) => {
                    f.paused.insert(d.to_string());
                }
                None => f.paused_all = true,
            }
        }
        for p in pools {
            p.pause();
        }
        Ok(())
    }

    /// PAUSE is complete when no server of the paused pools is open any more.
    pub fn pause_done(&self, db: Option<&str>) -> bool {
        self.pools_of(db)
            .map(|v| v.iter().all(|p| p.open_servers() == 0))
            .unwrap_or(true)
    }

    /// RESUME [db].
    pub fn resume(&self, db: Option<&str>) -> Result<(), String> {
        let pools = self.pools_of(db)?;
        {
            let mut f = self.db_flags();
            match db {
                Some(d) => {
                    if !f.paused_all && !f.paused.contains(d) {
                        return Err(format!("database {d} is not paused"));
                    }
                    f.paused.remove(d);
                }
                None => {
                    f.paused_all = false;
                    f.paused.clear();
                }
            }
        }
        for p in pools {
            if !self.is_paused(&p.key.db) {
                p.resume();
            }
        }
        Ok(())
    }

    /// DISABLE db: new clients of db are refused; connected ones carry on.
    pub fn disable(&self, db: &str) -> Result<(), String> {
        self.pools_of(Some(db))?;
        self.db_flags().disabled.insert(db.to_string());
        Ok(())
    }

    pub fn enable(&self, db: &str) -> Result<(), String> {
        self.pools_of(Some(db))?;
        self.db_flags().disabled.remove(db);
        Ok(())
    }

    /// RECONNECT [db]: every server connection is replaced, each when it is next free.
    pub fn reconnect(&self, db: Option<&str>) -> Result<(), String> {
        for p in self.pools_of(db)? {
            p.reconnect();
        }
        Ok(())
    }

    /// WAIT_CLOSE is complete when no server from before RECONNECT/RELOAD remains.
    pub fn wait_close_done(&self, db: Option<&str>) -> bool {
        self.pools_of(db)
            .map(|v| v.iter().all(|p| p.old_servers() == 0))
            .unwrap_or(true)
    }

    /// KILL [db]: every client of db is disconnected and its servers closed at once; the
    /// database stays paused until RESUME.
    pub fn kill(&self, db: Option<&str>) -> Result<(), String> {
        self.pause(db)?;
        for c in self.clients.all() {
            // Console sessions (no pool) are not the database's clients: PgBouncer spares
            // them too, so the operator keeps the console that issued KILL.
            if c.pool.get().is_some() && db.is_none_or(|d| c.info.database == d) {
                c.kill("terminating connection due to administrator command (KILL)");
            }
        }
        Ok(())
    }

    /// KILL_CLIENT id: disconnects one client (the id SHOW CLIENTS shows).
    pub fn kill_client(&self, id: u64) -> Result<(), String> {
        let c = self
            .clients
            .all()
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("no such client: {id}"))?;
        c.kill("terminating connection due to administrator command (KILL_CLIENT)");
        Ok(())
    }
}

/// How SHUTDOWN stops the pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SHUTDOWN: at once.
    Now,
    /// SHUTDOWN WAIT_FOR_SERVERS: stop accepting, wait until every server is released.
    WaitForServers,
    /// SHUTDOWN WAIT_FOR_CLIENTS: stop accepting, wait until every client has left.
    WaitForClients,
}

impl App {
    /// RELOAD: re-reads the config file and the auth file and applies them without
    /// dropping any client. Ok carries notices for the operator; on any error nothing
    /// changes and the error names the file, key and problem.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let old = self.config();
        let path = old
            .path
            .clone()
            .ok_or("the running configuration was not read from a file")?;
        let new = Config::load(&path).map_err(|e| e.to_string())?;
        self.apply(new)
    }

    /// Validates and installs `new` in place of the running configuration.
    pub(crate) fn apply(&self, mut new: Config) -> Result<Vec<String>, String> {
        let old = self.config();
        let auth_file = match &new.pooler.auth_file {
            Some(p) => Some(AuthFile::load(p).map_err(|e| format!("pooler.auth_file: {e}"))?),
            None => None,
        };
        let mut notices = keep_restart_only(&old.pooler, &mut new.pooler);
        for pool in self.pools.all() {
            let Some((_, db)) = new.database(&pool.key.db) else {
                if old.database(&pool.key.db).is_some() {
                    notices.push(format!(
                        "database {} is no longer configured: new clients are refused, connected ones may finish",
                        pool.key.db
                    ));
                }
                continue;
            };
            let target = Target::from_config(&new.pooler, db, &pool.key.db, &pool.key.user);
            if target != *pool.target() {
                notices.push(format!(
                    "database {} (user {}): connection settings changed; servers are replaced as they are released",
                    pool.key.db, pool.key.user
                ));
                pool.set_target(Arc::new(target));
            }
            pool.update_settings(PoolSettings::from_config(&new, db, &pool.key.user));
            pool.set_limits(
                new.max_db_connections_for(db),
                new.max_user_connections_for(&pool.key.user),
            );
        }
        self.install(new, auth_file);
        Ok(notices)
    }

    /// SET key = value for a `[pooler]` setting that may change at run time (SHOW
    /// CONFIG's `changeable` column): validated with the file's rules, applied like a
    /// RELOAD. Settings that need a restart are refused, naming them.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), String> {
        let key = key.trim().to_ascii_lowercase();
        if !crate::config::is_pooler_key(&key) {
            return Err(format!("unknown setting: {key}"));
        }
        if RESTART_ONLY.contains(&key.as_str()) {
            return Err(format!(
                "{key} cannot be changed at run time; change the file and restart"
            ));
        }
        let new = self
            .config()
            .with_setting(&key, value)
            .map_err(|e| e.to_string())?;
        for n in self.apply(new)? {
            tracing::info!("SET {key}: {n}");
        }
        Ok(())
    }

    /// SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS], and the signals (PgBouncer's
    /// semantics): new connections are refused at once; then the pooler exits when the
    /// condition holds. `Now` tells every client why before closing it. A later call with
    /// `Now` overrides a wait in progress (a second SIGTERM).
    pub fn shutdown(self: &Arc<Self>, mode: ShutdownMode) -> Result<(), String> {
        self.stop_accepting.raise();
        if mode == ShutdownMode::WaitForServers {
            // PgBouncer's SIGINT: PAUSE, then exit once every server is released.
            let _ = self.pause(None);
        }
        let app = self.clone();
        std::thread::Builder::new()
            .name("pooler-shutdown".into())
            .spawn(move || app.shutdown_when(mode))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn shutdown_when(&self, mode: ShutdownMode) {
        let step = std::time::Duration::from_millis(20);
        if mode == ShutdownMode::Now {
            for c in self.clients.all() {
                c.kill("the pooler is shutting down");
            }
            // Let sessions send their error; do not wait on a client that does not read.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while self.clients.connected() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(step);
            }
            self.shutdown.raise();
            return;
        }
        tracing::info!(
            "shutting down: waiting for {}",
            if mode == ShutdownMode::WaitForClients {
                "clients to leave"
            } else {
                "servers to be released"
            }
        );
        loop {
            if self.shutdown.is_raised() {
                return;
            }
            let done = match mode {
                ShutdownMode::WaitForClients => {
                    // Clients still logging in count: they were accepted before the
                    // listeners closed and are owed a session.
                    self.clients.arriving() == 0
                        && !self.clients.all().iter().any(|c| c.pool.get().is_some())
                }
                _ => self.pause_done(None),
            };
            if done {
                self.shutdown.raise();
                return;
            }
            std::thread::sleep(step);
        }
    }

    /// SUSPEND (PgBouncer's): every client session flushes what it already owes to its
    /// client and server, then reads nothing from either until RESUME. Console sessions
    /// carry on, so RESUME can be sent.
    pub fn suspend(&self) -> Result<(), String> {
        if self.suspended.swap(true, Ordering::AcqRel) {
            return Err("already suspended".into());
        }
        let timeout = self.config().pooler.suspend_timeout;
        *self
            .suspend_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) =
            (!timeout.is_zero()).then(|| std::time::Instant::now() + timeout);
        for c in self.clients.all() {
            c.parked.store(false, Ordering::SeqCst);
            c.wake();
        }
        Ok(())
    }

    /// SUSPEND is complete when every client session has flushed its buffers and parked.
    /// Once suspend_timeout has passed, the sessions still flushing are woken to drop
    /// their connections.
    pub fn suspend_done(&self) -> bool {
        let expired = self.suspend_expired();
        let mut done = true;
        for c in self.clients.all() {
            if c.pool.get().is_some() && !c.parked.load(Ordering::SeqCst) {
                done = false;
                if expired {
                    c.wake();
                }
            }
        }
        done
    }

    /// RESUME after SUSPEND: sessions read again. False when the pooler was not suspended.
    pub fn unsuspend(&self) -> bool {
        if !self.suspended.swap(false, Ordering::AcqRel) {
            return false;
        }
        *self
            .suspend_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        for c in self.clients.all() {
            c.wake();
        }
        true
    }
}

/// Settings that only take effect at start: a reload keeps their running values and says so.
fn keep_restart_only(old: &General, new: &mut General) -> Vec<String> {
    let mut notices = Vec::new();
    macro_rules! keep {
        ($($f:ident),*) => {$(
            if new.$f != old.$f {
                notices.push(format!(
                    "pooler.{}: changed in the file, but takes effect only at restart; keeping {:?}",
                    stringify!($f),
                    old.$f
                ));
                new.$f = old.$f.clone();
            }
        )*};
    }
    keep!(
        listen_addr,
        listen_port,
        unix_socket_dir,
        unix_socket_mode,
        listen_backlog,
        so_reuseport,
        workers,
        io_backend,
        recv_ring_buffers,
        pkt_buf,
        log_level,
        metrics_addr,
        ebpf,
        ebpf_rtt_samples,
        ebpf_pin_path
    );
    notices
}

/// The `[pooler]` keys `keep_restart_only` protects (SHOW CONFIG: changeable = no).
pub const RESTART_ONLY: [&str; 15] = [
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "unix_socket_mode",
    "listen_backlog",
    "so_reuseport",
    "workers",
    "io_backend",
    "recv_ring_buffers",
    "pkt_buf",
    "log_level",
    "metrics_addr",
    "ebpf",
    "ebpf_rtt_samples",
    "ebpf_pin_path",
];
