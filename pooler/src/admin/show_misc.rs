//! The small listings: SHOW HELP, VERSION, STATE, LISTS, MEM, DNS_HOSTS, DNS_ZONES, FDS,
//! PEERS, PEER_POOLS, and the PostgreSQL parameters drivers ask about (SHOW DateStyle...).

use super::{result::row, snapshot::Snapshot};

/// SHOW HELP's NOTICE: message and detail exactly as PgBouncer 1.25.2 sends them.
pub const HELP_MESSAGE: &str = "Console usage";
pub const HELP_DETAIL: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW PEERS|PEER_POOLS\n\
\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\
\tSHOW DNS_HOSTS|DNS_ZONES\n\
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
\tSET key = arg\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL [<db>]\n\
\tKILL_CLIENT <client_id>\n\
\tSUSPEND\n\
\tSHUTDOWN\n\
\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
\tWAIT_CLOSE [<db>]";

/// SHOW VERSION's text: starts like PgBouncer's ("PgBouncer X.Y.Z") because monitoring
/// tools extract the version with that pattern to pick the columns they expect; the
/// version is the PgBouncer release whose console we reproduce.
pub fn version_text() -> String {
    format!(
        "PgBouncer 1.25.2 compatible (pooler {})",
        env!("CARGO_PKG_VERSION")
    )
}

row! {
    pub struct VersionRow {
        version: Text,
    }
}

row! {
    pub struct KeyValueRow {
        key: Text,
        value: Text,
    }
}

row! {
    pub struct ListRow {
        list: Text,
        items: Int4,
    }
}

row! {
    pub struct MemRow {
        name: Text,
        size: Int4,
        used: Int4,
        free: Int4,
        memtotal: Int4,
    }
}

row! {
    pub struct DnsHostRow {
        hostname: Text,
        ttl: Int8,
        addrs: Text,
    }
}

row! {
    pub struct DnsZoneRow {
        zonename: Text,
        serial: Int8,
        count: Int4,
    }
}

row! {
    pub struct FdRow {
        fd: Int4,
        task: Text,
        user: Text,
        database: Text,
        addr: Text,
        port: Int4,
        cancel: Int8,
        link: Int4,
        client_encoding: Text,
        std_strings: Text,
        datestyle: Text,
        timezone: Text,
        password: Text,
        scram_client_key: Bytea,
        scram_server_key: Bytea,
    }
}

row! {
    pub struct PeerRow {
        peer_id: Int4,
        host: Text,
        port: Int4,
        pool_size: Int4,
    }
}

row! {
    pub struct PeerPoolRow {
        peer_id: Int4,
        cl_active_cancel_req: Int4,
        cl_waiting_cancel_req: Int4,
        sv_active_cancel: Int4,
        sv_login: Int4,
    }
}

pub fn version() -> Vec<VersionRow> {
    vec![VersionRow {
        version: version_text(),
    }]
}

/// SHOW STATE.
pub fn state(snap: &Snapshot) -> Vec<KeyValueRow> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        KeyValueRow {
            key: "active".into(),
            value: yes_no(!snap.paused_all && !snap.suspended),
        },
        KeyValueRow {
            key: "paused".into(),
            value: yes_no(snap.paused_all),
        },
        KeyValueRow {
            key: "suspended".into(),
            value: yes_no(snap.suspended),
        },
    ]
}

/// SHOW LISTS. We keep no free lists (memory comes from the allocator), so the free_*
/// items are 0; DNS figures are 0 because names are resolved per pool, not in a shared
/// resolver.
pub fn lists(snap: &Snapshot) -> Vec<ListRow> {
    let databases = super::show_databases::databases(snap).len();
    let users = super::show_databases::users(snap).len();
    let pools = super::show_pools::rows(snap).len();
    let servers: usize = snap.pools.iter().map(|p| p.servers.len()).sum();
    [
        ("databases", databases),
        ("users", users),
        ("peers", 0),
        ("pools", pools),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", snap.clients.len()),
        ("login_clients", snap.logging_in as usize),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ]
    .into_iter()
    .map(|(list, n)| ListRow {
        list: list.into(),
        items: n as i64,
    })
    .collect()
}

/// SHOW MEM, for our own object kinds: `size` is the size of one record, `used` how many
/// exist, `memtotal` = size * used. Our records come from the general allocator, not
/// slabs, so `free` is 0; strings and buffers the records point to are not counted, except
/// `iobuf`, estimated as one pkt_buf-sized receive buffer per connection. A last row,
/// `malloc`, is the allocator's own account of everything (glibc's mallinfo2): `size` is
/// 1024, `used` and `free` are KiB in use and KiB held free, `memtotal` the bytes it got
/// from the system.
pub fn mem(snap: &Snapshot) -> Vec<MemRow> {
    use std::mem::size_of;
    let servers: usize = snap.pools.iter().map(|p| p.servers.len()).sum();
    let read_size = snap.config.pooler.pkt_buf as usize;
    [
        (
            "client_cache",
            size_of::<crate::client::registry::ClientShared>(),
            snap.clients.len(),
        ),
        (
            "server_cache",
            size_of::<crate::pool::ServerShared>(),
            servers,
        ),
        (
            "pool_cache",
            size_of::<crate::pool::Pool>(),
            snap.pools.len(),
        ),
        (
            "db_cache",
            size_of::<crate::config::Database>(),
            snap.config.databases.len(),
        ),
        (
            "user_cache",
            size_of::<crate::config::UserConfig>(),
            snap.config.users.len(),
        ),
        ("iobuf_cache", read_size, snap.clients.len() + servers),
    ]
    .into_iter()
    .map(|(name, size, used)| MemRow {
        name: name.into(),
        size: size as i64,
        used: used as i64,
        free: 0,
        memtotal: size.saturating_mul(used).min(i32::MAX as usize) as i64,
    })
    .chain(malloc_row())
    .collect()
}

/// glibc's figures for the whole process; None elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_row() -> Option<MemRow> {
    // SAFETY: mallinfo2 only reads the allocator's counters (under its own locks).
    let m = unsafe { libc::mallinfo2() };
    let kib = |b: usize| (b / 1024).min(i32::MAX as usize) as i64;
    Some(MemRow {
        name: "malloc".into(),
        size: 1024,
        used: kib(m.uordblks + m.hblkhd),
        free: kib(m.fordblks),
        memtotal: (m.arena + m.hblkhd).min(i32::MAX as usize) as i64,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_row() -> Option<MemRow> {
    None
}

/// PostgreSQL parameters answered by SHOW (canonical name, value). Drivers and GUI tools
/// ask for some of these; the values are the ones the console greets clients with.
const PARAMS: [(&str, &str); 12] = [
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("server_encoding", "UTF8"),
    ("server_version", ""),
    ("standard_conforming_strings", "on"),
    ("TimeZone", "UTC"),
    ("transaction_isolation", "read committed"),
];

/// The canonical parameter name for what followed SHOW (words joined by spaces).
pub fn param_name(words: &str) -> Option<&'static str> {
    let w = words.to_ascii_lowercase();
    let w = match w.as_str() {
        "transaction isolation level" => "transaction_isolation",
        "time zone" => "timezone",
        other => other,
    };
    PARAMS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| n.eq_ignore_ascii_case(w))
}

/// The value reported for a parameter.
pub fn param_value(name: &str, application_name: &str) -> String {
    match name {
        "application_name" => application_name.to_string(),
        "server_version" => crate::admin::server_version(),
        _ => PARAMS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{result::Row, testdata::snapshot};

    #[test]
    fn help_text_is_pgbouncers() {
        assert!(HELP_DETAIL.starts_with("\n\tSHOW HELP|CONFIG|DATABASES|POOLS|"));
        assert!(HELP_DETAIL.ends_with("\tWAIT_CLOSE [<db>]"));
        assert_eq!(HELP_DETAIL.lines().count(), 19);
    }

    #[test]
    fn version_parses_like_pgbouncer() {
        assert!(version_text().starts_with("PgBouncer 1.25.2 "));
    }

    #[test]
    fn state_lists_mem() {
        let mut snap = snapshot("", "");
        snap.paused_all = true;
        let st = state(&snap);
        assert_eq!(st[0].value, "no");
        assert_eq!(st[1].value, "yes");
        let l = lists(&snap);
        assert_eq!(l.len(), 14);
        assert_eq!(l[0].items, 1, "the console's database");
        let m = mem(&snap);
        assert!(
            m.iter()
                .filter(|r| r.name != "malloc")
                .all(|r| r.size > 0 && r.free == 0)
        );
        // The allocator's row: some memory in use, and at least that much from the system.
        let malloc = m.iter().find(|r| r.name == "malloc").expect("malloc row");
        assert!(
            malloc.used > 0 && malloc.memtotal >= malloc.used * 1024,
            "{malloc:?}"
        );
    }

    #[test]
    fn fds_types_are_pgbouncers() {
        let oids: Vec<u32> = FdRow::COLUMNS.iter().map(|c| c.kind.oid()).collect();
        assert_eq!(
            oids,
            [23, 25, 25, 25, 25, 23, 20, 23, 25, 25, 25, 25, 25, 17, 17]
        );
    }

    #[test]
    fn params() {
        assert_eq!(
            param_name("TRANSACTION ISOLATION LEVEL"),
            Some("transaction_isolation")
        );
        assert_eq!(param_name("datestyle"), Some("DateStyle"));
        assert_eq!(param_name("pools"), None);
        assert_eq!(param_value("application_name", "x"), "x");
        assert_eq!(param_value("TimeZone", ""), "UTC");
    }
}
