//! The admin console: a virtual database (`pgbouncer`, alias `pooler`) answering
//! PgBouncer's commands over the simple and the extended query protocol.

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

/// ParameterStatus values the console greets a client with.
pub fn greeting(application_name: &str) -> Vec<(String, String)> {
    vec![
        (
            "server_version".into(),
            format!("{}/pooler", env!("CARGO_PKG_VERSION")),
        ),
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
    let _ = (app, conn, shared, role);
}
