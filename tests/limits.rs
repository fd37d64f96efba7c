//! Server connection limits seen from PostgreSQL: pool size, max_db/max_user_connections, reserve pool, min_pool_size, workers.

mod common;
use common::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// TRUST_TRANSACTION_CONFIG with `default_pool_size` replaced and `extra` lines added to [pooler].
fn config(pool_size: u32, extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG
        .replace(
            "default_pool_size = 5",
            &format!("default_pool_size = {pool_size}"),
        )
        .replace("[databases]", &format!("{extra}\n\n[databases]"))
}

/// Writes a pgbench script into the pooler's temp dir and returns its path.
fn script(pooler: &Pooler, name: &str, sql: &str) -> PathBuf {
    let path = pooler.dir.join(name);
    std::fs::write(&path, sql).expect("write pgbench script");
    path
}

fn assert_clean_run(what: &str, run: &PgbenchResult) {
    assert!(
        run.ok && run.failed == 0 && run.aborted == 0 && run.transactions > 0,
        "{what}: pgbench did not complete cleanly ({} transactions, {} failed, {} aborted)\n{}\n{}",
        run.transactions,
        run.failed,
        run.aborted,
        run.stdout,
        run.stderr
    );
}

/// Counts client backends matching `condition` in pg_stat_activity every 10 ms, on its own
/// thread and its own direct connection to PostgreSQL, until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<(Instant, i64)>>>,
}

impl Sampler {
    /// Starts sampling; returns once the first sample was taken.
    fn start(condition: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = stop.clone();
        let connstr = Postgres::shared().connstr("postgres", "postgres");
        let handle = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let client = pg_connect(&connstr).await.expect("sampler connection");
                let sql = format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                     AND pid <> pg_backend_pid() AND {condition}"
                );
                let stmt = client.prepare(&sql).await.expect("prepare sampler query");
                let mut samples = Vec::new();
                loop {
                    let row = client.query_one(&stmt, &[]).await.expect("sample");
                    samples.push((Instant::now(), row.get::<_, i64>(0)));
                    if samples.len() == 1 {
                        let _ = ready_tx.send(());
                    }
                    if flag.load(Ordering::SeqCst) {
                        return samples;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the sampler did not take its first sample");
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns every (time taken, count).
    fn finish(mut self) -> Vec<(Instant, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("not finished yet")
            .join()
            .expect("sampler thread panicked")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn max_of(samples: &[(Instant, i64)]) -> i64 {
    samples.iter().map(|s| s.1).max().unwrap_or(0)
}

fn in_db(db: &str) -> String {
    format!("datname = {}", sql_literal(db))
}

#[test]
fn pool_size_holds_under_60_clients() {
    let db = "limits_pool_size";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(&config(5, ""));
    let tx = script(
        &pooler,
        "tx.sql",
        "BEGIN;\nSELECT 1;\nSELECT pg_sleep(0.01);\nEND;\n",
    );
    let sampler = Sampler::start(in_db(db));
    let run = pooler.pgbench(
        "postgres",
        db,
        &[
            "-n",
            "-c",
            "60",
            "-j",
            "4",
            "-T",
            "3",
            "-f",
            tx.to_str().unwrap(),
        ],
    );
    let samples = sampler.finish();
    assert_clean_run("60 clients on pool 5", &run);
    assert!(samples.len() > 50, "only {} samples", samples.len());
    assert_eq!(
        max_of(&samples),
        5,
        "server connections to {db} must reach default_pool_size = 5 and never exceed it"
    );
}

#[test]
fn max_db_connections_is_shared_by_the_users_of_a_database() {
    let db = "limits_max_db";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(&config(5, "max_db_connections = 3"));
    let tx = script(&pooler, "tx.sql", "SELECT pg_sleep(0.01);\n");
    let tx = tx.to_str().unwrap();
    let sampler = Sampler::start(in_db(db));
    let args = ["-n", "-c", "10", "-j", "2", "-T", "3", "-f", tx];
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| pooler.pgbench("postgres", db, &args));
        let b = s.spawn(|| pooler.pgbench(TRUST_USER, db, &args));
        (a.join().unwrap(), b.join().unwrap())
    });
    let samples = sampler.finish();
    assert_clean_run("user postgres", &a);
    assert_clean_run(TRUST_USER, &b);
    assert_eq!(
        max_of(&samples),
        3,
        "server connections to {db} (both users) must reach max_db_connections = 3 and never exceed it"
    );
}

#[test]
fn max_user_connections_spans_databases() {
    let (db_a, db_b) = ("limits_max_user_a", "limits_max_user_b");
    let pg = Postgres::shared();
    pg.create_database(db_a);
    pg.create_database(db_b);
    let pooler = Pooler::start(&config(5, "max_user_connections = 2"));
    let tx = script(&pooler, "tx.sql", "SELECT pg_sleep(0.01);\n");
    let tx = tx.to_str().unwrap();
    let sampler = Sampler::start(format!(
        "usename = {} AND datname IN ({}, {})",
        sql_literal(TRUST_USER),
        sql_literal(db_a),
        sql_literal(db_b)
    ));
    let args = ["-n", "-c", "5", "-j", "1", "-T", "3", "-f", tx];
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| pooler.pgbench(TRUST_USER, db_a, &args));
        let b = s.spawn(|| pooler.pgbench(TRUST_USER, db_b, &args));
        (a.join().unwrap(), b.join().unwrap())
    });
    let samples = sampler.finish();
    assert_clean_run(db_a, &a);
    assert_clean_run(db_b, &b);
    assert_eq!(
        max_of(&samples),
        2,
        "{TRUST_USER}'s server connections over both databases must reach max_user_connections = 2 \
         and never exceed it"
    );
}

/// The per-database and per-user keys: `max_db_connections` in a `[databases]` entry and
/// `max_user_connections` in `[users]` bound those alone, with no global limit.
#[test]
fn per_database_and_per_user_limits() {
    let (db, other) = ("limits_per_db", "limits_per_db_other");
    let pg = Postgres::shared();
    pg.create_database(db);
    pg.create_database(other);
    let pooler = Pooler::start(
        &config(5, "")
            .replace(
                "[databases]\n",
                &format!(
                    "[databases]\n{db} = {{ host = \"{{pg_host}}\", port = {{pg_port}}, max_db_connections = 2 }}\n"
                ),
            )
            .replace(
                "[databases]",
                &format!("[users]\n{TRUST_USER} = {{ max_user_connections = 1 }}\n\n[databases]"),
            ),
    );
    let tx = script(&pooler, "tx.sql", "SELECT pg_sleep(0.01);\n");
    let tx = tx.to_str().unwrap();
    let args = ["-n", "-c", "6", "-j", "2", "-T", "3", "-f", tx];
    let db_sampler = Sampler::start(in_db(db));
    let user_sampler = Sampler::start(format!(
        "usename = {} AND datname = {}",
        sql_literal(TRUST_USER),
        sql_literal(other)
    ));
    let other_sampler = Sampler::start(format!(
        "usename = 'postgres' AND datname = {}",
        sql_literal(other)
    ));
    let (a, b, c) = thread::scope(|s| {
        let a = s.spawn(|| pooler.pgbench("postgres", db, &args));
        let b = s.spawn(|| pooler.pgbench(TRUST_USER, other, &args));
        let c = s.spawn(|| pooler.pgbench("postgres", other, &args));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let (db_max, user_max, other_max) = (
        max_of(&db_sampler.finish()),
        max_of(&user_sampler.finish()),
        max_of(&other_sampler.finish()),
    );
    assert_clean_run(db, &a);
    assert_clean_run(TRUST_USER, &b);
    assert_clean_run(other, &c);
    assert_eq!(db_max, 2, "{db}: its own max_db_connections = 2");
    assert_eq!(
        user_max, 1,
        "{TRUST_USER}: its own max_user_connections = 1"
    );
    assert_eq!(
        other_max, 5,
        "postgres on {other}: only default_pool_size = 5 applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_pool_opens_after_the_timeout_and_no_further() {
    let db = "limits_reserve";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(&config(
        2,
        "reserve_pool_size = 2\nreserve_pool_timeout = 0.5",
    ));
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(
            pg_connect(&pooler.connstr(TRUST_USER, db))
                .await
                .expect("login through the pooler"),
        );
    }
    let sampler = Sampler::start(in_db(db));
    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let r = c.simple_query("SELECT pg_sleep(2)").await;
                (r.map(|_| ()), Instant::now())
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        let (r, at) = t.await.unwrap();
        r.unwrap_or_else(|e| panic!("a client's pg_sleep(2) failed: {e}"));
        done.push(at.duration_since(t0));
    }
    let samples = sampler.finish();
    done.sort();
    let after = |at: Instant| at.saturating_duration_since(t0);
    let first_over_pool = samples.iter().find(|s| s.1 > 2).map(|s| after(s.0)).expect(
        "the reserve pool was never used: the count never went above default_pool_size = 2",
    );
    assert!(
        first_over_pool >= Duration::from_millis(500),
        "a reserve connection was opened {first_over_pool:?} after the queries started, before \
         reserve_pool_timeout = 0.5 s"
    );
    assert_eq!(
        max_of(&samples),
        4,
        "server connections must reach pool 2 + reserve 2 and never exceed it"
    );
    // pool + reserve ran four pg_sleep(2) side by side; the fifth had to wait for one of them.
    assert!(
        done[3] < Duration::from_millis(3500),
        "the 4th query finished after {:?}: the reserve did not let it run alongside the first two \
         (all finish times: {done:?})",
        done[3]
    );
    assert!(
        done[4] >= Duration::from_millis(3800),
        "the 5th query finished after {:?}: it cannot have waited for a server (all: {done:?})",
        done[4]
    );
}

#[test]
fn min_pool_size_is_kept_after_the_first_client() {
    let db = "limits_min_pool";
    let pg = Postgres::shared();
    pg.create_database(db);
    let pooler = Pooler::start(&config(5, "min_pool_size = 3"));
    assert_eq!(
        pg.backend_count(db, None),
        0,
        "no pool before a client came"
    );
    assert_eq!(
        pooler.psql("postgres", db, None, "SELECT 1").as_deref(),
        Ok("1")
    );
    let reached = wait_until(Duration::from_secs(10), || pg.backend_count(db, None) == 3);
    assert!(
        reached,
        "min_pool_size = 3: {} server connections 10 s after the first client left",
        pg.backend_count(db, None)
    );
    // It must stay there across several maintenance rounds, neither shrinking nor growing.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(
            pg.backend_count(db, None),
            3,
            "the pool left min_pool_size = 3"
        );
    }
}

/// Parses "number of transactions above the X ms latency limit: N/M".
fn late_transactions(run: &PgbenchResult) -> u64 {
    run.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("number of transactions above the "))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no latency-limit line in pgbench output:\n{}", run.stdout))
}

#[test]
fn a_server_released_on_one_worker_serves_a_client_on_another() {
    let db = "limits_workers";
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(&config(1, "workers = 2"));
    let tx = script(&pooler, "tx.sql", "SELECT pg_sleep(0.005);\n");
    let sampler = Sampler::start(in_db(db));
    let started = Instant::now();
    // -C: a new client connection per transaction, so SO_REUSEPORT spreads them over both
    // workers while they all share one server connection.
    let run = pooler.pgbench(
        "postgres",
        db,
        &[
            "-n",
            "-C",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            "3",
            "-L",
            "3000",
            "-f",
            tx.to_str().unwrap(),
        ],
    );
    let took = started.elapsed();
    let samples = sampler.finish();
    assert_clean_run("8 short-lived clients on pool 1 with 2 workers", &run);
    assert!(
        took < Duration::from_secs(20),
        "a 3 s run took {took:?}: clients waited for a server released on another worker"
    );
    assert_eq!(
        late_transactions(&run),
        0,
        "some transactions waited more than 3 s for the server:\n{}",
        run.stdout
    );
    assert!(
        run.transactions >= 50,
        "only {} transactions in 3 s",
        run.transactions
    );
    assert_eq!(max_of(&samples), 1, "pool_size 1 exceeded or never used");
}

/// SHOW POOLS (cl_waiting, sv_login) of `db`, if it has a pool yet.
fn waiting_and_logging_in(pooler: &Pooler, db: &str) -> Option<(u64, u64)> {
    let out = pooler
        .admin("SHOW POOLS")
        .unwrap_or_else(|e| panic!("SHOW POOLS: {e}"));
    out.lines().find_map(|l| {
        let r: Vec<&str> = l.split('|').collect();
        (r[0] == db).then(|| (r[3].parse().unwrap(), r[12].parse().unwrap()))
    })
}

#[test]
fn server_login_concurrency_caps_logins_in_progress() {
    // A "server" that accepts connections and never says a word: each login to it hangs
    // until server_connect_timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in hung.incoming().flatten() {
            held.push(s);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let cfg = config(
        5,
        "server_login_concurrency = 2\nserver_connect_timeout = 3",
    ) + &format!("hung = {{ host = \"127.0.0.1\", port = {hung_port} }}\n");
    let pooler = Pooler::start(&cfg);
    let mut clients: Vec<RawClient> = (0..4)
        .map(|_| {
            let mut c = RawClient::connect(pooler.port);
            c.startup(TRUST_USER, "hung", &[]);
            c
        })
        .collect();
    // All four asked the pool for a server (a login needs one, to learn what to greet the
    // client with): two logins started, the other two clients queue although the pool has
    // room for five.
    let mut seen = None;
    let settled = wait_until(Duration::from_secs(2), || {
        seen = waiting_and_logging_in(&pooler, "hung");
        seen == Some((2, 2))
    });
    assert!(
        settled,
        "expected 2 clients waiting and 2 servers logging in, SHOW POOLS said (cl_waiting, sv_login) = {seen:?}"
    );
    assert!(
        wait_until(Duration::from_secs(2), || accepted.load(Ordering::SeqCst)
            == 2),
        "the server saw {} connections",
        accepted.load(Ordering::SeqCst)
    );
    // When the two logins time out, their clients get an error and the two queued clients
    // start the next two logins: never more than two at once.
    let mut max_logins = 0;
    let next = wait_until(Duration::from_secs(8), || {
        if let Some((_, login)) = waiting_and_logging_in(&pooler, "hung") {
            max_logins = max_logins.max(login);
        }
        accepted.load(Ordering::SeqCst) == 4
    });
    assert!(
        next,
        "the queued clients never got their turn: {} connections",
        accepted.load(Ordering::SeqCst)
    );
    assert!(max_logins <= 2, "{max_logins} logins in progress at once");
    let failed: Vec<_> = clients
        .iter_mut()
        .filter_map(|c| match c.try_recv(Duration::from_millis(200)) {
            Ok(Some(m)) if m.is_error() => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "the two clients whose logins timed out get an ErrorResponse"
    );
    assert!(
        failed
            .iter()
            .all(|m| m.field(b'C').is_some_and(|c| c.starts_with("08"))),
        "a connection-class SQLSTATE: {:?}",
        failed.iter().map(|m| m.field(b'M')).collect::<Vec<_>>()
    );
}
