//! What the pooler knows about one server connection, independent of the thread it is on.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use socket2::Socket;

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

pub fn next_server_id() -> u64 {
    NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed)
}

/// Facts about a server connection that travel with it between threads.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub id: u64,
    /// The server's current values of reported (and pooler-set) parameters.
    pub params: Vec<(String, String)>,
    /// BackendKeyData: what a CancelRequest for this server must carry.
    pub pid: i32,
    pub secret: i32,
    pub created: Instant,
    pub last_used: Instant,
}

impl ServerInfo {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_param(&mut self, name: &str, value: &str) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value.to_string(),
            None => self.params.push((name.to_string(), value.to_string())),
        }
    }
}

/// An idle server connection: a plain socket (movable to any worker) and its facts.
#[derive(Debug)]
pub struct IdleServer {
    pub socket: Socket,
    pub info: ServerInfo,
}
