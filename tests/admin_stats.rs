//! Admin console counters against a known workload: SHOW STATS / STATS_AVERAGES /
//! CLIENT_STATS / POOLS / CLIENTS values while clients work, wait and disconnect.

mod common;
use common::*;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

fn config() -> String {
    TRUST_TRANSACTION_CONFIG
        .replace(
            "default_pool_size = 5",
            "default_pool_size = 5\nstats_period = 1",
        )
        .replace(
            "[databases]",
            "[databases]\nadmin_stats_pools = { host = \"{pg_host}\", port = {pg_port}, pool_size = 1 }",
        )
}

type Row = HashMap<String, String>;

/// Rows of a console command as text, by column name (NULL = "").
async fn show(console: &Client, cmd: &str) -> Vec<Row> {
    console
        .simple_query(cmd)
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The row of `cmd` whose `key` column equals `value`.
async fn row_of(console: &Client, cmd: &str, key: &str, value: &str) -> Option<Row> {
    show(console, cmd)
        .await
        .into_iter()
        .find(|r| r[key] == value)
}

fn num(row: &Option<Row>, col: &str) -> u64 {
    row.as_ref().map_or(0, |r| r[col].parse().unwrap())
}

/// Async wait_until: polls `cond` every 20 ms until it holds or `timeout` passes.
async fn eventually<F: Future<Output = bool>>(
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn console(pooler: &Pooler) -> Client {
    pg_connect(&pooler.connstr("postgres", "pgbouncer"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_a_known_workload() {
    const DB: &str = "admin_stats_work";
    const N: u64 = 25;
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(&config());
    let console = console(&pooler).await;
    let before = row_of(&console, "SHOW STATS", "database", DB).await;

    let conn = format!(
        "{} application_name=stats_probe",
        pooler.connstr(TRUST_USER, DB)
    );
    let client = pg_connect(&conn).await.unwrap();
    for _ in 0..N {
        client.simple_query("SELECT 1").await.unwrap();
    }
    // While the client is connected its counters are live ones...
    let during = row_of(&console, "SHOW STATS", "database", DB).await;
    assert_eq!(
        num(&during, "total_xact_count") - num(&before, "total_xact_count"),
        N
    );
    assert_eq!(
        num(&during, "total_query_count") - num(&before, "total_query_count"),
        N
    );
    assert!(num(&during, "total_xact_time") > 0);
    assert!(num(&during, "total_query_time") > 0);
    assert!(num(&during, "total_received") > 0 && num(&during, "total_sent") > 0);
    let mine = row_of(
        &console,
        "SHOW CLIENT_STATS",
        "application_name",
        "stats_probe",
    )
    .await;
    assert_eq!(num(&mine, "xact_count"), N);
    assert_eq!(num(&mine, "query_count"), N);
    assert!(num(&mine, "total_query_time") > 0);
    assert_eq!(mine.as_ref().unwrap()["database"], DB);
    let totals = row_of(&console, "SHOW STATS_TOTALS", "database", DB).await;
    assert_eq!(num(&totals, "xact_count"), num(&during, "total_xact_count"));

    // ...and once it has left they are the pool's: same values, never lower.
    drop(client);
    let left = eventually(Duration::from_secs(5), || async {
        row_of(
            &console,
            "SHOW CLIENT_STATS",
            "application_name",
            "stats_probe",
        )
        .await
        .is_none()
    })
    .await;
    assert!(left, "the client is still listed");
    let after = row_of(&console, "SHOW STATS", "database", DB).await;
    assert_eq!(
        num(&after, "total_xact_count") - num(&before, "total_xact_count"),
        N
    );
    assert_eq!(
        num(&after, "total_query_count") - num(&before, "total_query_count"),
        N
    );

    // stats_period = 1: the averages of a second with the workload, then of idle seconds.
    let client = pg_connect(&conn).await.unwrap();
    let busy = eventually(Duration::from_secs(10), || async {
        client.simple_query("SELECT 1").await.unwrap();
        num(
            &row_of(&console, "SHOW STATS_AVERAGES", "database", DB).await,
            "xact_count",
        ) > 0
    })
    .await;
    assert!(busy, "avg xact_count stayed 0 under load");
    let idle = eventually(Duration::from_secs(10), || async {
        num(
            &row_of(&console, "SHOW STATS_AVERAGES", "database", DB).await,
            "xact_count",
        ) == 0
    })
    .await;
    assert!(idle, "avg xact_count did not fall back to 0 when idle");
    let totals = show(&console, "SHOW TOTALS").await;
    let xacts = totals
        .iter()
        .find(|r| r["name"] == "total_xact_count")
        .unwrap();
    assert!(xacts["value"].parse::<u64>().unwrap() >= N);
}

async fn pool(console: &Client, db: &str) -> Row {
    row_of(console, "SHOW POOLS", "database", db)
        .await
        .unwrap_or_else(|| panic!("no pool for {db}"))
}

fn counts(p: &Row) -> (u64, u64, u64, u64) {
    let n = |c: &str| p[c].parse::<u64>().unwrap();
    (
        n("cl_active"),
        n("cl_waiting"),
        n("sv_active"),
        n("sv_idle"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_show_active_waiting_and_back_to_idle() {
    const DB: &str = "admin_stats_pools";
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(&config());
    let console = console(&pooler).await;
    let holder = pg_connect(&pooler.connstr(TRUST_USER, DB)).await.unwrap();
    holder.simple_query("BEGIN; SELECT 1").await.unwrap();
    let p = pool(&console, DB).await;
    assert_eq!(counts(&p), (1, 0, 1, 0), "{p:?}");
    assert_eq!(p["pool_mode"], "transaction");

    // pool_size = 1 and the only server is held: a second client queues.
    let waiter = pg_connect(&(pooler.connstr(TRUST_USER, DB) + " application_name=waiter"))
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        waiter.simple_query("SELECT 2").await.unwrap();
        waiter
    });
    let queued = eventually(Duration::from_secs(5), || async {
        let p = pool(&console, DB).await;
        counts(&p) == (1, 1, 1, 0) && (p["maxwait"] != "0" || p["maxwait_us"] != "0")
    })
    .await;
    assert!(queued, "{:?}", pool(&console, DB).await);
    let w = row_of(&console, "SHOW CLIENTS", "application_name", "waiter")
        .await
        .unwrap();
    assert_eq!(w["state"], "waiting");
    assert_eq!(w["link"], "");
    let held: Vec<Row> = show(&console, "SHOW SERVERS").await;
    let server = held.iter().find(|r| r["database"] == DB).unwrap();
    assert_eq!(server["state"], "active");
    assert!(server["remote_pid"].parse::<u64>().is_ok());

    holder.simple_query("COMMIT").await.unwrap();
    let waiter = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting client was not served")
        .unwrap();
    let p = pool(&console, DB).await;
    assert_eq!(counts(&p), (2, 0, 0, 1), "{p:?}");
    assert_eq!(
        (p["maxwait"].as_str(), p["maxwait_us"].as_str()),
        ("0", "0")
    );

    // A clean disconnect, an abrupt one in the middle of a transaction, and back to idle.
    drop(holder);
    drop(waiter);
    let (mut raw, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    raw.query("BEGIN");
    raw.query("SELECT 1");
    let busy = eventually(Duration::from_secs(5), || async {
        counts(&pool(&console, DB).await) == (1, 0, 1, 0)
    })
    .await;
    assert!(busy, "{:?}", pool(&console, DB).await);
    drop(raw);
    let back = eventually(Duration::from_secs(10), || async {
        let (ca, cw, sa, _) = counts(&pool(&console, DB).await);
        (ca, cw, sa) == (0, 0, 0)
    })
    .await;
    assert!(back, "{:?}", pool(&console, DB).await);
}
