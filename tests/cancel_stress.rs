//! Cancel under stress: a cancel for a client queued for a server ends its wait with 57014
//! and the client carries on; cancel connections that send their packet and never close
//! hold nothing and block no login. (The 100-cancel race on a shared server is
//! tests/cancel.rs, `cancels_for_one_client_never_hit_another`.)

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn start(db: &str) -> Pooler {
    Postgres::shared().create_database(db);
    Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("default_pool_size = 5", "default_pool_size = 1"),
    )
}

fn pool_column(pooler: &Pooler, db: &str, column: &str) -> u64 {
    admin_number(pooler, "SHOW POOLS", "database", db, column)
}

fn value(c: &mut RawClient, sql: &str) -> String {
    let reply = c.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "{sql}: {reply:?}");
    data_rows(&reply)[0][0].clone().unwrap_or_default()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_cancel_takes_a_queued_client_out_of_the_queue() {
    const DB: &str = "cancel_queued";
    let pooler = start(DB);
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    assert_eq!(value(&mut a, "BEGIN; SELECT 1"), "1");
    // B queues behind A's transaction on the only server.
    let (mut b, login) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let (pid, secret) = backend_key(&login);
    b.send(&fe::query("SELECT 2"));
    assert!(wait_until(Duration::from_secs(10), || pool_column(
        &pooler,
        DB,
        "cl_waiting"
    ) == 1));

    let mut s = TcpStream::connect(("127.0.0.1", pooler.port)).unwrap();
    s.write_all(&fe::cancel_request(pid, secret)).unwrap();
    let reply = b.recv_until_ready();
    let err = reply
        .iter()
        .find(|m| m.is_error())
        .unwrap_or_else(|| panic!("the queued query was not cancelled: {reply:?}"));
    assert_eq!(err.field(b'C').as_deref(), Some("57014"));
    assert_eq!(
        err.field(b'M').as_deref(),
        Some("canceling statement due to user request")
    );
    assert_eq!(pool_column(&pooler, DB, "cl_waiting"), 0);
    // A's transaction was not touched; B carries on once the server is free.
    assert_eq!(value(&mut a, "SELECT 3"), "3");
    assert!(!a.query("COMMIT").iter().any(Msg::is_error));
    assert_eq!(value(&mut b, "SELECT 4"), "4");
}

#[test]
fn cancel_connections_that_never_close_hold_nothing() {
    const DB: &str = "cancel_lingering";
    const N: usize = 200;
    let pooler = start(DB);
    let (mut idle, login) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let (pid, secret) = backend_key(&login);
    let fds_before = open_fds(pooler.pid());

    // Cancel packets, half with a real key (of a client on no server), half with wrong
    // ones, each on a connection its sender keeps open and never reads.
    let mut lingering: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", pooler.port)).unwrap();
            let packet = if i % 2 == 0 {
                fe::cancel_request(pid, secret)
            } else {
                fe::cancel_request(i as i32, 12345)
            };
            s.write_all(&packet).unwrap();
            s
        })
        .collect();
    // Logins and queries go on meanwhile.
    let (mut fresh, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    assert_eq!(value(&mut fresh, "SELECT 5"), "5");
    assert_eq!(value(&mut idle, "SELECT 6"), "6");

    // The pooler closes each of them once its request is handled.
    for s in &mut lingering {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("a CancelRequest got {n} bytes of answer"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a cancel connection was left open: {e}"),
        }
    }
    // Nothing left behind: the pooler's descriptors are back to where they were (plus
    // the fresh client and the server its query opened).
    assert!(
        wait_until(Duration::from_secs(10), || open_fds(pooler.pid())
            <= fds_before + 2),
        "descriptors: {} before, {} after",
        fds_before,
        open_fds(pooler.pid())
    );
    assert_eq!(value(&mut idle, "SELECT 7"), "7");
}
