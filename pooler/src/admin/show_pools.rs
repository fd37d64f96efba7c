//! SHOW POOLS: one row per (database, user) pool, plus the console's own pseudo-pool as
//! PgBouncer lists it (database and user "pgbouncer", statement mode).

use super::{
    result::row,
    snapshot::{PoolSnap, Snapshot},
};
use crate::stats::{ClientState, ServerState};

row! {
    /// Types as PgBouncer 1.25 declares them: names text, counts int4.
    pub struct PoolRow {
        database: Text,
        user: Text,
        cl_active: Int4,
        cl_waiting: Int4,
        cl_active_cancel_req: Int4,
        cl_waiting_cancel_req: Int4,
        sv_active: Int4,
        sv_active_cancel: Int4,
        sv_being_canceled: Int4,
        sv_idle: Int4,
        sv_used: Int4,
        sv_tested: Int4,
        sv_login: Int4,
        maxwait: Int4,
        maxwait_us: Int4,
        pool_mode: Text,
        load_balance_hosts: OptText,
    }
}

/// How long the longest-waiting client of the pool has waited, in µs.
fn max_wait(snap: &Snapshot, p: &PoolSnap) -> u64 {
    snap.pool_clients(&p.db, &p.user)
        .filter(|c| c.state == ClientState::Waiting && c.wait_since != 0)
        .map(|c| snap.now.saturating_sub(c.wait_since))
        .max()
        .unwrap_or(0)
}

fn pool_row(snap: &Snapshot, p: &PoolSnap) -> PoolRow {
    // Servers being cleaned after their client left count as "used", not "active".
    let used = p
        .servers
        .iter()
        .filter(|s| s.state == ServerState::Used)
        .count() as u32;
    let wait = max_wait(snap, p);
    PoolRow {
        database: p.db.clone(),
        user: p.user.clone(),
        cl_active: i64::from(p.clients.saturating_sub(p.counts.waiting)),
        cl_waiting: i64::from(p.counts.waiting),
        sv_active: i64::from(p.counts.active.saturating_sub(used)),
        sv_idle: i64::from(p.counts.idle),
        sv_used: i64::from(used.min(p.counts.active)),
        sv_login: i64::from(p.counts.connecting),
        maxwait: (wait / 1_000_000) as i64,
        maxwait_us: (wait % 1_000_000) as i64,
        pool_mode: p.settings.mode.as_str().to_string(),
        ..Default::default()
    }
}

pub fn rows(snap: &Snapshot) -> Vec<PoolRow> {
    let mut out = vec![PoolRow {
        database: "pgbouncer".into(),
        user: "pgbouncer".into(),
        cl_active: snap.console_clients().count() as i64,
        pool_mode: "statement".into(),
        ..Default::default()
    }];
    out.extend(snap.pools.iter().map(|p| pool_row(snap, p)));
    out.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        admin::{
            snapshot::ServerSnap,
            testdata::{client, pool, snapshot},
        },
        pool::PoolCounts,
    };

    #[test]
    fn counts_and_maxwait() {
        let mut snap = snapshot("", "");
        snap.now = 10_500_000;
        let mut p = pool("app", "bob");
        p.counts = PoolCounts {
            idle: 2,
            active: 3,
            connecting: 1,
            waiting: 1,
        };
        p.clients = 4;
        p.servers.push(ServerSnap {
            id: 1,
            pid: 0,
            connect_time: 1,
            request_time: 1,
            local_addr: String::new(),
            local_port: 0,
            state: ServerState::Used,
            client: 0,
            prepared: 0,
        });
        snap.pools.push(p);
        let mut waiting = client(7, "app", "bob", true);
        waiting.state = ClientState::Waiting;
        waiting.wait_since = 8_250_000;
        snap.clients.push(waiting);
        snap.clients.push(client(8, "pgbouncer", "admin", false));
        let rows = rows(&snap);
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!((r.database.as_str(), r.user.as_str()), ("app", "bob"));
        assert_eq!((r.cl_active, r.cl_waiting), (3, 1));
        assert_eq!(
            (r.sv_active, r.sv_used, r.sv_idle, r.sv_login),
            (2, 1, 2, 1)
        );
        assert_eq!((r.maxwait, r.maxwait_us), (2, 250_000));
        assert_eq!(r.pool_mode, "transaction");
        assert_eq!(r.load_balance_hosts, None);
        assert_eq!(rows[1].database, "pgbouncer");
        assert_eq!(rows[1].cl_active, 1);
    }
}
