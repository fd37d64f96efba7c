//! `[databases]` and `[users]`: inline tables, or PgBouncer's libpq-style strings.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::extract::{Collector, type_name};
use super::{Database, PoolMode, UserConfig};

/// Every field a `[databases]` entry accepts (`force_user` and `reserve_pool` are PgBouncer's
/// spellings of `user` and `reserve_pool_size`).
const DATABASE_FIELDS: [&str; 19] = [
    "host",
    "port",
    "dbname",
    "user",
    "force_user",
    "password",
    "auth_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "reserve_pool",
    "pool_mode",
    "max_db_connections",
    "server_lifetime",
    "connect_query",
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
];

/// PgBouncer database settings we do not implement: refused with a clearer message.
const PGBOUNCER_ONLY_DATABASE_FIELDS: [&str; 4] = [
    "auth_query",
    "auth_dbname",
    "load_balance_hosts",
    "max_db_client_connections",
];

/// Every field a `[users]` entry accepts.
const USER_FIELDS: [&str; 4] = [
    "pool_mode",
    "pool_size",
    "reserve_pool_size",
    "max_user_connections",
];

/// Fields whose value is a number: in the string form they arrive as text and are converted
/// before the typed extractors see them.
const NUMERIC_FIELDS: [&str; 8] = [
    "port",
    "pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "reserve_pool",
    "max_db_connections",
    "server_lifetime",
    "max_user_connections",
];

/// Walk `[databases]`. Entries with errors are still returned (the caller discards the whole
/// config when any error was recorded), so later checks see as much as possible.
pub(super) fn parse_databases(c: &mut Collector, t: &Table) -> BTreeMap<String, Database> {
    let mut out = BTreeMap::new();
    for (name, v) in t {
        let prefix = format!("databases.{name}");
        if let Some(fields) = entry_fields(c, &prefix, v, "host=127.0.0.1 port=5432 dbname=app") {
            out.insert(name.clone(), parse_database(c, &prefix, &fields));
        }
    }
    out
}

/// Walk `[users]`.
pub(super) fn parse_users(c: &mut Collector, t: &Table) -> BTreeMap<String, UserConfig> {
    let mut out = BTreeMap::new();
    for (name, v) in t {
        let prefix = format!("users.{name}");
        if let Some(fields) = entry_fields(c, &prefix, v, "pool_mode=session") {
            out.insert(name.clone(), parse_user(c, &prefix, &fields));
        }
    }
    out
}

/// The fields of one entry, from either form. A wrong value is described by type only: a
/// mistyped entry may well contain a password.
fn entry_fields(c: &mut Collector, prefix: &str, v: &Value, example: &str) -> Option<Table> {
    match v {
        Value::Table(t) => Some(t.clone()),
        Value::String(s) => match parse_conn_string(s) {
            Ok(pairs) => pairs_to_table(c, prefix, pairs),
            Err(message) => {
                c.error(prefix, message);
                None
            }
        },
        _ => {
            c.error(
                prefix,
                format!(
                    "expected an inline table {{ ... }} or a string like \"{example}\", found {}",
                    type_name(v)
                ),
            );
            None
        }
    }
}

/// Turn the string form's pairs into a table the typed walkers understand: numbers become TOML
/// numbers (when they parse; otherwise the extractor reports the field), the rest stay strings.
fn pairs_to_table(c: &mut Collector, prefix: &str, pairs: Vec<(String, String)>) -> Option<Table> {
    let mut t = Table::new();
    let mut ok = true;
    for (key, text) in pairs {
        if t.contains_key(&key) {
            c.error(&format!("{prefix}.{key}"), "given twice");
            ok = false;
            continue;
        }
        let value = if NUMERIC_FIELDS.contains(&key.as_str()) {
            if let Ok(n) = text.parse::<i64>() {
                Value::Integer(n)
            } else if let Ok(f) = text.parse::<f64>() {
                Value::Float(f)
            } else {
                Value::String(text)
            }
        } else {
            Value::String(text)
        };
        t.insert(key, value);
    }
    ok.then_some(t)
}

/// Split PgBouncer's `key=value key='quoted value'` form. Inside quotes, `\'` and `\\` stand for
/// `'` and `\`. Messages name keys only, never values, since a value may be a password.
pub(super) fn parse_conn_string(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|ch| ch.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(ch) = chars.next_if(|ch| *ch != '=' && !ch.is_whitespace()) {
            key.push(ch);
        }
        if key.is_empty() {
            return Err("expected key=value, found `=` without a key".to_owned());
        }
        while chars.next_if(|ch| ch.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            return Err(format!("expected `=` after `{key}`"));
        }
        while chars.next_if(|ch| ch.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for `{key}`")),
                    Some('\'') => break,
                    Some('\\') => match chars.next_if(|ch| *ch == '\'' || *ch == '\\') {
                        Some(escaped) => value.push(escaped),
                        None => value.push('\\'),
                    },
                    Some(ch) => value.push(ch),
                }
            }
            if chars.peek().is_some_and(|ch| !ch.is_whitespace()) {
                return Err(format!(
                    "expected a space after the quoted value of `{key}`"
                ));
            }
        } else {
            while let Some(ch) = chars.next_if(|ch| !ch.is_whitespace()) {
                value.push(ch);
            }
        }
        pairs.push((key, value));
    }
}

/// One `[databases]` entry.
fn parse_database(c: &mut Collector, prefix: &str, t: &Table) -> Database {
    let mut db = Database::default();
    // Which spelling set db.user / db.reserve_pool_size, to refuse having both spellings.
    let mut user_from: Option<&str> = None;
    let mut reserve_from: Option<&str> = None;
    for (field, v) in t {
        let key = format!("{prefix}.{field}");
        let key = key.as_str();
        match field.as_str() {
            "host" => {
                if let Some(host) = c.string(key, v) {
                    // PgBouncer treats an empty host like a missing one.
                    let host = host.trim();
                    if !host.is_empty() {
                        db.host = host.to_owned();
                    }
                }
            }
            "port" => db.port = c.port(key, v).unwrap_or(db.port),
            "dbname" => db.dbname = c.name(key, v),
            "user" | "force_user" => {
                if first_spelling(c, key, field, &mut user_from) {
                    db.user = c.name(key, v);
                }
            }
            "password" => db.password = c.secret(key, v),
            "auth_user" => db.auth_user = c.name(key, v),
            "pool_size" => db.pool_size = c.count(key, v),
            "min_pool_size" => db.min_pool_size = c.count(key, v),
            "reserve_pool_size" | "reserve_pool" => {
                if first_spelling(c, key, field, &mut reserve_from) {
                    db.reserve_pool_size = c.count(key, v);
                }
            }
            "pool_mode" => db.pool_mode = c.choice(key, v, &PoolMode::ALL),
            "max_db_connections" => db.max_db_connections = c.count(key, v),
            "server_lifetime" => db.server_lifetime = c.duration(key, v),
            "connect_query" => db.connect_query = c.string(key, v),
            "application_name" => db.application_name = c.string(key, v),
            "client_encoding" => db.client_encoding = c.name(key, v),
            "datestyle" => db.datestyle = c.name(key, v),
            "timezone" => db.timezone = c.name(key, v),
            other if PGBOUNCER_ONLY_DATABASE_FIELDS.contains(&other) => c.error(
                key,
                "PgBouncer database setting not supported by this pooler; remove it",
            ),
            other => c.unknown_key(key, other, &DATABASE_FIELDS),
        }
    }
    db
}

/// For settings with two spellings: true the first time, an error when the other one was given.
fn first_spelling<'a>(
    c: &mut Collector,
    key: &str,
    field: &'a str,
    seen: &mut Option<&'a str>,
) -> bool {
    match seen {
        Some(first) => {
            c.error(
                key,
                format!("`{first}` is given too; they are the same setting, keep one"),
            );
            false
        }
        None => {
            *seen = Some(field);
            true
        }
    }
}

/// One `[users]` entry.
fn parse_user(c: &mut Collector, prefix: &str, t: &Table) -> UserConfig {
    let mut user = UserConfig::default();
    for (field, v) in t {
        let key = format!("{prefix}.{field}");
        let key = key.as_str();
        match field.as_str() {
            "pool_mode" => user.pool_mode = c.choice(key, v, &PoolMode::ALL),
            "pool_size" => user.pool_size = c.count(key, v),
            "reserve_pool_size" => user.reserve_pool_size = c.count(key, v),
            "max_user_connections" => user.max_user_connections = c.count(key, v),
            "max_user_client_connections" => c.error(
                key,
                "PgBouncer user setting not supported by this pooler; remove it",
            ),
            other => c.unknown_key(key, other, &USER_FIELDS),
        }
    }
    user
}
