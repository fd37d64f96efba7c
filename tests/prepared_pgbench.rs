//! pgbench -M prepared through the pooler in transaction mode: 20 clients over pool_size 2, no failures, statements shared and bounded per server.

mod common;
use common::*;

fn start(db: &str, extra: &str) -> Pooler {
    let pg = Postgres::shared();
    pg.create_database(db);
    let init = pg.pgbench(db, &["-i", "-s", "1", "-q"]);
    assert!(init.ok, "pgbench -i: {}\n{}", init.stdout, init.stderr);
    Pooler::start(&TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!("default_pool_size = 2\n{extra}"),
    ))
}

/// (client parses, server parses, binds) of `db` in SHOW STATS.
fn parse_stats(pooler: &Pooler, db: &str) -> [u64; 3] {
    [
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
    ]
    .map(|c| admin_number(pooler, "SHOW STATS", "database", db, c))
}

/// Statement counts of both servers: two clients each hold one in a transaction and read
/// pg_prepared_statements there (it only shows its own session's statements).
async fn statements_per_server(pooler: &Pooler, db: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let c = pg_connect(&pooler.connstr("postgres", db)).await.unwrap();
        // Simple queries: a statement of the probe's own would be counted too.
        c.simple_query("BEGIN").await.unwrap();
        let rows = c
            .simple_query(
                "SELECT pg_backend_pid(), count(*), \
                 count(*) FILTER (WHERE name LIKE '\\_pooler\\_%') FROM pg_prepared_statements",
            )
            .await
            .unwrap();
        let row = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("a row");
        let pid = row.get(0).unwrap_or_default().to_string();
        let (all, ours) = (
            row.get(1).unwrap_or_default(),
            row.get(2).unwrap_or_default(),
        );
        assert_eq!(
            all, ours,
            "server {pid}: statements not named by the pooler"
        );
        out.push((pid, all.parse().unwrap()));
        // Keep the server until both have looked.
        held.push(c);
    }
    assert_ne!(out[0].0, out[1].0, "both servers looked at");
    out
}

/// Runs pgbench with `script_args` and checks the run, the counters and the servers.
async fn run(
    db: &str,
    extra: &str,
    script_args: &'static [&'static str],
    statements: u64,
    cap: i64,
    seconds: &'static str,
) {
    let pooler = {
        let (db, extra) = (db.to_string(), extra.to_string());
        tokio::task::spawn_blocking(move || start(&db, &extra))
            .await
            .unwrap()
    };
    let mut args = vec!["-M", "prepared", "-c", "20", "-j", "20", "-T", seconds];
    args.extend(script_args);
    let (before, result, after, pooler) = tokio::task::spawn_blocking({
        let db = db.to_string();
        move || {
            let before = parse_stats(&pooler, &db);
            let result = pooler.pgbench("postgres", &db, &args);
            let after = parse_stats(&pooler, &db);
            (before, result, after, pooler)
        }
    })
    .await
    .unwrap();
    assert!(
        result.ok,
        "pgbench failed:\n{}\n{}",
        result.stdout, result.stderr
    );
    assert_eq!(
        (result.failed, result.aborted),
        (0, 0),
        "{}\n{}",
        result.stdout,
        result.stderr
    );
    assert!(result.transactions > 100, "{}", result.stdout);
    let [client, server, binds] = [0, 1, 2].map(|i| after[i] - before[i]);
    eprintln!(
        "{db}: {} transactions, {:.0} tps; client parses {client}, server parses {server}, binds {binds}",
        result.transactions, result.tps
    );
    // Each of the 20 connections prepares each statement of the script once.
    assert!(client >= 20 * statements, "client parses {client}");
    assert!(
        binds >= result.transactions * statements,
        "binds {binds} for {} transactions",
        result.transactions
    );
    assert!(server >= 1, "no statement was prepared on a server");
    if cap >= statements as i64 {
        // Nothing evicted: each server prepares each statement once.
        assert!(
            server <= 2 * statements,
            "server parses {server}: statements are not shared (client parses {client})"
        );
    } else {
        assert!(server > 2 * statements, "no eviction at cap {cap}?");
    }
    for (pid, count) in statements_per_server(&pooler, db).await {
        assert!(
            count <= cap,
            "server {pid} holds {count} statements, cap {cap}"
        );
        assert!(
            count >= 1,
            "server {pid} holds no statement of the pooler's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_prepared() {
    run("prep_bench_select", "", &["-S"], 1, 200, "5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_prepared() {
    // BEGIN, three UPDATEs, SELECT, INSERT, END.
    run("prep_bench_tpcb", "", &[], 7, 200, "5").await;
}

/// TPC-B needs 7 statements; with room for 4 per server they are closed and prepared again
/// all the time, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_prepared_with_eviction() {
    run(
        "prep_bench_evict",
        "max_prepared_statements = 4",
        &[],
        7,
        4,
        "3",
    )
    .await;
}
