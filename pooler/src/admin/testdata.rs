//! Constructed snapshots for the unit tests of the SHOW listings.

use std::time::Duration;

use super::snapshot::{ClientSnap, PoolSnap, Snapshot};
use crate::{
    config::{Config, PoolMode},
    pool::{PoolCounts, PoolSettings},
    stats::ClientState,
};

/// A snapshot over a config: `[pooler]` with trust auth plus `pooler_lines`, then `rest`
/// (further sections).
pub fn snapshot(pooler_lines: &str, rest: &str) -> Snapshot {
    let toml = format!("[pooler]\nauth_type = \"trust\"\n{pooler_lines}\n{rest}\n");
    Snapshot::empty(Config::parse_str(&toml, None).expect("test config"))
}

pub fn pool(db: &str, user: &str) -> PoolSnap {
    PoolSnap {
        db: db.into(),
        user: user.into(),
        counts: PoolCounts::default(),
        clients: 0,
        settings: PoolSettings {
            mode: PoolMode::Transaction,
            size: 5,
            reserve: 0,
            min: 0,
            reserve_timeout: Duration::from_secs(5),
            login_retry: Duration::from_secs(15),
            logins: 1,
            lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(600),
        },
        host: "127.0.0.1".into(),
        port: 5432,
        open: 0,
        servers: Vec::new(),
    }
}

pub fn client(id: u64, db: &str, user: &str, pool: bool) -> ClientSnap {
    ClientSnap {
        id,
        user: user.into(),
        database: db.into(),
        addr: "127.0.0.1".into(),
        port: 40000,
        local_addr: "127.0.0.1".into(),
        local_port: 6432,
        connect_time: 1,
        request_time: 1,
        wait_since: 0,
        state: ClientState::Active,
        server: 0,
        application_name: String::new(),
        stats: Default::default(),
        pool: pool.then(|| (db.to_string(), user.to_string())),
        prepared: 0,
    }
}
