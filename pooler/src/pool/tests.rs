//! Pool accounting without PostgreSQL: sockets are socketpairs, grants are polled by hand.

use std::{
    future::poll_fn,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use socket2::{Domain, Socket, Type};

use super::*;
use crate::{config::PoolMode, net::ServerAddr, server::Target};

fn target() -> Arc<Target> {
    Arc::new(Target {
        addr: ServerAddr::new(
            &IpAddr::V4(Ipv4Addr::LOCALHOST).to_string(),
            1,
            Duration::ZERO,
        ),
        dbname: "db".into(),
        user: "u".into(),
        password: None,
        startup_params: vec![],
        connect_timeout: Duration::from_secs(1),
    })
}

fn settings(size: u32, reserve: u32) -> PoolSettings {
    PoolSettings {
        mode: PoolMode::Transaction,
        size,
        reserve,
        min: 0,
        reserve_timeout: Duration::from_secs(5),
        login_retry: Duration::from_secs(15),
        logins: u32::MAX,
        lifetime: Duration::ZERO,
        idle_timeout: Duration::from_secs(50),
    }
}

fn pool_in(pools: &Pools, db: &str, user: &str, size: u32, db_limit: u32) -> Arc<Pool> {
    let key = PoolKey {
        db: db.into(),
        user: user.into(),
    };
    pools.get_or_create(&key, db_limit, 0, || (target(), settings(size, 1)))
}

fn server() -> IdleServer {
    let (a, _b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
    let mut info = ServerInfo::new("test".into());
    info.pid = 1;
    info.secret = 2;
    IdleServer { socket: a, info }
}

fn permit(a: Acquire) -> ConnectPermit {
    match a {
        Acquire::Now(Grant::Connect(p)) => p,
        _ => panic!("expected a connect permit"),
    }
}

fn waiting(a: Acquire) -> WaitHandle {
    match a {
        Acquire::Wait(h) => h,
        _ => panic!("expected to wait"),
    }
}

fn ready(h: &mut WaitHandle) -> Option<Grant> {
    poll_fn(|cx| h.poll_grant(cx).map(Some))
        .now_or_never()
        .flatten()
}

#[test]
fn permits_up_to_size_then_fifo_queue() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 2, 0);
    let a = permit(p.acquire(1));
    let b = permit(p.acquire(2));
    let mut w3 = waiting(p.acquire(3));
    let mut w4 = waiting(p.acquire(4));
    assert_eq!(p.counts().waiting, 2);
    a.connected(&mut ServerInfo::new("t".into()));
    b.connected(&mut ServerInfo::new("t".into()));
    assert_eq!(p.counts().active, 2);
    // A released server goes to the first waiter, not the second, not the idle list.
    p.release(server());
    assert!(matches!(ready(&mut w3), Some(Grant::Server(_))));
    assert!(ready(&mut w4).is_none());
    assert_eq!(p.counts().idle, 0);
    assert_eq!(p.counts().active, 2);
}

fn pool_with(s: PoolSettings) -> Arc<Pool> {
    let key = PoolKey {
        db: "d".into(),
        user: "u".into(),
    };
    Pools::new().get_or_create(&key, 0, 0, || (target(), s))
}

fn pool_with_logins(size: u32, logins: u32, min: u32) -> Arc<Pool> {
    let mut s = settings(size, 0);
    s.logins = logins;
    s.min = min;
    pool_with(s)
}

/// A pool of 1 server, busy, with `reserve` reserve servers and clients 2 and 3 queued
/// past reserve_pool_timeout; the janitor's check has run.
fn queued_past_reserve_timeout(reserve: u32, logins: u32) -> (Arc<Pool>, WaitHandle, WaitHandle) {
    let mut s = settings(1, reserve);
    s.logins = logins;
    s.reserve_timeout = Duration::ZERO;
    let p = pool_with(s);
    permit(p.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    let w2 = waiting(p.acquire(2));
    let w3 = waiting(p.acquire(3));
    p.check_waiters(Duration::ZERO);
    (p, w2, w3)
}

#[test]
fn one_login_at_a_time_then_the_queue_gets_the_next() {
    let p = pool_with_logins(3, 1, 0);
    let a = permit(p.acquire(1));
    // The pool has room, but a login is in progress: the others queue.
    let mut w2 = waiting(p.acquire(2));
    let mut w3 = waiting(p.acquire(3));
    assert_eq!((p.counts().connecting, p.counts().waiting), (1, 2));
    // The login done, the head of the queue may start the next one...
    a.connected(&mut ServerInfo::new("t".into()));
    let b = match ready(&mut w2) {
        Some(Grant::Connect(b)) => b,
        _ => panic!("expected the next login to go to the first waiter"),
    };
    assert!(ready(&mut w3).is_none());
    // ...and the first server, back from its transaction, goes to the next waiter
    // instead of waiting for a login of its own.
    p.release(server());
    assert!(matches!(ready(&mut w3), Some(Grant::Server(_))));
    // A failed login frees its slot too.
    let mut w4 = waiting(p.acquire(4));
    b.failed(None);
    let next = ready(&mut w4);
    assert!(matches!(next, Some(Grant::Connect(_))));
    assert_eq!(p.counts().connecting, 1);
}

#[test]
fn login_limit_applies_to_min_pool_size_and_the_reserve() {
    let p = pool_with_logins(4, 2, 4);
    let a = p.permit_for_min().expect("a first min_pool_size login");
    let _b = p.permit_for_min().expect("a second one");
    assert!(p.permit_for_min().is_none(), "two logins at a time");
    a.connected(&mut ServerInfo::new("t".into()));
    assert!(
        p.permit_for_min().is_some(),
        "a slot freed by a finished login"
    );

    let (p, mut w2, mut w3) = queued_past_reserve_timeout(2, 1);
    let reserve = ready(&mut w2);
    assert!(matches!(reserve, Some(Grant::Connect(_))));
    assert!(ready(&mut w3).is_none(), "one reserve login at a time");
    assert_eq!(p.counts().connecting, 1);
}

#[test]
fn zero_means_no_login_limit() {
    let cfg = crate::config::Config::parse_str(
        "[pooler]\nauth_type = \"trust\"\nserver_login_concurrency = 0\n[databases]\nd = {}\n",
        None,
    )
    .expect("config");
    let s = PoolSettings::from_config(&cfg, &cfg.databases["d"], "u");
    let p = pool_with_logins(3, s.logins, 0);
    let _a = permit(p.acquire(1));
    let _b = permit(p.acquire(2));
    let _c = permit(p.acquire(3));
    assert_eq!(p.counts().connecting, 3);
}

#[test]
fn most_recently_used_idle_first() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 3, 0);
    for id in 0..2 {
        permit(p.acquire(id)).connected(&mut ServerInfo::new("t".into()));
    }
    let first = server();
    let second = server();
    let second_id = second.info.id;
    p.release(first);
    p.release(second);
    match p.acquire(9) {
        Acquire::Now(Grant::Server(s)) => assert_eq!(s.info.id, second_id),
        _ => panic!("expected an idle server"),
    }
}

#[test]
fn dropped_permit_frees_slot_for_waiter() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 1, 0);
    let a = permit(p.acquire(1));
    let mut w = waiting(p.acquire(2));
    drop(a);
    let g = ready(&mut w);
    assert!(matches!(g, Some(Grant::Connect(_))));
    assert_eq!(p.counts().connecting, 1);
    drop(g);
    assert_eq!(
        p.counts().connecting,
        0,
        "an unused permit gives its slot back"
    );
}

#[test]
fn server_closed_frees_slot() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 1, 0);
    permit(p.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    let mut w = waiting(p.acquire(2));
    p.server_closed();
    assert!(matches!(ready(&mut w), Some(Grant::Connect(_))));
}

#[test]
fn waiter_that_leaves_gives_back_its_grant() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 1, 0);
    permit(p.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    let w = waiting(p.acquire(2));
    p.release(server());
    // The grant went to the waiter; dropping it must return the server to idle.
    drop(w);
    let c = p.counts();
    assert_eq!((c.idle, c.active, c.waiting), (1, 0, 0));
}

#[test]
fn login_error_fails_fast_then_clears() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 2, 0);
    let a = permit(p.acquire(1));
    let mut w = {
        // Fill the pool so the next client queues.
        let b = permit(p.acquire(2));
        let w = waiting(p.acquire(3));
        drop(b);
        w
    };
    // The waiter got b's slot as a permit.
    let p3 = match ready(&mut w) {
        Some(Grant::Connect(p)) => p,
        _ => panic!("expected a permit"),
    };
    let err = Arc::new(crate::server::ServerError::Pooler("boom".into()));
    p3.failed(Some(err.clone()));
    a.failed(Some(err));
    // No server at all and a fresh login error: the next client fails at once.
    assert!(matches!(p.acquire(4), Acquire::Now(Grant::Failed(_))));
}

#[test]
fn reserve_after_timeout_only_within_reserve() {
    let (p, mut w2, mut w3) = queued_past_reserve_timeout(1, u32::MAX);
    let g = ready(&mut w2);
    assert!(
        matches!(g, Some(Grant::Connect(_))),
        "oldest waiter gets the reserve"
    );
    assert!(ready(&mut w3).is_none(), "reserve of 1 exhausted");
    assert_eq!(p.counts().waiting, 1);
}

#[test]
fn query_wait_timeout_tells_the_oldest_waiters() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 1, 0);
    permit(p.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    let mut w = waiting(p.acquire(2));
    p.check_waiters(Duration::from_secs(3600));
    assert!(ready(&mut w).is_none(), "not yet");
    p.check_waiters(Duration::from_nanos(1));
    assert!(matches!(ready(&mut w), Some(Grant::TimedOut)));
    assert_eq!(p.counts().waiting, 0);
}

#[test]
fn db_limit_is_shared_and_evicts_sibling_idle() {
    let pools = Pools::new();
    let a = pool_in(&pools, "d", "alice", 5, 2);
    let b = pool_in(&pools, "d", "bob", 5, 2);
    permit(a.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    permit(a.acquire(2)).connected(&mut ServerInfo::new("t".into()));
    // Both slots of the database are alice's and active: bob queues.
    let mut wb = waiting(b.acquire(3));
    // alice releases one: bob is starving, so it is closed and bob may connect.
    a.release(server());
    assert!(matches!(ready(&mut wb), Some(Grant::Connect(_))));
    assert_eq!(a.counts().idle, 0);
    // Idle servers of a sibling are evicted to make room.
    let pools = Pools::new();
    let a = pool_in(&pools, "d", "alice", 5, 1);
    let b = pool_in(&pools, "d", "bob", 5, 1);
    permit(a.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    a.release(server());
    assert_eq!(a.counts().idle, 1);
    assert!(matches!(b.acquire(2), Acquire::Now(Grant::Connect(_))));
    assert_eq!(a.counts().idle, 0);
}

#[test]
fn expired_idle_servers_are_taken_out() {
    let pools = Pools::new();
    let p = pool_in(&pools, "d", "u", 2, 0);
    permit(p.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    permit(p.acquire(3)).connected(&mut ServerInfo::new("t".into()));
    let mut old = server();
    old.info.last_used = Instant::now() - Duration::from_secs(100);
    p.release(old);
    p.release(server());
    // server_idle_timeout is 50 s in these settings: only the old one goes.
    let expired = p.take_expired();
    assert_eq!(expired.len(), 1);
    assert!(expired[0].info.last_used.elapsed() >= Duration::from_secs(100));
    assert_eq!(p.counts().idle, 1);
    // The expired server's slot is free again; the fresh one is still idle.
    assert!(matches!(p.acquire(2), Acquire::Now(Grant::Server(_))));
    assert!(matches!(p.acquire(4), Acquire::Now(Grant::Connect(_))));
}

#[test]
fn past_lifetime_closed_on_release_not_idled() {
    let pools = Pools::new();
    let key = PoolKey {
        db: "d".into(),
        user: "u".into(),
    };
    let mut s = settings(2, 0);
    s.lifetime = Duration::from_secs(10);
    let p = pools.get_or_create(&key, 0, 0, || (target(), s));
    permit(p.acquire(1)).connected(&mut ServerInfo::new("t".into()));
    let mut old = server();
    old.info.created = Instant::now() - Duration::from_secs(11);
    p.release(old);
    let c = p.counts();
    assert_eq!((c.idle, c.active), (0, 0), "retired at release");
}
