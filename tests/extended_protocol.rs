//! Extended query protocol through the pooler: pipelines, errors skipping to Sync, Flush, tokio-postgres, pgbench -M extended.

mod common;
use common::*;

use std::io::ErrorKind;
use std::time::Duration;

use tokio_postgres::types::Type;

/// Transaction mode with `size` servers per pool.
fn start(db: &str, size: u32) -> Pooler {
    Postgres::shared().create_database(db);
    Pooler::start(&TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!("default_pool_size = {size}"),
    ))
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// Reads messages until `n` ReadyForQuery have arrived.
fn recv_ready_n(client: &mut RawClient, n: usize) -> Vec<Msg> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.extend(client.recv_until_ready());
    }
    all
}

/// Parse/Bind/Execute of an unnamed statement with text parameters, no Sync.
fn unnamed(sql: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = fe::parse("", sql, &[]);
    out.extend(fe::bind("", "", params));
    out.extend(fe::execute("", 0));
    out
}

fn assert_waiting(client: &mut RawClient, what: &str) {
    match client.try_recv(Duration::from_millis(400)) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected no reply yet, got {other:?}"),
    }
}

#[test]
fn pipelined_batches_with_another_client_interleaving() {
    const DB: &str = "extended_pipeline";
    let pooler = start(DB, 1);
    let port = pooler.port;
    std::thread::scope(|s| {
        let other = s.spawn(move || {
            let (mut b, _) = RawClient::login_trust(port, TRUST_USER, DB);
            for i in 0..40 {
                let reply = b.query(&format!("SELECT {i} * 3"));
                assert_eq!(data_rows(&reply), vec![vec![Some((i * 3).to_string())]]);
            }
        });
        let (mut a, _) = RawClient::login_trust(port, TRUST_USER, DB);
        for round in 0..40 {
            let mut batch = Vec::new();
            for k in 1..=3 {
                let value = (round * 10 + k).to_string();
                batch.extend(fe::parse("", "SELECT $1::int * 2, $1::text", &[]));
                batch.extend(fe::bind("", "", &[Some(value.as_bytes())]));
                batch.extend(fe::describe(b'P', ""));
                batch.extend(fe::execute("", 0));
                batch.extend(fe::sync());
            }
            a.send(&batch);
            let reply = recv_ready_n(&mut a, 3);
            assert_eq!(tags(&reply), "12TDCZ".repeat(3), "round {round}: {reply:?}");
            let expected: Vec<Vec<Option<String>>> = (1..=3)
                .map(|k| {
                    let v = round * 10 + k;
                    vec![Some((v * 2).to_string()), Some(v.to_string())]
                })
                .collect();
            assert_eq!(data_rows(&reply), expected, "round {round}");
            assert!(
                reply
                    .iter()
                    .filter(|m| m.tag == b'Z')
                    .all(|m| m.body == b"I")
            );
        }
        other.join().expect("the interleaving client failed");
    });
}

#[test]
fn error_in_a_pipeline_skips_to_sync_and_the_next_sync_works() {
    const DB: &str = "extended_error";
    let pooler = start(DB, 1);
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let mut batch = unnamed("SELECT 1", &[]);
    // Fails in Execute (a constant 1/0 would already fail in Bind, while planning).
    batch.extend(unnamed(
        "SELECT 1 / (g - 1) FROM generate_series(1, 1) g",
        &[],
    ));
    batch.extend(unnamed("SELECT 3", &[]));
    batch.extend(fe::sync());
    batch.extend(unnamed("SELECT $1::int + 1", &[Some(b"4")]));
    batch.extend(fe::sync());
    a.send(&batch);
    let reply = recv_ready_n(&mut a, 2);
    assert_eq!(tags(&reply), "12DC12EZ12DCZ", "{reply:?}");
    let err = reply.iter().find(|m| m.is_error()).unwrap();
    assert_eq!(err.field(b'C').as_deref(), Some("22012"), "{err:?}");
    assert_eq!(
        data_rows(&reply),
        vec![vec![Some("1".into())], vec![Some("5".into())]]
    );
    // The server went back to the pool in a clean state.
    assert_eq!(
        data_rows(&b.query("SELECT 6")),
        vec![vec![Some("6".into())]]
    );
    assert_eq!(
        data_rows(&a.query("SELECT 7")),
        vec![vec![Some("7".into())]]
    );
}

#[test]
fn parse_and_flush_without_sync_keeps_the_server_linked() {
    const DB: &str = "extended_flush";
    let pooler = start(DB, 1);
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let mut msgs = fe::parse("", "SELECT 40 + $1::int", &[]);
    msgs.extend(fe::flush());
    a.send(&msgs);
    let reply = a.recv().expect("ParseComplete");
    assert_eq!(reply.tag, b'1', "{reply:?}");

    // A holds the only server until its Sync.
    b.send(&fe::query("SELECT 'b'"));
    assert_waiting(&mut b, "B while A is mid extended exchange");

    let mut rest = fe::bind("", "", &[Some(b"2")]);
    rest.extend(fe::execute("", 0));
    rest.extend(fe::sync());
    a.send(&rest);
    let reply = a.recv_until_ready();
    assert_eq!(tags(&reply), "2DCZ", "{reply:?}");
    assert_eq!(data_rows(&reply), vec![vec![Some("42".into())]]);
    let reply = b.recv_until_ready();
    assert_eq!(data_rows(&reply), vec![vec![Some("b".into())]]);
}

/// tokio-postgres with unnamed statements (query_typed) and simple queries, two clients
/// sharing one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_unnamed_statements_and_simple_queries() {
    const DB: &str = "extended_tokio";
    let pooler = tokio::task::spawn_blocking(|| start(DB, 1)).await.unwrap();
    let connstr = pooler.connstr(TRUST_USER, DB);
    let mut tasks = Vec::new();
    for c in 0..2i32 {
        let client = pg_connect(&connstr).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            for i in 0..50i32 {
                let rows = client
                    .query_typed(
                        "SELECT $1::int4 + $2::int4, $3::text",
                        &[(&i, Type::INT4), (&c, Type::INT4), (&"x", Type::TEXT)],
                    )
                    .await
                    .expect("query_typed");
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].get::<_, i32>(0), i + c);
                assert_eq!(rows[0].get::<_, &str>(1), "x");
                let msgs = client
                    .simple_query(&format!("SELECT {i}; SELECT {c}"))
                    .await
                    .expect("simple_query");
                let values: Vec<String> = msgs
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                        _ => None,
                    })
                    .collect();
                assert_eq!(values, vec![i.to_string(), c.to_string()]);
            }
            let tx_rows = client
                .query_typed("SELECT count(*) FROM generate_series(1, 1000)", &[])
                .await
                .unwrap();
            assert_eq!(tx_rows[0].get::<_, i64>(0), 1000);
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

/// tokio-postgres' `query` prepares a named statement (s0, s1, ...) in one exchange and
/// uses it in the next; in transaction mode the next exchange may land on another server,
/// or two clients may create the same name on one server: the pooler's statement tracking
/// (max_prepared_statements) must make that invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_named_statements_across_transactions() {
    const DB: &str = "extended_tokio_named";
    let pooler = tokio::task::spawn_blocking(|| start(DB, 2)).await.unwrap();
    let connstr = pooler.connstr(TRUST_USER, DB);
    let mut tasks = Vec::new();
    for c in 0..3i32 {
        let client = pg_connect(&connstr).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            for i in 0..30i32 {
                let row = client
                    .query_one("SELECT $1::int4 + $2::int4", &[&i, &c])
                    .await
                    .unwrap_or_else(|e| panic!("client {c}, query {i}: {e:?}"));
                assert_eq!(row.get::<_, i32>(0), i + c);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

#[test]
fn pgbench_extended_mode_has_no_failures() {
    const DB: &str = "extended_pgbench";
    let pg = Postgres::shared();
    let pooler = start(DB, 2);
    let init = pg.pgbench(DB, &["-i", "-s", "1", "-q"]);
    assert!(init.ok, "pgbench -i: {}\n{}", init.stdout, init.stderr);
    let run = pooler.pgbench(
        "postgres",
        DB,
        &["-M", "extended", "-c", "4", "-j", "2", "-t", "100"],
    );
    assert!(run.ok, "pgbench failed:\n{}\n{}", run.stdout, run.stderr);
    assert_eq!((run.failed, run.aborted), (0, 0), "{run:?}");
    assert_eq!(run.transactions, 400, "{run:?}");
    assert!(pg.backend_count(DB, Some("postgres")) <= 2);
}
