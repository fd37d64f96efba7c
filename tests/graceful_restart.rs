//! Signals with PgBouncer's meaning (SIGTERM, second SIGTERM, SIGINT, SIGQUIT) and a rolling restart of two so_reuseport instances under pgbench -C.

mod common;
use common::*;

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const DB: &str = "graceful_restart";

fn start() -> Pooler {
    Postgres::shared().create_database(DB);
    Pooler::start(TRUST_TRANSACTION_CONFIG)
}

fn login(pooler: &Pooler) -> RawClient {
    RawClient::login_trust(pooler.port, TRUST_USER, DB).0
}

fn ok(c: &mut RawClient, sql: &str) {
    let reply = c.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "`{sql}`: {reply:?}");
}

/// New connections are refused (the listener is closed).
fn refuses_new_connections(port: u16) -> bool {
    wait_until(Duration::from_secs(2), || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    })
}

fn assert_still_running(pooler: &mut Pooler, what: &str) {
    assert!(
        pooler.wait_exit(Duration::from_millis(500)).is_none(),
        "the pooler exited {what}"
    );
}

fn assert_exits(pooler: &mut Pooler, within: Duration, what: &str) {
    let status = pooler
        .wait_exit(within)
        .unwrap_or_else(|| panic!("the pooler still runs {within:?} after {what}"));
    assert!(status.success(), "exit status after {what}: {status}");
}

/// Logs in with a cleartext password (auth_type plain): startup, password, ReadyForQuery.
fn login_plain(port: u16) -> RawClient {
    let mut c = RawClient::connect(port);
    c.startup(TRUST_USER, DB, &[]);
    assert_eq!(c.recv().and_then(|m| m.auth_code()), Some(3));
    c.send(&fe::password("s3cret"));
    let msgs = c.recv_until_ready();
    assert!(!msgs.iter().any(Msg::is_error), "login: {msgs:?}");
    c
}

#[test]
fn sigterm_waits_for_the_last_client() {
    let pg = Postgres::shared();
    pg.create_database(DB);
    let cfg = TRUST_TRANSACTION_CONFIG.replace(
        "auth_type = \"trust\"",
        "auth_type = \"plain\"\nauth_file = \"{dir}/userlist.txt\"",
    );
    let mut pooler = Pooler::start_with_userlist(pg, &cfg, &[(TRUST_USER, "s3cret")]);
    let mut a = login_plain(pooler.port);
    ok(&mut a, "SELECT 1");
    // A client in the middle of logging in (asked for its password) is connected too.
    let mut late = RawClient::connect(pooler.port);
    late.startup(TRUST_USER, DB, &[]);
    assert_eq!(late.recv().and_then(|m| m.auth_code()), Some(3));
    pooler.signal(libc::SIGTERM);
    assert!(
        refuses_new_connections(pooler.port),
        "still accepting after SIGTERM"
    );
    assert_still_running(&mut pooler, "with clients connected");
    // The connected clients keep being served, transactions included.
    ok(&mut a, "BEGIN");
    ok(&mut a, "SELECT 2");
    ok(&mut a, "COMMIT");
    a.send(&fe::terminate());
    assert_still_running(&mut pooler, "with a client still logging in");
    late.send(&fe::password("s3cret"));
    let msgs = late.recv_until_ready();
    assert!(!msgs.iter().any(Msg::is_error), "late login: {msgs:?}");
    ok(&mut late, "SELECT 3");
    assert_still_running(&mut pooler, "with a client connected");
    late.send(&fe::terminate());
    assert_exits(&mut pooler, Duration::from_secs(3), "the last client left");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut pooler = start();
    let mut a = login(&pooler);
    ok(&mut a, "SELECT 1");
    pooler.signal(libc::SIGTERM);
    assert_still_running(&mut pooler, "with a client connected");
    let second = Instant::now();
    pooler.signal(libc::SIGTERM);
    assert_exits(&mut pooler, Duration::from_secs(3), "a second SIGTERM");
    assert!(second.elapsed() < Duration::from_secs(3));
    let msgs = a.until_closed();
    let codes: Vec<_> = msgs.iter().filter_map(|m| m.field(b'C')).collect();
    assert_eq!(codes, ["57P01"], "{msgs:?}");
}

#[test]
fn sigint_waits_for_servers_to_be_released() {
    let mut pooler = start();
    let mut in_tx = login(&pooler);
    let mut idle = login(&pooler);
    ok(&mut idle, "SELECT 1");
    ok(&mut in_tx, "BEGIN");
    ok(&mut in_tx, "SELECT 1");
    pooler.signal(libc::SIGINT);
    assert!(
        refuses_new_connections(pooler.port),
        "still accepting after SIGINT"
    );
    assert_still_running(&mut pooler, "with a transaction open");
    ok(&mut in_tx, "SELECT 2");
    assert_still_running(&mut pooler, "with a transaction open");
    let reply = in_tx.query("COMMIT");
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"COMMIT")),
        "COMMIT not answered: {reply:?}"
    );
    // The idle client (no server) is not waited for.
    assert_exits(&mut pooler, Duration::from_secs(3), "COMMIT under SIGINT");
    idle.until_closed();
}

#[test]
fn sigquit_exits_at_once_with_57p01() {
    let mut pooler = start();
    let mut busy = login(&pooler);
    busy.send(&fe::query("SELECT pg_sleep(5)"));
    let pg = Postgres::shared();
    let running = wait_until(Duration::from_secs(5), || {
        pg.psql(
            DB,
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)'",
        ) == "1"
    });
    assert!(running, "the query never started");
    let sent = Instant::now();
    pooler.signal(libc::SIGQUIT);
    assert_exits(&mut pooler, Duration::from_secs(2), "SIGQUIT");
    assert!(sent.elapsed() < Duration::from_secs(2));
    let msgs = busy.until_closed();
    let err = msgs
        .iter()
        .find(|m| m.is_error())
        .unwrap_or_else(|| panic!("no error before the close: {msgs:?}"));
    assert_eq!(err.field(b'S').as_deref(), Some("FATAL"), "{err:?}");
    assert_eq!(err.field(b'C').as_deref(), Some("57P01"), "{err:?}");
}

/// A pooler process on a port given in advance (Pooler::start picks its own port, and two
/// so_reuseport instances must share one).
struct Instance {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn start(port: u16) -> Instance {
        let pg = Postgres::shared();
        let dir = tempfile::Builder::new()
            .prefix("pooler-reuseport-")
            .tempdir()
            .unwrap();
        let config = format!(
            "[pooler]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nunix_socket_dir = \"\"\n\
             so_reuseport = true\npool_mode = \"transaction\"\nauth_type = \"trust\"\n\
             default_pool_size = 4\n\n[databases]\n\"*\" = {{ host = \"{}\", port = {} }}\n",
            pg.host, pg.port
        );
        let path = dir.path().join("config.toml");
        fs::write(&path, config).unwrap();
        let log = dir.path().join("pooler.log");
        let out = fs::File::create(&log).unwrap();
        let bin = std::env::var_os("POOLER_TEST_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pooler")));
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut inst = Instance {
            child,
            log,
            _dir: dir,
        };
        let listening = format!("listening on 127.0.0.1:{port}");
        let up = wait_until(Duration::from_secs(15), || {
            inst.log_text().contains(&listening) || inst.exited()
        });
        assert!(
            up && !inst.exited(),
            "instance did not start:\n{}",
            inst.log_text()
        );
        inst
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn logins(&self) -> usize {
        self.log_text().matches(" login ").count()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- pooler instance log ---\n{tail}");
        }
    }
}

/// Sets net.ipv4.tcp_migrate_req (Linux >= 5.14: connections queued on a closing
/// SO_REUSEPORT listener move to another listener of the port instead of being reset) for
/// the duration of the test, and puts the old value back.
struct MigrateReq(Option<String>);
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
impl MigrateReq {
    fn enable() -> MigrateReq {
        let old = fs::read_to_string(MIGRATE_REQ).ok();
        if old.is_some() && fs::write(MIGRATE_REQ, "1").is_err() {
            eprintln!("cannot set {MIGRATE_REQ} (not root?)");
        }
        MigrateReq(old)
    }
}
impl Drop for MigrateReq {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = fs::write(MIGRATE_REQ, old.trim());
        }
    }
}

#[test]
fn rolling_restart_with_so_reuseport_loses_no_transaction() {
    Postgres::shared().create_database(DB);
    let _migrate = MigrateReq::enable();
    let port = free_port();
    let mut a = Instance::start(port);
    let b = Instance::start(port);
    let script = a._dir.path().join("select.sql");
    fs::write(&script, "SELECT 1;\n").unwrap();
    let script = script.to_str().unwrap().to_string();

    let (run, restarted) = thread::scope(|s| {
        let bench = s.spawn(|| {
            let args = ["-n", "-C", "-c", "8", "-j", "2", "-T", "10", "-f", &script];
            run_pgbench(port, TRUST_USER, DB, None, &args)
        });
        // Connections land on both instances.
        let both = wait_until(Duration::from_secs(5), || {
            a.logins() > 20 && b.logins() > 20
        });
        assert!(both, "logins: A {}, B {}", a.logins(), b.logins());
        // SIGTERM: A stops accepting and exits once its clients (one transaction each) leave.
        // SAFETY: kill on our own child, not yet reaped.
        unsafe { libc::kill(a.child.id() as libc::pid_t, libc::SIGTERM) };
        let exited = wait_until(Duration::from_secs(5), || a.exited());
        assert!(exited, "instance A still runs 5 s after SIGTERM");
        let restarted = Instance::start(port);
        let serving = wait_until(Duration::from_secs(5), || restarted.logins() > 20);
        assert!(serving, "the restarted instance gets no connections");
        (bench.join().unwrap(), restarted)
    });
    assert!(
        run.ok && run.failed == 0 && run.aborted == 0 && run.transactions > 0,
        "pgbench across the rolling restart (B served {} logins, new A {}):\n{}\n{}",
        b.logins(),
        restarted.logins(),
        run.stdout,
        run.stderr
    );
}
