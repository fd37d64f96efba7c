//! SHOW DATABASES (configured entries, databases opened through "*", and the console's
//! own) and SHOW USERS (configured users and those seen logging in).

use std::collections::BTreeSet;

use super::{result::row, snapshot::Snapshot};
use crate::config::Database;

row! {
    /// Types as PgBouncer 1.25 declares them.
    pub struct DatabaseRow {
        name: Text,
        host: OptText,
        port: Int4,
        database: Text,
        force_user: OptText,
        pool_size: Int4,
        min_pool_size: Int4,
        reserve_pool_size: Int4,
        server_lifetime: Int4,
        pool_mode: OptText,
        load_balance_hosts: OptText,
        max_connections: Int4,
        current_connections: Int4,
        max_client_connections: Int4,
        current_client_connections: Int4,
        paused: Int4,
        disabled: Int4,
    }
}

row! {
    /// PgBouncer sends the per-user sizes as text, empty when the user does not set them.
    pub struct UserRow {
        name: Text,
        pool_size: Text,
        reserve_pool_size: Text,
        pool_mode: OptText,
        max_user_connections: Int4,
        current_connections: Int4,
        max_user_client_connections: Int4,
        current_client_connections: Int4,
    }
}

fn database_row(snap: &Snapshot, name: &str, db: &Database) -> DatabaseRow {
    let cfg = &snap.config;
    let g = &cfg.pooler;
    let current: u32 = snap
        .pools
        .iter()
        .filter(|p| p.db == name)
        .map(|p| p.open)
        .sum();
    DatabaseRow {
        name: name.to_string(),
        host: Some(db.host.clone()),
        port: i64::from(db.port),
        database: db.dbname.clone().unwrap_or_else(|| name.to_string()),
        force_user: db.user.clone(),
        pool_size: i64::from(db.pool_size.unwrap_or(g.default_pool_size)),
        min_pool_size: i64::from(cfg.min_pool_size_for(db)),
        reserve_pool_size: i64::from(db.reserve_pool_size.unwrap_or(g.reserve_pool_size)),
        server_lifetime: db.server_lifetime.unwrap_or(g.server_lifetime).as_secs() as i64,
        pool_mode: db.pool_mode.map(|m| m.as_str().to_string()),
        load_balance_hosts: None,
        max_connections: i64::from(cfg.max_db_connections_for(db)),
        current_connections: i64::from(current),
        max_client_connections: 0,
        current_client_connections: snap
            .clients
            .iter()
            .filter(|c| c.pool.is_some() && c.database == name)
            .count() as i64,
        paused: i64::from(snap.is_paused(name)),
        disabled: i64::from(snap.disabled.contains(name)),
    }
}

pub fn databases(snap: &Snapshot) -> Vec<DatabaseRow> {
    let cfg = &snap.config;
    let mut out: Vec<DatabaseRow> = cfg
        .databases
        .iter()
        .filter(|(name, _)| name.as_str() != "*")
        .map(|(name, db)| database_row(snap, name, db))
        .collect();
    // Databases reached through the "*" entry appear once a pool exists, as PgBouncer's
    // automatically created databases do.
    let auto: BTreeSet<&str> = snap
        .pools
        .iter()
        .map(|p| p.db.as_str())
        .filter(|d| !cfg.databases.contains_key(*d))
        .collect();
    if let Some(star) = cfg.databases.get("*") {
        out.extend(auto.into_iter().map(|d| database_row(snap, d, star)));
    }
    out.push(DatabaseRow {
        name: "pgbouncer".into(),
        port: i64::from(cfg.pooler.listen_port),
        database: "pgbouncer".into(),
        force_user: Some("pgbouncer".into()),
        pool_size: 2,
        server_lifetime: cfg.pooler.server_lifetime.as_secs() as i64,
        pool_mode: Some("statement".into()),
        current_client_connections: snap.console_clients().count() as i64,
        ..Default::default()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn users(snap: &Snapshot) -> Vec<UserRow> {
    let cfg = &snap.config;
    let mut names: BTreeSet<&str> = cfg.users.keys().map(String::as_str).collect();
    names.extend(snap.pools.iter().map(|p| p.user.as_str()));
    names.extend(snap.clients.iter().map(|c| c.user.as_str()));
    names
        .into_iter()
        .map(|name| {
            let u = cfg.users.get(name);
            let text = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
            let current: u32 = snap
                .pools
                .iter()
                .filter(|p| p.user == name)
                .map(|p| p.open)
                .sum();
            UserRow {
                name: name.to_string(),
                pool_size: text(u.and_then(|u| u.pool_size)),
                reserve_pool_size: text(u.and_then(|u| u.reserve_pool_size)),
                pool_mode: u.and_then(|u| u.pool_mode).map(|m| m.as_str().to_string()),
                max_user_connections: i64::from(cfg.max_user_connections_for(name)),
                current_connections: i64::from(current),
                max_user_client_connections: 0,
                current_client_connections: snap.clients.iter().filter(|c| c.user == name).count()
                    as i64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testdata::{client, pool, snapshot};

    const DBS: &str = r#"
[databases]
app = { host = "10.0.0.1", port = 5433, dbname = "real", pool_size = 7, pool_mode = "session", user = "owner" }
"*" = { host = "127.0.0.1" }

[users]
bob = { pool_size = 3, max_user_connections = 9 }
"#;

    #[test]
    fn configured_auto_and_console_databases() {
        let mut snap = snapshot("default_pool_size = 11\nlisten_port = 7000", DBS);
        let mut p = pool("other", "bob");
        p.open = 2;
        snap.pools.push(p);
        snap.clients.push(client(1, "other", "bob", true));
        snap.clients.push(client(2, "pgbouncer", "admin", false));
        snap.disabled.insert("app".into());
        let rows = databases(&snap);
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app", "other", "pgbouncer"]);
        let app = &rows[0];
        assert_eq!(app.host.as_deref(), Some("10.0.0.1"));
        assert_eq!((app.port, app.database.as_str()), (5433, "real"));
        assert_eq!(app.force_user.as_deref(), Some("owner"));
        assert_eq!((app.pool_size, app.disabled, app.paused), (7, 1, 0));
        assert_eq!(app.pool_mode.as_deref(), Some("session"));
        assert_eq!(app.server_lifetime, 3600);
        let other = &rows[1];
        assert_eq!((other.pool_size, other.current_connections), (11, 2));
        assert_eq!(other.current_client_connections, 1);
        assert_eq!(other.pool_mode, None);
        let console = &rows[2];
        assert_eq!(
            (console.port, console.current_client_connections),
            (7000, 1)
        );
        assert_eq!(console.host, None);
    }

    #[test]
    fn users_rows() {
        let mut snap = snapshot("", DBS);
        snap.clients.push(client(1, "pgbouncer", "admin", false));
        let rows = users(&snap);
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["admin", "bob"]);
        assert_eq!(rows[0].pool_size, "");
        assert_eq!(rows[0].current_client_connections, 1);
        assert_eq!(rows[1].pool_size, "3");
        assert_eq!(rows[1].max_user_connections, 9);
    }
}
