//! SHOW CLIENTS, SERVERS, SOCKETS, ACTIVE_SOCKETS: one row per connection.
//!
//! `ptr` and `link` identify connections the way PgBouncer's object addresses do, so a
//! client's `link` equals its server's `ptr`: "0xc<client id in hex>" for clients and
//! "0x5<server id in hex>" for servers (the leading digit keeps the two id spaces apart).
//! Buffer columns of SOCKETS are 0: our buffers live inside each worker's event loop.

use super::{
    result::row,
    snapshot::{ClientSnap, PoolSnap, ServerSnap, Snapshot},
};
use crate::stats::{ClientState, ServerState};

row! {
    /// Types as PgBouncer 1.25 declares them (times as timestamp text).
    pub struct SocketRow {
        kind = "type": Text,
        user: Text,
        database: Text,
        replication: Text,
        state: Text,
        addr: Text,
        port: Int4,
        local_addr: Text,
        local_port: Int4,
        connect_time: Time,
        request_time: Time,
        wait: Int4,
        wait_us: Int4,
        close_needed: Int4,
        ptr: Text,
        link: Text,
        remote_pid: Int4,
        tls: Text,
        application_name: Text,
        prepared_statements: Int4,
        id: Int4,
    }
}

row! {
    /// SHOW SOCKETS: the SHOW CLIENTS columns plus buffer positions.
    pub struct SocketDebugRow {
        kind = "type": Text,
        user: Text,
        database: Text,
        replication: Text,
        state: Text,
        addr: Text,
        port: Int4,
        local_addr: Text,
        local_port: Int4,
        connect_time: Time,
        request_time: Time,
        wait: Int4,
        wait_us: Int4,
        close_needed: Int4,
        ptr: Text,
        link: Text,
        remote_pid: Int4,
        tls: Text,
        application_name: Text,
        prepared_statements: Int4,
        id: Int4,
        recv_pos: Int4,
        pkt_pos: Int4,
        pkt_remain: Int4,
        send_pos: Int4,
        send_remain: Int4,
        pkt_avail: Int4,
        send_avail: Int4,
    }
}

pub fn client_ptr(id: u64) -> String {
    format!("0xc{id:x}")
}

pub fn server_ptr(id: u64) -> String {
    format!("0x5{id:x}")
}

/// SHOW CLIENTS state: linked = active, queued = waiting, otherwise idle.
fn client_state(c: &ClientSnap) -> &'static str {
    match c.state {
        ClientState::Waiting => "waiting",
        ClientState::Login => "login",
        ClientState::Active if c.server != 0 => "active",
        ClientState::Active => "idle",
    }
}

fn server_state(s: &ServerSnap) -> &'static str {
    match s.state {
        ServerState::Active if s.client != 0 => "active",
        ServerState::Active | ServerState::Idle => "idle",
        ServerState::Used => "used",
        ServerState::Login => "new",
    }
}

fn client_row(snap: &Snapshot, c: &ClientSnap, state: &str) -> SocketRow {
    let wait = if c.state == ClientState::Waiting && c.wait_since != 0 {
        snap.now.saturating_sub(c.wait_since)
    } else {
        0
    };
    SocketRow {
        kind: "C".into(),
        user: c.user.clone(),
        database: c.database.clone(),
        replication: "none".into(),
        state: state.into(),
        addr: c.addr.clone(),
        port: i64::from(c.port),
        local_addr: c.local_addr.clone(),
        local_port: i64::from(c.local_port),
        connect_time: c.connect_time,
        request_time: c.request_time,
        wait: (wait / 1_000_000) as i64,
        wait_us: (wait % 1_000_000) as i64,
        ptr: client_ptr(c.id),
        link: if c.server != 0 {
            server_ptr(c.server)
        } else {
            String::new()
        },
        application_name: c.application_name.clone(),
        prepared_statements: c.prepared as i64,
        id: c.id as i64,
        ..Default::default()
    }
}

fn server_row(p: &PoolSnap, s: &ServerSnap, state: &str) -> SocketRow {
    SocketRow {
        kind: "S".into(),
        user: p.user.clone(),
        database: p.db.clone(),
        replication: "none".into(),
        state: state.into(),
        addr: p.host.clone(),
        port: i64::from(p.port),
        local_addr: s.local_addr.clone(),
        local_port: i64::from(s.local_port),
        connect_time: s.connect_time,
        request_time: s.request_time,
        ptr: server_ptr(s.id),
        link: if s.client != 0 {
            client_ptr(s.client)
        } else {
            String::new()
        },
        remote_pid: s.pid as i64,
        prepared_statements: s.prepared as i64,
        id: s.id as i64,
        ..Default::default()
    }
}

fn client_rank(c: &ClientSnap) -> u8 {
    match c.state {
        ClientState::Active => 0,
        ClientState::Waiting => 1,
        ClientState::Login => 2,
    }
}

/// Clients in PgBouncer's order: by pool, active before waiting, then by id.
fn sorted_clients(snap: &Snapshot) -> Vec<&ClientSnap> {
    let mut v: Vec<&ClientSnap> = snap.clients.iter().collect();
    v.sort_by(|a, b| {
        (&a.database, &a.user, client_rank(a), a.id).cmp(&(
            &b.database,
            &b.user,
            client_rank(b),
            b.id,
        ))
    });
    v
}

fn server_rank(s: &ServerSnap) -> u8 {
    match server_state(s) {
        "active" => 0,
        "idle" => 1,
        "used" => 2,
        _ => 3,
    }
}

fn sorted_servers(p: &PoolSnap) -> Vec<&ServerSnap> {
    let mut v: Vec<&ServerSnap> = p.servers.iter().collect();
    v.sort_by_key(|s| (server_rank(s), s.id));
    v
}

pub fn clients(snap: &Snapshot) -> Vec<SocketRow> {
    sorted_clients(snap)
        .into_iter()
        .map(|c| client_row(snap, c, client_state(c)))
        .collect()
}

pub fn servers(snap: &Snapshot) -> Vec<SocketRow> {
    snap.pools
        .iter()
        .flat_map(|p| {
            sorted_servers(p)
                .into_iter()
                .map(move |s| server_row(p, s, server_state(s)))
        })
        .collect()
}

fn debug(r: SocketRow) -> SocketDebugRow {
    SocketDebugRow {
        kind: r.kind,
        user: r.user,
        database: r.database,
        replication: r.replication,
        state: r.state,
        addr: r.addr,
        port: r.port,
        local_addr: r.local_addr,
        local_port: r.local_port,
        connect_time: r.connect_time,
        request_time: r.request_time,
        wait: r.wait,
        wait_us: r.wait_us,
        close_needed: r.close_needed,
        ptr: r.ptr,
        link: r.link,
        remote_pid: r.remote_pid,
        tls: r.tls,
        application_name: r.application_name,
        prepared_statements: r.prepared_statements,
        id: r.id,
        ..Default::default()
    }
}

/// Every connection with SOCKETS' state names; `busy_only` keeps those with work in
/// flight (ACTIVE_SOCKETS: linked or queued clients, servers not idle).
fn sockets(snap: &Snapshot, busy_only: bool) -> Vec<SocketDebugRow> {
    let mut out = Vec::new();
    for c in sorted_clients(snap) {
        let (state, busy) = match c.state {
            ClientState::Active => ("cl_active", c.server != 0),
            ClientState::Waiting => ("cl_waiting", true),
            ClientState::Login => ("cl_login", true),
        };
        if busy || !busy_only {
            out.push(debug(client_row(snap, c, state)));
        }
    }
    for p in &snap.pools {
        for s in sorted_servers(p) {
            let (state, busy) = match server_state(s) {
                "active" => ("sv_active", true),
                "idle" => ("sv_idle", false),
                "used" => ("sv_used", true),
                _ => ("sv_login", true),
            };
            if busy || !busy_only {
                out.push(debug(server_row(p, s, state)));
            }
        }
    }
    out
}

pub fn all_sockets(snap: &Snapshot) -> Vec<SocketDebugRow> {
    sockets(snap, false)
}

pub fn active_sockets(snap: &Snapshot) -> Vec<SocketDebugRow> {
    sockets(snap, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testdata::{client, pool, snapshot};

    fn sample() -> Snapshot {
        let mut snap = snapshot("", "");
        snap.now = 5_000_000;
        let mut p = pool("app", "bob");
        for (id, state, client) in [(3, ServerState::Active, 1), (4, ServerState::Idle, 0)] {
            p.servers.push(ServerSnap {
                id,
                pid: 1000 + id,
                connect_time: 1,
                request_time: 2,
                local_addr: "127.0.0.1".into(),
                local_port: 50000,
                state,
                client,
                prepared: 2,
            });
        }
        snap.pools.push(p);
        let mut linked = client(1, "app", "bob", true);
        linked.server = 3;
        let mut waiting = client(2, "app", "bob", true);
        waiting.state = ClientState::Waiting;
        waiting.wait_since = 3_500_000;
        snap.clients
            .extend([waiting, linked, client(7, "pgbouncer", "admin", false)]);
        snap
    }

    #[test]
    fn clients_and_links() {
        let snap = sample();
        let rows = clients(&snap);
        let states: Vec<_> = rows.iter().map(|r| (r.id, r.state.as_str())).collect();
        assert_eq!(states, [(1, "active"), (2, "waiting"), (7, "idle")]);
        assert_eq!(rows[0].link, "0x53");
        assert_eq!(rows[0].ptr, "0xc1");
        assert_eq!((rows[1].wait, rows[1].wait_us), (1, 500_000));
        let sv = servers(&snap);
        assert_eq!(sv.len(), 2);
        assert_eq!(
            (sv[0].state.as_str(), sv[0].link.as_str()),
            ("active", "0xc1")
        );
        assert_eq!(sv[0].ptr, rows[0].link);
        assert_eq!(sv[0].remote_pid, 1003);
        assert_eq!(sv[1].state, "idle");
    }

    #[test]
    fn sockets_and_active_sockets() {
        let snap = sample();
        assert_eq!(all_sockets(&snap).len(), 5);
        let busy: Vec<_> = active_sockets(&snap).into_iter().map(|r| r.state).collect();
        assert_eq!(busy, ["cl_active", "cl_waiting", "sv_active"]);
    }
}
