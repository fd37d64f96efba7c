//! PostgreSQL going away and coming back: an immediate restart under pgbench, max_connections reached, a changed password.

mod common;
use common::*;

use std::thread;
use std::time::{Duration, Instant};

const DB: &str = "pg_restart";
const POOL_SIZE: i64 = 5;

/// Transaction mode, pool_size 5, server_login_retry 2 s, plus extra [pooler] lines.
fn config(extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5\n",
        &format!("default_pool_size = {POOL_SIZE}\nserver_login_retry = 2\n{extra}\n"),
    )
}

fn error_of(msgs: &[Msg]) -> Msg {
    msgs.iter()
        .find(|m| m.is_error())
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorResponse: {msgs:?}"))
}

/// SHOW POOLS counts of `db`: (cl_active, cl_waiting, sv_active, sv_used, sv_login, sv_idle).
fn pool_counts(pooler: &Pooler, db: &str) -> [i64; 6] {
    let rows = admin_rows(pooler, "SHOW POOLS");
    let row = rows
        .iter()
        .find(|r| r.get("database").map(String::as_str) == Some(db));
    let n = |col: &str| {
        row.and_then(|r| r.get(col))
            .map_or(0, |v| v.parse().unwrap_or(-1))
    };
    [
        n("cl_active"),
        n("cl_waiting"),
        n("sv_active"),
        n("sv_used"),
        n("sv_login"),
        n("sv_idle"),
    ]
}

#[test]
fn immediate_restart_under_pgbench_recovers_without_leaks() {
    let pg = Postgres::start(PgOptions::default());
    pg.create_database(DB);
    let pooler = Pooler::start_for(&pg, &config(""));
    assert_eq!(
        pooler.psql(TRUST_USER, DB, None, "SELECT 1").as_deref(),
        Ok("1")
    );
    let baseline = pool_counts(&pooler, DB);
    assert_eq!(
        baseline[..5],
        [0; 5],
        "SHOW POOLS before the run: {baseline:?}"
    );
    let script = pooler.dir.join("sleep.sql");
    std::fs::write(&script, "SELECT pg_sleep(0.02);\n").unwrap();
    let script = script.to_str().unwrap().to_string();
    let (mut inflight, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);

    thread::scope(|s| {
        let bench = s.spawn(|| {
            let started = Instant::now();
            let args = ["-n", "-c", "8", "-j", "2", "-T", "5", "-f", &script];
            (pooler.pgbench(TRUST_USER, DB, &args), started.elapsed())
        });
        inflight.send(&fe::query("SELECT pg_sleep(30) AS restart_probe"));
        let running = wait_until(Duration::from_secs(10), || {
            pg.psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%restart_probe%' \
                 AND state = 'active' AND pid <> pg_backend_pid()",
            ) == "1"
                && pg.backend_count(DB, None) == POOL_SIZE
        });
        assert!(running, "the probe query and pgbench never filled the pool");
        pg.restart_immediate();
        let back = Instant::now();

        // The client whose query was running gets an error and is closed.
        let msgs = inflight.until_closed();
        let err = error_of(&msgs);
        assert!(
            matches!(err.field(b'C').as_deref(), Some("08006" | "57P01")),
            "the in-flight query's error: {msgs:?}"
        );
        // New queries succeed once PostgreSQL is back, within server_login_retry.
        let recovered = wait_until(Duration::from_secs(10), || {
            pooler.psql(TRUST_USER, DB, None, "SELECT 2").as_deref() == Ok("2")
        });
        assert!(
            recovered,
            "no query succeeded 10 s after PostgreSQL came back"
        );
        let took = back.elapsed();
        assert!(
            took <= Duration::from_secs(3),
            "queries succeeded only {took:?} after PostgreSQL was back (server_login_retry = 2)"
        );
        // Nobody hangs: pgbench ends by its -T deadline plus a margin.
        let (run, ran) = bench.join().unwrap();
        assert!(
            ran <= Duration::from_secs(5 + 10),
            "pgbench -T 5 took {ran:?}:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    });

    // Counts come back to their baseline.
    let mut counts = [0; 6];
    let settled = wait_until(Duration::from_secs(5), || {
        counts = pool_counts(&pooler, DB);
        counts[..5] == [0; 5] && counts[5] == pg.backend_count(DB, None)
    });
    assert!(
        settled,
        "SHOW POOLS after the restart: {counts:?}, baseline {baseline:?}"
    );
    // A new run is clean, and leaves no more servers than the pool size.
    let run = pooler.pgbench(
        TRUST_USER,
        DB,
        &["-n", "-c", "8", "-j", "2", "-T", "2", "-f", &script],
    );
    assert!(
        run.ok && run.failed == 0 && run.aborted == 0 && run.transactions > 0,
        "pgbench after the restart:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let backends = pg.backend_count(DB, None);
    assert!(
        backends <= POOL_SIZE,
        "{backends} backends for pool_size {POOL_SIZE}"
    );
    let settled = wait_until(Duration::from_secs(5), || {
        counts = pool_counts(&pooler, DB);
        counts[..5] == [0; 5] && counts[5] == pg.backend_count(DB, None)
    });
    assert!(settled, "SHOW POOLS after the second run: {counts:?}");
}

#[test]
fn max_connections_reached_relays_the_servers_53300() {
    let pg = Postgres::start(PgOptions {
        max_connections: 3,
        extra_conf: vec!["superuser_reserved_connections = 0".into()],
    });
    pg.create_database(DB);
    let pooler = Pooler::start_for(&pg, &config(""));
    // Every slot taken by direct connections.
    let mut held: Vec<RawClient> = (0..3)
        .map(|_| RawClient::login_trust(pg.port, TRUST_USER, DB).0)
        .collect();
    let mut c = RawClient::connect(pooler.port);
    c.startup(TRUST_USER, DB, &[]);
    let msgs = c.until_closed();
    let err = error_of(&msgs);
    assert_eq!(err.field(b'C').as_deref(), Some("53300"), "{msgs:?}");
    assert_eq!(
        err.field(b'M').as_deref(),
        Some("sorry, too many clients already"),
        "{msgs:?}"
    );
    // A slot frees up: clients get in again (after server_login_retry at most).
    held.pop();
    let freed = Instant::now();
    let ok = wait_until(Duration::from_secs(6), || {
        pooler.psql(TRUST_USER, DB, None, "SELECT 3").as_deref() == Ok("3")
    });
    assert!(ok, "still refused 6 s after a slot was freed");
    assert!(
        freed.elapsed() <= Duration::from_secs(3),
        "{:?}",
        freed.elapsed()
    );
}

/// Puts md5_user's password back however the test ends.
struct RestorePassword;
impl Drop for RestorePassword {
    fn drop(&mut self) {
        let sql = format!(
            "SET password_encryption = 'md5'; ALTER ROLE {MD5_USER} PASSWORD '{MD5_PASSWORD}'"
        );
        let _ = Postgres::shared().try_psql("postgres", &sql);
    }
}

#[test]
fn a_password_changed_on_the_server_relays_its_28p01() {
    let pg = Postgres::shared();
    pg.create_database(DB);
    let _restore = RestorePassword;
    let entry = format!(
        "pw = {{ host = \"{{pg_host}}\", port = {{pg_port}}, dbname = \"{DB}\", \
         user = \"{MD5_USER}\", password = \"{MD5_PASSWORD}\" }}\n"
    );
    let pooler = Pooler::start(&(config("") + &entry));
    assert_eq!(
        pooler
            .psql(TRUST_USER, "pw", None, "SELECT current_user")
            .as_deref(),
        Ok(MD5_USER)
    );
    pg.psql(
        "postgres",
        &format!("ALTER ROLE {MD5_USER} PASSWORD 'changed elsewhere'"),
    );
    // The pooled server is replaced: the next one must log in with the old password.
    pooler.admin("RECONNECT pw").expect("RECONNECT");
    let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, "pw");
    c.send(&fe::query("SELECT 1"));
    let msgs = c.until_closed();
    let err = error_of(&msgs);
    assert_eq!(err.field(b'C').as_deref(), Some("28P01"), "{msgs:?}");
    assert_eq!(
        err.field(b'M'),
        Some(format!(
            "password authentication failed for user \"{MD5_USER}\""
        )),
        "{msgs:?}"
    );
    // Other databases are not affected.
    assert_eq!(
        pooler.psql(TRUST_USER, DB, None, "SELECT 4").as_deref(),
        Ok("4")
    );
}
