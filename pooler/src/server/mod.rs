//! Server connections: where they go (`Target`), logging in to PostgreSQL, and the state
//! a linked server carries while a client uses it.

mod error;
mod login;

use std::time::Duration;

use bytes::BytesMut;
pub use error::ServerError;
pub use login::{Credentials, open};

use crate::{
    net::{Conn, ServerAddr},
    pool::{IdleServer, ServerInfo},
    proto::tracker::Tracker,
};

/// Where a pool's server connections go and how they log in.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub addr: ServerAddr,
    /// Database name on the server.
    pub dbname: String,
    /// Login user on the server.
    pub user: String,
    /// Password from the database entry (used before the auth file).
    pub password: Option<String>,
    /// Extra startup parameters from the database entry (client_encoding, DateStyle, ...).
    pub startup_params: Vec<(String, String)>,
    pub connect_timeout: Duration,
}

impl Target {
    /// The target of the pool for client database `database` under database entry `db`,
    /// logging in as `server_user`.
    pub fn from_config(
        g: &crate::config::General,
        db: &crate::config::Database,
        database: &str,
        server_user: &str,
    ) -> Target {
        let mut startup_params = Vec::new();
        for (k, v) in [
            ("client_encoding", &db.client_encoding),
            ("DateStyle", &db.datestyle),
            ("TimeZone", &db.timezone),
            ("application_name", &db.application_name),
        ] {
            if let Some(v) = v {
                startup_params.push((k.to_string(), v.clone()));
            }
        }
        Target {
            addr: ServerAddr::new(&db.host, db.port, g.dns_max_ttl),
            dbname: db.dbname.clone().unwrap_or_else(|| database.to_string()),
            user: server_user.to_string(),
            password: db.password.clone(),
            startup_params,
            connect_timeout: g.server_connect_timeout,
        }
    }
}

/// A server connection linked to a client, on the client's worker thread.
pub struct ServerConn {
    pub conn: Conn,
    pub info: ServerInfo,
    pub tracker: Tracker,
    /// Body bytes of the message being passed through that have not arrived yet.
    pub pass_remaining: u32,
    /// Whether the message being passed through is forwarded (true) or swallowed.
    pub pass_forward: bool,
    /// A batch kept for one retry after "cached plan must not change result type".
    pub replay: Option<Box<crate::client::Replay>>,
}

impl ServerConn {
    pub fn new(conn: Conn, info: ServerInfo) -> ServerConn {
        ServerConn {
            conn,
            info,
            tracker: Tracker::new(),
            pass_remaining: 0,
            pass_forward: true,
            replay: None,
        }
    }

    pub fn from_idle(idle: IdleServer, read_size: usize) -> ServerConn {
        ServerConn::new(Conn::recycled(idle.socket, read_size), idle.info)
    }

    /// Back to a plain socket for the pool, if nothing is in flight and nothing unread;
    /// otherwise None and the connection is closed.
    pub fn into_idle(self) -> Option<IdleServer> {
        if !self.conn.rbuf.is_empty() || self.pass_remaining != 0 {
            return None;
        }
        let mut info = self.info;
        let socket = self.conn.into_socket()?;
        info.last_used = std::time::Instant::now();
        Some(IdleServer { socket, info })
    }

    /// Queues a simple query of the pooler's own; its replies will be swallowed.
    pub fn send_internal(&mut self, sql: &str, why: crate::proto::tracker::Internal) {
        let mut buf = BytesMut::new();
        // A query with a NUL inside cannot be sent; the callers build these themselves.
        if postgres_protocol::message::frontend::query(sql, &mut buf).is_ok() {
            self.conn.wbuf.extend_from_slice(&buf);
            self.tracker.internal_query(why);
        }
    }
}

/// What the pooler can prove to PostgreSQL for a pool's server user: the database entry's
/// password, else the auth file's secret for that user (a SCRAM secret needs the keys a
/// client's SCRAM login left in the pool).
pub fn credentials(
    pool: &crate::pool::Pool,
    auth_file: Option<&crate::auth::AuthFile>,
) -> Credentials {
    use crate::auth::Secret;
    let target = pool.target();
    let secret = match &target.password {
        Some(p) => Some(Secret::parse(p)),
        None => auth_file.and_then(|f| f.get(&target.user)).cloned(),
    };
    match secret {
        Some(Secret::Plain(p)) => Credentials::Password(p),
        Some(Secret::Md5(h)) => Credentials::Md5(h),
        Some(Secret::Scram(_)) => pool
            .scram_keys()
            .map(|(c, s)| Credentials::ScramKeys(c, s))
            .unwrap_or(Credentials::None),
        None => Credentials::None,
    }
}

/// Closes an idle server politely: Terminate if the socket takes it at once, then close.
pub fn close_idle(socket: socket2::Socket) {
    use std::os::fd::AsRawFd;
    let terminate = [b'X', 0, 0, 0, 4];
    // SAFETY: send of a valid 5-byte buffer on a descriptor we own; never blocks.
    unsafe {
        libc::send(
            socket.as_raw_fd(),
            terminate.as_ptr().cast(),
            terminate.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        );
    }
    drop(socket);
}
