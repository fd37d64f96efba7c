//! The admin console: a virtual database (`pgbouncer`, alias `pooler`) answering
//! PgBouncer's commands over the simple and the extended query protocol.
//!
//! Layout: `parse` turns text into a [`parse::Command`]; `commands` holds the table of
//! SHOW listings and runs commands into a `Reply` (rows + notices + tag); each `show_*`
//! module computes its rows from a `snapshot::Snapshot` of the live state; `result` turns
//! rows into RowDescription/DataRow; `session`, `extended` and `messages` speak the
//! protocol. The snapshot and the `show_*` listings are crate-visible because
//! `crate::metrics` reports the same rows over HTTP, so the two can never disagree.

mod commands;
mod extended;
mod messages;
mod parse;
mod result;
mod session;
pub(crate) mod show_config;
pub(crate) mod show_databases;
mod show_kernel_latency;
mod show_kernel_sockets;
mod show_kernel_stats;
pub(crate) mod show_misc;
pub(crate) mod show_pools;
pub(crate) mod show_sockets;
pub(crate) mod show_stats;
pub(crate) mod snapshot;
mod table;
#[cfg(test)]
mod testdata;

use std::sync::Arc;

use crate::{app::App, client::registry::ClientShared, net::Conn};

/// What an admin-console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// admin_users: everything.
    Admin,
    /// stats_users: SHOW commands only.
    Stats,
}

/// The server_version the console reports.
pub fn server_version() -> String {
    format!("{}/pooler", env!("CARGO_PKG_VERSION"))
}

/// ParameterStatus values the console greets a client with.
pub fn greeting(application_name: &str) -> Vec<(String, String)> {
    vec![
        ("server_version".into(), server_version()),
        ("server_encoding".into(), "UTF8".into()),
        ("client_encoding".into(), "UTF8".into()),
        ("DateStyle".into(), "ISO".into()),
        ("TimeZone".into(), "UTC".into()),
        ("IntervalStyle".into(), "postgres".into()),
        ("integer_datetimes".into(), "on".into()),
        ("standard_conforming_strings".into(), "on".into()),
        ("application_name".into(), application_name.into()),
    ]
}

/// Serves one logged-in console client until it leaves.
pub async fn serve(app: Arc<App>, conn: Conn, shared: Arc<ClientShared>, role: Role) {
    session::Session::new(app.clone(), conn, shared.clone(), role)
        .run()
        .await;
    // Unregister before handing the counters over, so SHOW STATS never counts them twice
    // (the caller's later unregister finds nothing left to do).
    app.clients.unregister(&shared);
    app.periodic.console_left(&shared.stats.values());
}
