//! Named prepared statements shared by clients over a small pool: per-client names, one server statement per text, following a client to another server, DEALLOCATE/DISCARD, eviction, the per-client cap, session and statement mode.

mod common;
use common::*;

use std::time::Duration;

fn start(db: &str, size: u32, extra: &str) -> Pooler {
    Postgres::shared().create_database(db);
    Pooler::start(&TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!("default_pool_size = {size}\n{extra}"),
    ))
}

fn login(pooler: &Pooler, db: &str) -> RawClient {
    RawClient::login_trust(pooler.port, TRUST_USER, db).0
}

/// Sends messages ending in Sync (or one Query) and returns the reply.
fn send(c: &mut RawClient, parts: &[Vec<u8>]) -> Vec<Msg> {
    c.send(&parts.concat());
    c.recv_until_ready()
}

fn bind_exec(stmt: &str, params: &[&str]) -> Vec<u8> {
    let params: Vec<Option<&[u8]>> = params.iter().map(|p| Some(p.as_bytes())).collect();
    [fe::bind("", stmt, &params), fe::execute("", 0)].concat()
}

/// Runs named statement `stmt` and returns its single value; panics on an error.
fn value(c: &mut RawClient, stmt: &str, params: &[&str]) -> String {
    one(send(c, &[bind_exec(stmt, params), fe::sync()]))
}

/// The single value of a reply; panics on an error.
fn one(reply: Vec<Msg>) -> String {
    assert!(!reply.iter().any(Msg::is_error), "{reply:?}");
    let rows = data_rows(&reply);
    assert_eq!(rows.len(), 1, "{reply:?}");
    rows[0][0].clone().unwrap_or_default()
}

fn sql(c: &mut RawClient, text: &str) -> String {
    one(c.query(text))
}

/// A simple query that must succeed.
fn ok(c: &mut RawClient, text: &str) {
    let reply = c.query(text);
    assert_eq!(code(&reply), None, "{text}: {reply:?}");
}

/// SQLSTATE of the error in a reply (None when there is none).
fn code(reply: &[Msg]) -> Option<String> {
    reply
        .iter()
        .find(|m| m.is_error())
        .and_then(|m| m.field(b'C'))
}

fn parse_ok(c: &mut RawClient, name: &str, text: &str) {
    let reply = send(c, &[fe::parse(name, text, &[]), fe::sync()]);
    assert_eq!(code(&reply), None, "Parse {name}: {reply:?}");
}

fn stat(pooler: &Pooler, db: &str, column: &str) -> u64 {
    admin_number(pooler, "SHOW STATS", "database", db, column)
}

#[test]
fn the_same_name_in_two_clients_means_their_own_statements() {
    const DB: &str = "prep_share_names";
    let pooler = start(DB, 1, "");
    let (mut a, mut b) = (login(&pooler, DB), login(&pooler, DB));
    parse_ok(&mut a, "q", "SELECT 'a:' || $1::text");
    parse_ok(&mut b, "q", "SELECT 'b:' || $1::text");
    ok(&mut a, "PREPARE p AS SELECT 'a'");
    ok(&mut b, "PREPARE p AS SELECT 'b'");
    for i in 0..20 {
        let i = i.to_string();
        assert_eq!(value(&mut a, "q", &[&i]), format!("a:{i}"));
        assert_eq!(value(&mut b, "q", &[&i]), format!("b:{i}"));
        assert_eq!(sql(&mut b, "EXECUTE p"), "b");
        assert_eq!(sql(&mut a, "EXECUTE p"), "a");
    }
}

#[test]
fn the_same_text_from_many_clients_is_one_server_statement() {
    const DB: &str = "prep_share_text";
    const TEXT: &str = "SELECT 42 AS shared_answer";
    let pooler = start(DB, 1, "");
    let stats = |p: &Pooler| {
        [
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
        ]
        .map(|c| stat(p, DB, c))
    };
    let mut clients: Vec<RawClient> = (0..5).map(|_| login(&pooler, DB)).collect();
    let before = stats(&pooler);
    for (i, c) in clients.iter_mut().enumerate() {
        parse_ok(c, &format!("mine{i}"), TEXT);
        assert_eq!(value(c, &format!("mine{i}"), &[]), "42");
    }
    let after = stats(&pooler);
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [5, 1, 5],
        "client parses, server parses, binds"
    );
    let on_server = pooler.psql(
        TRUST_USER,
        DB,
        None,
        &format!(
            "SELECT string_agg(name, ',') FROM pg_prepared_statements WHERE statement = '{TEXT}'"
        ),
    ).unwrap();
    assert!(
        on_server.starts_with("_pooler_") && !on_server.contains(','),
        "one statement of the pooler's on the server: {on_server:?}"
    );
}

/// A client's statements work on a server that has never seen them: pool_size 2, the
/// server the client prepared on is held by another client.
#[test]
fn statements_follow_the_client_to_another_server() {
    const DB: &str = "prep_share_move";
    let pooler = start(DB, 2, "");
    let mut a = login(&pooler, DB);
    ok(&mut a, "BEGIN");
    parse_ok(&mut a, "x", "SELECT $1::int + 100");
    ok(&mut a, "PREPARE p(int) AS SELECT $1 * 3");
    let first = sql(&mut a, "SELECT pg_backend_pid()");
    ok(&mut a, "COMMIT");

    // Two holders take both servers; the one on A's server keeps it.
    let mut holders: Vec<RawClient> = (0..2).map(|_| login(&pooler, DB)).collect();
    let pids: Vec<String> = holders
        .iter_mut()
        .map(|h| {
            ok(h, "BEGIN");
            sql(h, "SELECT pg_backend_pid()")
        })
        .collect();
    assert!(pids.contains(&first), "{pids:?} should hold {first}");
    let keep = pids.iter().position(|p| *p == first).unwrap();
    ok(&mut holders[1 - keep], "COMMIT");

    let server_parses = stat(&pooler, DB, "total_server_parse_count");
    ok(&mut a, "BEGIN");
    let reply = send(
        &mut a,
        &[fe::describe(b'S', "x"), bind_exec("x", &["5"]), fe::sync()],
    );
    let tags: String = reply.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, "tT2DCZ", "{reply:?}");
    assert_eq!(data_rows(&reply), vec![vec![Some("105".to_string())]]);
    assert_eq!(sql(&mut a, "EXECUTE p(7)"), "21");
    let second = sql(&mut a, "SELECT pg_backend_pid()");
    assert_ne!(second, first, "A must be on the other server now");
    ok(&mut a, "COMMIT");
    assert_eq!(
        stat(&pooler, DB, "total_server_parse_count") - server_parses,
        2,
        "x and p were prepared on the second server"
    );
    ok(&mut holders[keep], "COMMIT");
}

#[test]
fn sql_prepare_and_execute_across_transactions_with_another_client() {
    const DB: &str = "prep_share_sql";
    let pooler = start(DB, 1, "");
    let (mut a, mut b) = (login(&pooler, DB), login(&pooler, DB));
    ok(&mut a, "BEGIN");
    ok(&mut a, "PREPARE p(int) AS SELECT $1 * 10");
    ok(&mut a, "COMMIT");
    ok(&mut b, "PREPARE p(int) AS SELECT $1 + 1000");
    // Each in turn holds the only server for a transaction, or runs alone.
    for i in 0..15 {
        ok(&mut a, "BEGIN");
        assert_eq!(
            sql(&mut a, &format!("EXECUTE p({i})")),
            (i * 10).to_string()
        );
        ok(&mut a, "COMMIT");
        assert_eq!(
            sql(&mut b, &format!("EXECUTE p({i})")),
            (i + 1000).to_string()
        );
        ok(&mut b, "BEGIN");
        assert_eq!(
            sql(&mut b, &format!("EXECUTE p({i})")),
            (i + 1000).to_string()
        );
        ok(&mut b, "COMMIT");
        assert_eq!(
            sql(&mut a, &format!("EXECUTE p({i})")),
            (i * 10).to_string()
        );
    }
    ok(&mut a, "DEALLOCATE p");
    assert_eq!(code(&a.query("EXECUTE p(1)")).as_deref(), Some("26000"));
    assert_eq!(sql(&mut b, "EXECUTE p(1)"), "1001");
    ok(&mut a, "PREPARE p AS SELECT 'a again'");
    assert_eq!(sql(&mut a, "EXECUTE p"), "a again");
    assert_eq!(
        code(&b.query("PREPARE p AS SELECT 1")).as_deref(),
        Some("42P05")
    );
}

#[test]
fn deallocate_all_and_discard_all_affect_only_that_client() {
    const DB: &str = "prep_share_discard";
    let pooler = start(DB, 1, "");
    let (mut a, mut b) = (login(&pooler, DB), login(&pooler, DB));
    let prepare = |c: &mut RawClient, who: &str| {
        parse_ok(c, "shared", "SELECT 'shared text'");
        parse_ok(c, "own", &format!("SELECT 'own {who}'"));
        ok(c, "PREPARE sp AS SELECT 'sql shared'");
    };
    let works = |c: &mut RawClient, who: &str| {
        assert_eq!(value(c, "shared", &[]), "shared text");
        assert_eq!(value(c, "own", &[]), format!("own {who}"));
        assert_eq!(sql(c, "EXECUTE sp"), "sql shared");
    };
    let gone = |c: &mut RawClient| {
        for stmt in ["shared", "own"] {
            let reply = send(c, &[bind_exec(stmt, &[]), fe::sync()]);
            assert_eq!(code(&reply).as_deref(), Some("26000"), "{stmt}: {reply:?}");
        }
        assert_eq!(code(&c.query("EXECUTE sp")).as_deref(), Some("26000"));
    };
    prepare(&mut a, "a");
    prepare(&mut b, "b");
    works(&mut a, "a");

    let reply = a.query("DEALLOCATE ALL");
    assert_eq!(code(&reply), None, "{reply:?}");
    gone(&mut a);
    works(&mut b, "b");

    prepare(&mut a, "a");
    works(&mut a, "a");
    let reply = a.query("DISCARD ALL");
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'C' && m.body.starts_with(b"DISCARD ALL")),
        "{reply:?}"
    );
    gone(&mut a);
    // The server lost every statement; B's are prepared on it again.
    works(&mut b, "b");
    prepare(&mut a, "a");
    works(&mut a, "a");

    // DEALLOCATE of a protocol-level statement.
    ok(&mut a, "DEALLOCATE own");
    assert_eq!(
        code(&send(&mut a, &[bind_exec("own", &[]), fe::sync()])).as_deref(),
        Some("26000")
    );
    works(&mut b, "b");
}

#[test]
fn a_server_keeps_at_most_max_prepared_statements() {
    const DB: &str = "prep_share_evict";
    let pooler = start(DB, 1, "max_prepared_statements = 2");
    let (mut a, mut b) = (login(&pooler, DB), login(&pooler, DB));
    let mut batch: Vec<Vec<u8>> = (0..5)
        .map(|i| fe::parse(&format!("s{i}"), &format!("SELECT {i} * $1::int"), &[]))
        .collect();
    batch.push(fe::sync());
    assert_eq!(code(&send(&mut a, &batch)), None);
    for i in 0..3 {
        ok(&mut b, &format!("PREPARE q{i} AS SELECT 'q{i}'"));
    }
    for round in 1..=4 {
        let r = round.to_string();
        for i in 0..5 {
            assert_eq!(
                value(&mut a, &format!("s{i}"), &[&r]),
                (i * round).to_string()
            );
            assert_eq!(
                sql(&mut b, &format!("EXECUTE q{}", i % 3)),
                format!("q{}", i % 3)
            );
        }
        // All five in one pipeline: each Bind evicts a statement the next ones do not need.
        let mut pipeline: Vec<Vec<u8>> =
            (0..5).map(|i| bind_exec(&format!("s{i}"), &[&r])).collect();
        pipeline.push(fe::sync());
        let reply = send(&mut a, &pipeline);
        let want: Vec<Vec<Option<String>>> = (0..5)
            .map(|i| vec![Some((i * round).to_string())])
            .collect();
        assert_eq!(data_rows(&reply), want, "{reply:?}");
    }
    let held = pooler
        .psql(
            TRUST_USER,
            DB,
            None,
            "SELECT count(*) FROM pg_prepared_statements",
        )
        .unwrap();
    assert!(
        matches!(held.as_str(), "1" | "2"),
        "the server holds {held} statements"
    );
    assert!(
        stat(&pooler, DB, "total_server_parse_count")
            > stat(&pooler, DB, "total_client_parse_count"),
        "evicted statements were prepared again"
    );
}

#[test]
fn a_client_gets_53400_beyond_max_client_prepared_statements() {
    const DB: &str = "prep_share_cap";
    let pooler = start(DB, 1, "max_client_prepared_statements = 3");
    let mut a = login(&pooler, DB);
    for name in ["a", "b", "c"] {
        parse_ok(&mut a, name, &format!("SELECT '{name}'"));
    }
    let reply = send(
        &mut a,
        &[
            fe::parse("d", "SELECT 'd'", &[]),
            bind_exec("d", &[]),
            fe::sync(),
        ],
    );
    assert_eq!(code(&reply).as_deref(), Some("53400"), "{reply:?}");
    assert_eq!(reply.last().map(|m| m.tag), Some(b'Z'));
    // The client carries on.
    assert_eq!(value(&mut a, "a", &[]), "a");
    assert_eq!(sql(&mut a, "SELECT 'still here'"), "still here");
    assert_eq!(
        code(&send(&mut a, &[fe::close(b'S', "a"), fe::sync()])),
        None
    );
    parse_ok(&mut a, "d", "SELECT 'd'");
    assert_eq!(value(&mut a, "d", &[]), "d");
    // SQL PREPARE counts against the same cap.
    let reply = a.query("PREPARE e AS SELECT 'e'");
    assert_eq!(code(&reply).as_deref(), Some("53400"), "{reply:?}");
}

#[test]
fn session_mode_leaves_statements_on_the_clients_server() {
    const DB: &str = "prep_share_session";
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("pool_mode = \"transaction\"", "pool_mode = \"session\""),
    );
    let mut a = login(&pooler, DB);
    let before = stat(&pooler, DB, "total_server_parse_count");
    parse_ok(&mut a, "s", "SELECT 5");
    ok(&mut a, "PREPARE p AS SELECT 6");
    assert_eq!(
        sql(
            &mut a,
            "SELECT string_agg(name, ',' ORDER BY name) FROM pg_prepared_statements"
        ),
        "p,s"
    );
    assert_eq!(value(&mut a, "s", &[]), "5");
    assert_eq!(stat(&pooler, DB, "total_server_parse_count"), before);
}

/// SHOW CLIENTS / SHOW SERVERS prepared_statements count a client's statements and a
/// server's.
#[test]
fn show_clients_and_servers_count_prepared_statements() {
    const DB: &str = "prep_share_show";
    let pooler = start(DB, 1, "");
    let mut a = RawClient::connect(pooler.port);
    a.startup(TRUST_USER, DB, &[("application_name", "prep_show_probe")]);
    a.recv_until_ready();
    parse_ok(&mut a, "one", "SELECT 1");
    parse_ok(&mut a, "two", "SELECT 2");
    ok(&mut a, "PREPARE three AS SELECT 3");
    let counted = wait_until(Duration::from_secs(5), || {
        admin_number(
            &pooler,
            "SHOW CLIENTS",
            "application_name",
            "prep_show_probe",
            "prepared_statements",
        ) == 3
    });
    assert!(
        counted,
        "SHOW CLIENTS: {:?}",
        admin_rows(&pooler, "SHOW CLIENTS")
    );
    let servers = admin_rows(&pooler, "SHOW SERVERS");
    let mine: Vec<_> = servers.iter().filter(|r| r["database"] == DB).collect();
    assert_eq!(mine.len(), 1, "{servers:?}");
    assert_eq!(mine[0]["prepared_statements"], "3", "{servers:?}");
}

/// Statement mode releases the server after every statement: named statements still
/// follow their client, over one server shared by two clients.
#[test]
fn statement_mode_keeps_each_clients_statements() {
    const DB: &str = "prep_share_statement";
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(
        &TRUST_TRANSACTION_CONFIG
            .replace("pool_mode = \"transaction\"", "pool_mode = \"statement\"")
            .replace("default_pool_size = 5", "default_pool_size = 1"),
    );
    let (mut a, mut b) = (login(&pooler, DB), login(&pooler, DB));
    parse_ok(&mut a, "q", "SELECT 'a:' || $1::text");
    parse_ok(&mut b, "q", "SELECT 'b:' || $1::text");
    ok(&mut a, "PREPARE p AS SELECT 'a'");
    ok(&mut b, "PREPARE p AS SELECT 'b'");
    for i in 0..10 {
        let i = i.to_string();
        assert_eq!(value(&mut b, "q", &[&i]), format!("b:{i}"));
        assert_eq!(value(&mut a, "q", &[&i]), format!("a:{i}"));
        assert_eq!(sql(&mut a, "EXECUTE p"), "a");
        assert_eq!(sql(&mut b, "EXECUTE p"), "b");
    }
    // One server: the two clients' statements live on it under the pooler's names.
    assert!(stat(&pooler, DB, "total_server_parse_count") >= 2);
}
