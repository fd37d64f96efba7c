//! Operator actions on one pool (PAUSE/RESUME, RECONNECT, KILL), used by the admin
//! console and by RELOAD. Servers are closed when free, never mid-transaction.

use std::sync::{Arc, atomic::Ordering};

use super::{Pool, PoolState, lock};
use crate::server;

impl Pool {
    fn close_idle_locked(&self, st: &mut PoolState) {
        for s in std::mem::take(&mut st.idle) {
            super::limits::release_both(&self.db_group, &self.user_group);
            server::close_idle(s.socket);
        }
    }

    /// PAUSE: no server is handed out any more (clients queue); idle servers close now,
    /// active ones as their transactions end.
    pub fn pause(&self) {
        let mut st = lock(&self.state);
        st.paused = true;
        self.close_idle_locked(&mut st);
    }

    /// RESUME: queued clients get servers again.
    pub fn resume(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        st.paused = false;
        self.grant_connect(&mut st);
    }

    pub fn is_paused(&self) -> bool {
        lock(&self.state).paused
    }

    /// Server connections still open (active, being opened or idle).
    pub fn open_servers(&self) -> u32 {
        lock(&self.state).total()
    }

    /// RECONNECT: every current server is replaced, idle ones now, active ones when
    /// released.
    pub fn reconnect(&self) {
        let mut st = lock(&self.state);
        st.generation += 1;
        self.close_idle_locked(&mut st);
    }

    /// The current generation (servers of older ones close when released).
    pub fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// Servers of an older generation still open (WAIT_CLOSE waits for none).
    pub fn old_servers(&self) -> usize {
        let current = lock(&self.state).generation;
        self.servers()
            .iter()
            .filter(|s| s.generation.load(Ordering::Relaxed) < current)
            .count()
    }
}
