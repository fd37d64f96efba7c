//! Operator actions on databases and clients (the admin console's control commands):
//! PAUSE/RESUME, DISABLE/ENABLE, RECONNECT, KILL, KILL_CLIENT. Each takes effect at once;
//! the ones that wait (PAUSE, WAIT_CLOSE) expose a "done?" check for the caller to await.

use std::{collections::HashSet, sync::Arc};

use crate::{app::App, pool::Pool};

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
            if db.is_none_or(|d| c.info.database == d) {
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
    /// RELOAD: re-reads the config file and the auth file. Ok carries notices for the
    /// operator (settings that need a restart, pools affected).
    pub fn reload(&self) -> Result<Vec<String>, String> {
        Err("RELOAD is not implemented yet".into())
    }

    /// SET key = value for settings that may change at run time.
    pub fn set_setting(&self, key: &str, _value: &str) -> Result<(), String> {
        Err(format!("SET {key} is not implemented yet"))
    }

    /// SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS].
    pub fn shutdown(&self, mode: ShutdownMode) -> Result<(), String> {
        match mode {
            ShutdownMode::Now => {
                self.shutdown.raise();
                Ok(())
            }
            _ => Err("SHUTDOWN WAIT_FOR_SERVERS/WAIT_FOR_CLIENTS is not implemented yet".into()),
        }
    }

    /// SUSPEND: flush and stop all traffic (for an online restart).
    pub fn suspend(&self) -> Result<(), String> {
        Err("SUSPEND is not implemented yet".into())
    }
}
