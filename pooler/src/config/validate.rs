//! Checks that involve more than one key, run after every key was parsed on its own.
//!
//! A check is skipped when one of its keys was already refused: the operator should see the
//! real mistake once, not a second error caused by the default that stood in for it.

use super::extract::Collector;
use super::{Config, Database};

/// Database names the admin console answers to; a pool with that name could never be reached.
const RESERVED_DATABASE_NAMES: [&str; 2] = ["pgbouncer", "pooler"];

/// Run every cross-key check, recording each failure.
pub(super) fn check(c: &mut Collector, config: &Config) {
    check_auth(c, config);
    check_listeners(c, config);
    check_global_pool_sizes(c, config);
    for (name, db) in &config.databases {
        check_database(c, config, name, db);
    }
    for name in config.users.keys() {
        if name.trim().is_empty() {
            c.error("users", "a user name must not be empty");
        }
    }
}

/// Password-checking auth types need the file the passwords come from.
fn check_auth(c: &mut Collector, config: &Config) {
    let g = &config.pooler;
    if c.failed("pooler.auth_type") || c.failed("pooler.auth_file") {
        return;
    }
    if g.auth_type.needs_auth_file() && g.auth_file.is_none() {
        c.error(
            "pooler.auth_file",
            format!(
                "auth_type {} checks passwords, so auth_file must name the userlist file \
                 (or set auth_type = \"trust\")",
                g.auth_type
            ),
        );
    }
}

/// With no TCP address and no Unix socket, no client could ever connect.
fn check_listeners(c: &mut Collector, config: &Config) {
    let g = &config.pooler;
    if c.failed("pooler.listen_addr") || c.failed("pooler.unix_socket_dir") {
        return;
    }
    if g.listen_addr.is_empty() && g.unix_socket_dir.is_none() {
        c.error(
            "pooler.listen_addr",
            "no TCP address and unix_socket_dir is \"\": nothing to accept clients on",
        );
    }
}

fn check_global_pool_sizes(c: &mut Collector, config: &Config) {
    let g = &config.pooler;
    if c.failed("pooler.min_pool_size") || c.failed("pooler.default_pool_size") {
        return;
    }
    if g.min_pool_size > g.default_pool_size {
        c.error(
            "pooler.min_pool_size",
            format!(
                "min_pool_size ({}) is larger than default_pool_size ({})",
                g.min_pool_size, g.default_pool_size
            ),
        );
    }
}

fn check_database(c: &mut Collector, config: &Config, name: &str, db: &Database) {
    let prefix = format!("databases.{name}");
    if name.trim().is_empty() {
        c.error("databases", "a database name must not be empty");
    }
    if RESERVED_DATABASE_NAMES.contains(&name) {
        c.error(
            &prefix,
            format!("the database name {name:?} is reserved for the admin console"),
        );
    }

    // The minimum that applies to this entry must fit in the pool size that applies to it.
    let min_key = if db.min_pool_size.is_some() {
        format!("{prefix}.min_pool_size")
    } else {
        "pooler.min_pool_size".to_owned()
    };
    let size_key = if db.pool_size.is_some() {
        format!("{prefix}.pool_size")
    } else {
        "pooler.default_pool_size".to_owned()
    };
    let global_only = db.min_pool_size.is_none() && db.pool_size.is_none();
    let refused = [
        min_key.as_str(),
        size_key.as_str(),
        &format!("{prefix}.min_pool_size"),
        &format!("{prefix}.pool_size"),
    ]
    .iter()
    .any(|k| c.failed(k));
    if global_only || refused {
        // Both from [pooler] (already checked once globally), or a value was refused.
        return;
    }
    let min = config.min_pool_size_for(db);
    let size = db.pool_size.unwrap_or(config.pooler.default_pool_size);
    if min > size {
        // Name the key this entry set, since that is the one to change.
        let key = if db.min_pool_size.is_some() {
            &min_key
        } else {
            &size_key
        };
        c.error(
            key,
            format!("min_pool_size ({min}) is larger than the pool size ({size}) of this database"),
        );
    }
}
