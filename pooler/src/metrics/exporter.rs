//! The `pgbouncer_*` families: the names, types, labels and HELP texts of
//! prometheus-community's pgbouncer_exporter, computed from the very rows the console's SHOW
//! commands return (same snapshot code), with the exporter's conversions (µs columns become
//! seconds), so dashboards and alerts written for the exporter work unchanged.

use std::collections::BTreeMap;

use super::prometheus::Out;
use crate::{
    admin::{
        show_config, show_databases, show_misc, show_pools, show_sockets,
        show_stats::{self, Stats},
        snapshot::Snapshot,
    },
    app::App,
};

const MICROS: f64 = 1e-6;

/// A metric computed from one SHOW row: name, HELP text, value.
type Column<R, T> = (&'static str, &'static str, fn(&R) -> T);

pub(super) fn families(out: &mut Out, app: &App, snap: &Snapshot) {
    // Computed in-process, so the "scrape of PgBouncer" always succeeds.
    out.family("pgbouncer_up", "The pgbouncer scrape succeeded", "gauge");
    out.sample("pgbouncer_up", &[], 1.0);
    out.family(
        "pgbouncer_version_info",
        "The pgbouncer version info",
        "gauge",
    );
    out.sample(
        "pgbouncer_version_info",
        &[("version", &show_misc::version_text())],
        1.0,
    );
    lists(out, snap);
    config(out, snap);
    databases(out, snap);
    stats(out, app);
    pools(out, snap);
    servers(out, snap);
}

/// SHOW LISTS, one gauge per list the exporter knows.
fn lists(out: &mut Out, snap: &Snapshot) {
    const LISTS: [(&str, &str, &str); 11] = [
        ("databases", "pgbouncer_databases", "Count of databases"),
        ("users", "pgbouncer_users", "Count of users"),
        ("pools", "pgbouncer_pools", "Count of pools"),
        (
            "free_clients",
            "pgbouncer_free_clients",
            "Count of free clients",
        ),
        (
            "used_clients",
            "pgbouncer_used_clients",
            "Count of used clients",
        ),
        (
            "login_clients",
            "pgbouncer_login_clients",
            "Count of clients in login state",
        ),
        (
            "free_servers",
            "pgbouncer_free_servers",
            "Count of free servers",
        ),
        (
            "used_servers",
            "pgbouncer_used_servers",
            "Count of used servers",
        ),
        (
            "dns_names",
            "pgbouncer_cached_dns_names",
            "Count of DNS names in the cache",
        ),
        (
            "dns_zones",
            "pgbouncer_cached_dns_zones",
            "Count of DNS zones in the cache",
        ),
        (
            "dns_queries",
            "pgbouncer_in_flight_dns_queries",
            "Count of in-flight DNS queries",
        ),
    ];
    let rows = show_misc::lists(snap);
    for (list, name, help) in LISTS {
        if let Some(r) = rows.iter().find(|r| r.list == list) {
            out.family(name, help, "gauge");
            out.sample(name, &[], r.items as f64);
        }
    }
}

/// SHOW CONFIG: the two settings the exporter publishes.
fn config(out: &mut Out, snap: &Snapshot) {
    let rows = show_config::rows(&snap.config);
    for (key, name, help) in [
        (
            "max_client_conn",
            "pgbouncer_config_max_client_connections",
            "Config maximum number of client connections",
        ),
        (
            "max_user_connections",
            "pgbouncer_config_max_user_connections",
            "Config maximum number of server connections per user",
        ),
    ] {
        if let Some(v) = rows
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| r.value.parse::<f64>().ok())
        {
            out.family(name, help, "gauge");
            out.sample(name, &[], v);
        }
    }
}

/// SHOW DATABASES. The exporter reads `reserve_pool`, PgBouncer's name for what 1.24+
/// calls `reserve_pool_size`; we publish it under the exporter's metric name.
fn databases(out: &mut Out, snap: &Snapshot) {
    type Row = show_databases::DatabaseRow;
    let rows = show_databases::databases(snap);
    let labels = |r: &Row| {
        vec![
            ("database", r.database.clone()),
            ("force_user", r.force_user.clone().unwrap_or_default()),
            ("host", r.host.clone().unwrap_or_default()),
            ("name", r.name.clone()),
            ("pool_mode", r.pool_mode.clone().unwrap_or_default()),
            ("port", r.port.to_string()),
        ]
    };
    let gauges: [Column<Row, i64>; 6] = [
        (
            "pgbouncer_databases_pool_size",
            "Maximum number of server connections",
            |r| r.pool_size,
        ),
        (
            "pgbouncer_databases_reserve_pool",
            "Maximum number of additional connections for this database",
            |r| r.reserve_pool_size,
        ),
        (
            "pgbouncer_databases_max_connections",
            "Maximum number of allowed connections for this database",
            |r| r.max_connections,
        ),
        (
            "pgbouncer_databases_current_connections",
            "Current number of connections for this database",
            |r| r.current_connections,
        ),
        (
            "pgbouncer_databases_paused",
            "1 if this database is currently paused, else 0",
            |r| r.paused,
        ),
        (
            "pgbouncer_databases_disabled",
            "1 if this database is currently disabled, else 0",
            |r| r.disabled,
        ),
    ];
    for (name, help, get) in gauges {
        out.rows((name, help, "gauge"), &rows, labels, |r| get(r) as f64);
    }
}

/// SHOW STATS totals as counters, times converted from µs to seconds.
fn stats(out: &mut Out, app: &App) {
    type Row = show_stats::StatsRow;
    let rows = show_stats::stats(&Stats {
        totals: app.periodic.totals(app),
        averages: BTreeMap::new(),
    });
    let labels = |r: &Row| vec![("database", r.database.clone())];
    let counters: [Column<Row, f64>; 7] = [
        (
            "pgbouncer_stats_queries_pooled_total",
            "Total number of SQL queries pooled",
            |r| r.total_query_count as f64,
        ),
        (
            "pgbouncer_stats_queries_duration_seconds_total",
            "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries",
            |r| r.total_query_time as f64 * MICROS,
        ),
        (
            "pgbouncer_stats_received_bytes_total",
            "Total volume in bytes of network traffic received by pgbouncer, shown as bytes",
            |r| r.total_received as f64,
        ),
        (
            "pgbouncer_stats_sent_bytes_total",
            "Total volume in bytes of network traffic sent by pgbouncer, shown as bytes",
            |r| r.total_sent as f64,
        ),
        (
            "pgbouncer_stats_client_wait_seconds_total",
            "Time spent by clients waiting for a server in seconds",
            |r| r.total_wait_time as f64 * MICROS,
        ),
        (
            "pgbouncer_stats_sql_transactions_pooled_total",
            "Total number of SQL transactions pooled",
            |r| r.total_xact_count as f64,
        ),
        (
            "pgbouncer_stats_server_in_transaction_seconds_total",
            "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction, either idle in transaction or executing queries",
            |r| r.total_xact_time as f64 * MICROS,
        ),
    ];
    for (name, help, get) in counters {
        out.rows((name, help, "counter"), &rows, labels, get);
    }
}

/// SHOW POOLS gauges, labelled database and user.
fn pools(out: &mut Out, snap: &Snapshot) {
    type Row = show_pools::PoolRow;
    let rows = show_pools::rows(snap);
    let labels = |r: &Row| vec![("database", r.database.clone()), ("user", r.user.clone())];
    let gauges: [Column<Row, f64>; 12] = [
        (
            "pgbouncer_pools_client_active_connections",
            "Client connections linked to server connection and able to process queries, shown as connection",
            |r| r.cl_active as f64,
        ),
        (
            "pgbouncer_pools_client_active_cancel_connections",
            "Client connections that have forwarded query cancellations to the server and are waiting for the server response",
            |r| r.cl_active_cancel_req as f64,
        ),
        (
            "pgbouncer_pools_client_waiting_connections",
            "Client connections waiting on a server connection, shown as connection",
            |r| r.cl_waiting as f64,
        ),
        (
            "pgbouncer_pools_client_waiting_cancel_connections",
            "Client connections that have not forwarded query cancellations to the server yet",
            |r| r.cl_waiting_cancel_req as f64,
        ),
        (
            "pgbouncer_pools_server_active_connections",
            "Server connections linked to a client connection, shown as connection",
            |r| r.sv_active as f64,
        ),
        (
            "pgbouncer_pools_server_active_cancel_connections",
            "Server connections that are currently forwarding a cancel request.",
            |r| r.sv_active_cancel as f64,
        ),
        (
            "pgbouncer_pools_server_being_canceled_connections",
            "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed that were sent to cancel a query on this server.",
            |r| r.sv_being_canceled as f64,
        ),
        (
            "pgbouncer_pools_server_idle_connections",
            "Server connections idle and ready for a client query, shown as connection",
            |r| r.sv_idle as f64,
        ),
        (
            "pgbouncer_pools_server_used_connections",
            "Server connections idle more than server_check_delay, needing server_check_query, shown as connection",
            |r| r.sv_used as f64,
        ),
        (
            "pgbouncer_pools_server_testing_connections",
            "Server connections currently running either server_reset_query or server_check_query, shown as connection",
            |r| r.sv_tested as f64,
        ),
        (
            "pgbouncer_pools_server_login_connections",
            "Server connections currently in the process of logging in, shown as connection",
            |r| r.sv_login as f64,
        ),
        // Whole seconds only, as the exporter reads the maxwait column: alerts such as
        // "maxwait > 0" must fire at the same point (pooler_pool_wait_seconds has the detail).
        (
            "pgbouncer_pools_client_maxwait_seconds",
            "Age of oldest unserved client connection, shown as second",
            |r| r.maxwait as f64,
        ),
    ];
    for (name, help, get) in gauges {
        out.rows((name, help, "gauge"), &rows, labels, get);
    }
}

/// SHOW SERVERS, counted per (user, database, state, addr_port, close_needed).
fn servers(out: &mut Out, snap: &Snapshot) {
    let mut counts: BTreeMap<[String; 5], u64> = BTreeMap::new();
    for s in show_sockets::servers(snap) {
        let key = [
            format!("{}_{}", s.addr, s.port),
            (s.close_needed == 1).to_string(),
            s.database,
            s.state,
            s.user,
        ];
        *counts.entry(key).or_default() += 1;
    }
    let name = "pgbouncer_server_connections";
    out.family(name, "Server connections with state information", "gauge");
    for ([addr, close, db, state, user], n) in &counts {
        let labels = [
            ("addr", addr.as_str()),
            ("close_needed", close.as_str()),
            ("database", db.as_str()),
            ("state", state.as_str()),
            ("user", user.as_str()),
        ];
        out.sample(name, &labels, *n as f64);
    }
}
