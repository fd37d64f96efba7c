//! Named prepared statements in transaction mode, byte by byte: the errors and replies a client gets through the pooler are PostgreSQL's own.

mod common;
use common::*;

/// Transaction mode, `size` servers, extra [pooler] keys.
fn start(db: &str, size: u32, extra: &str) -> Pooler {
    Postgres::shared().create_database(db);
    Pooler::start(&TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!("default_pool_size = {size}\n{extra}"),
    ))
}

/// One request of a script: the bytes, and how many ReadyForQuery end its reply.
type Step = (Vec<u8>, usize);

fn q(sql: &str) -> Step {
    (fe::query(sql), 1)
}

/// Concatenated messages, answered by one ReadyForQuery (the caller ends them with Sync).
fn ext(parts: &[Vec<u8>]) -> Step {
    (parts.concat(), 1)
}

/// Bind of `stmt` to the unnamed portal with text parameters, then Execute.
fn bind_exec(stmt: &str, params: &[&str]) -> Vec<u8> {
    let params: Vec<Option<&[u8]>> = params.iter().map(|p| Some(p.as_bytes())).collect();
    let mut out = fe::bind("", stmt, &params);
    out.extend(fe::execute("", 0));
    out
}

/// Each step's reply.
fn run(client: &mut RawClient, steps: &[Step]) -> Vec<Vec<Msg>> {
    steps
        .iter()
        .map(|(bytes, readies)| {
            client.send(bytes);
            let mut msgs = Vec::new();
            for _ in 0..*readies {
                msgs.extend(client.recv_until_ready());
            }
            msgs
        })
        .collect()
}

/// One line per message: tag and body, or SQLSTATE and message.
fn lines(replies: &[Vec<Msg>]) -> Vec<Vec<String>> {
    replies
        .iter()
        .map(|r| r.iter().map(|m| format!("{m:?}")).collect())
        .collect()
}

/// Runs `steps` on a fresh connection straight to PostgreSQL, then on one through the
/// pooler, and asserts the replies are the same message for message. Returns them.
fn same_as_postgres(pooler: &Pooler, db: &str, steps: &[Step]) -> Vec<Vec<String>> {
    let (mut direct, _) = RawClient::login_trust(Postgres::shared().port, TRUST_USER, db);
    let want = lines(&run(&mut direct, steps));
    let (mut pooled, _) = RawClient::login_trust(pooler.port, TRUST_USER, db);
    let got = lines(&run(&mut pooled, steps));
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .enumerate()
        .filter(|(_, (w, g))| w != g)
        .map(|(i, (w, g))| format!("step {i}:\n  pooler:     {g:?}\n  PostgreSQL: {w:?}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "the pooler's replies differ from PostgreSQL's:\n{}\nwhole exchange through the pooler: {got:#?}",
        diffs.join("\n")
    );
    for line in got.iter().flatten() {
        assert!(
            !line.contains("_pooler_"),
            "the pooler's name leaked: {line}"
        );
    }
    got
}

fn has(reply: &[String], prefix: &str) -> bool {
    reply.iter().any(|l| l.starts_with(prefix))
}

#[test]
fn parse_of_a_name_in_use_gets_42p05_and_the_next_sync_works() {
    const DB: &str = "prep_sem_dup";
    let pooler = start(DB, 1, "");
    let steps = [
        ext(&[fe::parse("x", "SELECT 1", &[]), fe::sync()]),
        ext(&[
            fe::parse("x", "SELECT 2", &[]),
            bind_exec("x", &[]),
            fe::sync(),
        ]),
        ext(&[bind_exec("x", &[]), fe::sync()]),
        // A second Parse of a name in use, after a statement that worked in the same pipeline.
        ext(&[
            fe::parse("y", "SELECT 3", &[]),
            bind_exec("y", &[]),
            fe::parse("x", "SELECT 4", &[]),
            bind_exec("x", &[]),
            fe::sync(),
        ]),
        ext(&[bind_exec("y", &[]), bind_exec("x", &[]), fe::sync()]),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert_eq!(
        got[1][0],
        "E(42P05 prepared statement \"x\" already exists)"
    );
    assert!(has(&got[2], "D(") && got[2].contains(&"Z(\"I\")".to_string()));
}

#[test]
fn unknown_statement_names_get_26000() {
    const DB: &str = "prep_sem_unknown";
    let pooler = start(DB, 1, "");
    let steps = [
        ext(&[bind_exec("nope", &[]), fe::sync()]),
        ext(&[fe::describe(b'S', "nope"), fe::sync()]),
        q("EXECUTE nope"),
        q("DEALLOCATE nope"),
        // Closing a name that does not exist is no error.
        ext(&[fe::close(b'S', "nope"), fe::sync()]),
        q("SELECT 'still fine'"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    for step in &got[..4] {
        assert!(
            has(step, "E(26000 prepared statement \"nope\" does not exist"),
            "{step:?}"
        );
    }
}

#[test]
fn a_statement_that_fails_to_prepare_leaves_no_name_behind() {
    const DB: &str = "prep_sem_syntax";
    let pooler = start(DB, 1, "");
    let steps = [
        ext(&[
            fe::parse("x", "SELEC 1", &[]),
            bind_exec("x", &[]),
            fe::sync(),
        ]),
        ext(&[bind_exec("x", &[]), fe::sync()]),
        ext(&[
            fe::parse("x", "SELECT 'now it parses'", &[]),
            bind_exec("x", &[]),
            fe::sync(),
        ]),
        q("PREPARE p AS SELEC 1"),
        q("PREPARE p AS SELECT 'p parses'"),
        q("EXECUTE p"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[0], "E(42601 "), "{:?}", got[0]);
    assert!(has(&got[2], "D("), "{:?}", got[2]);
    assert!(has(&got[5], "D("), "{:?}", got[5]);
}

#[test]
fn an_error_in_a_pipeline_skips_to_sync_like_postgres() {
    const DB: &str = "prep_sem_pipeline";
    let pooler = start(DB, 1, "");
    let steps = [
        ext(&[
            fe::parse("s1", "SELECT 1 / (g - 1) FROM generate_series(1, 1) g", &[]),
            bind_exec("s1", &[]),
            fe::parse("s2", "SELECT 2", &[]),
            bind_exec("s2", &[]),
            fe::sync(),
        ]),
        // s1 was prepared before the error; s2's Parse was skipped.
        ext(&[fe::describe(b'S', "s1"), fe::sync()]),
        ext(&[bind_exec("s2", &[]), fe::sync()]),
        ext(&[
            fe::parse("s2", "SELECT 2", &[]),
            bind_exec("s2", &[]),
            fe::sync(),
        ]),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    // ParseComplete, BindComplete, the error, ReadyForQuery: nothing of s2.
    assert_eq!(got[0].len(), 4, "{:?}", got[0]);
    assert!(got[0][2].starts_with("E(22012 "), "{:?}", got[0]);
    assert!(has(&got[2], "E(26000 "), "{:?}", got[2]);
}

#[test]
fn close_then_parse_again_under_the_same_name() {
    const DB: &str = "prep_sem_close";
    let pooler = start(DB, 1, "");
    let steps = [
        ext(&[
            fe::parse("x", "SELECT 'first'", &[]),
            bind_exec("x", &[]),
            fe::sync(),
        ]),
        ext(&[fe::close(b'S', "x"), fe::sync()]),
        ext(&[bind_exec("x", &[]), fe::sync()]),
        ext(&[
            fe::parse("x", "SELECT 'second', $1::int", &[]),
            fe::describe(b'S', "x"),
            bind_exec("x", &["7"]),
            fe::close(b'S', "x"),
            fe::parse("x", "SELECT 'third'", &[]),
            bind_exec("x", &[]),
            fe::sync(),
        ]),
        q("DEALLOCATE x"),
        q("PREPARE x AS SELECT 'fourth'"),
        q("EXECUTE x"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[2], "E(26000 "), "{:?}", got[2]);
    assert!(got[3].iter().any(|l| l.contains("third")), "{:?}", got[3]);
}

/// SQL-level PREPARE / EXECUTE / DEALLOCATE keep PostgreSQL's rules: names are folded or
/// quoted like identifiers, a PREPARE in a rolled-back transaction stays, and inside a
/// failed transaction PREPARE and DEALLOCATE are refused (25P02) and change nothing.
#[test]
fn sql_prepare_execute_deallocate_like_postgres() {
    const DB: &str = "prep_sem_sql";
    let pooler = start(DB, 1, "");
    let steps = [
        q("PREPARE a(int) AS SELECT $1 * 10"),
        q("EXECUTE A(4)"),
        q("PREPARE \"Mixed Case\" AS SELECT 'mixed'"),
        q("EXECUTE \"Mixed Case\""),
        q("EXECUTE mixed"),
        q("BEGIN"),
        q("PREPARE r AS SELECT 'from a rolled-back transaction'"),
        q("ROLLBACK"),
        q("EXECUTE r"),
        q("BEGIN"),
        q("SELECT 1 / 0"),
        // b has the same text as r: the server already has it.
        q("PREPARE b AS SELECT 'from a rolled-back transaction'"),
        q("DEALLOCATE a"),
        q("EXECUTE a(1)"),
        q("ROLLBACK"),
        q("EXECUTE a(5)"),
        q("EXECUTE b"),
        q("DEALLOCATE PREPARE a"),
        q("EXECUTE a(6)"),
        q("PREPARE a AS SELECT 'a again'"),
        q("EXECUTE a;"),
        q("DEALLOCATE ALL"),
        q("EXECUTE r"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[1], "D("), "{:?}", got[1]);
    assert!(has(&got[20], "D("), "{:?}", got[20]);
    assert!(has(&got[22], "E(26000 "), "{:?}", got[22]);
}

/// EXPLAIN of an EXECUTE, in both of PostgreSQL's option syntaxes, plans the client's
/// statement, prepared on the server first when that server lacks it; an unknown name is
/// PostgreSQL's own 26000; EXPLAIN of anything else passes through.
#[test]
fn explain_execute_like_postgres() {
    const DB: &str = "prep_sem_explain";
    let pooler = start(DB, 2, "");
    let steps = [
        q("PREPARE e(int) AS SELECT $1 * 2"),
        q("EXPLAIN (COSTS OFF) EXECUTE e(1)"),
        q("explain (costs off, format 'json') execute E(2);"),
        q("EXPLAIN ANALYZE VERBOSE EXECUTE e(3)"),
        q("EXPLAIN (COSTS OFF) EXECUTE nope(1)"),
        q("EXPLAIN (COSTS OFF) SELECT 1"),
        q("DEALLOCATE e"),
        q("EXPLAIN (COSTS OFF) EXECUTE e(1)"),
    ];
    // EXPLAIN ANALYZE prints timings, which differ from run to run.
    let (mut pooled, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let analyzed = lines(&run(&mut pooled, &steps[..4]));
    assert!(
        analyzed[3].iter().any(|l| l.contains("Execution Time")),
        "{:?}",
        analyzed[3]
    );
    assert!(!analyzed[3].iter().any(|l| l.contains("_pooler_")));
    let (mut direct, _) = RawClient::login_trust(Postgres::shared().port, TRUST_USER, DB);
    let want = lines(&run(&mut direct, &steps[..3]));
    assert_eq!(
        analyzed[..3],
        want[..],
        "EXPLAIN through the pooler differs"
    );
    let steps: Vec<Step> = steps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, s)| s.clone())
        .collect();
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[1], "D("), "a plan: {:?}", got[1]);
    assert!(has(&got[3], "E(26000 "), "{:?}", got[3]);
    assert!(has(&got[6], "E(26000 "), "{:?}", got[6]);
}

/// PREPARE / EXECUTE in a query string holding several statements are not taken apart.
/// They must still work as they do in PostgreSQL.
#[test]
#[ignore = "known gap, documented in the README: PREPARE/EXECUTE inside multi-statement queries are not rewritten"]
fn multi_statement_queries() {
    const DB: &str = "prep_sem_multi";
    let pooler = start(DB, 1, "");
    let steps = [
        q("PREPARE e(int) AS SELECT $1 * 2"),
        q("EXECUTE e(2); SELECT 'two statements'"),
        q("PREPARE m AS SELECT 3; SELECT 'prepared in a multi-statement query'"),
        q("EXECUTE m"),
        q("DEALLOCATE m"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[3], "D("), "{:?}", got[3]);
}

/// PostgreSQL names the statement in some errors (a Bind with the wrong number of
/// parameters, EXECUTE with the wrong number of arguments): the client must see its own
/// name, not the pooler's.
#[test]
fn errors_naming_the_statement_use_the_clients_name() {
    const DB: &str = "prep_sem_names";
    let pooler = start(DB, 1, "");
    let steps = [
        ext(&[fe::parse("x", "SELECT $1::int", &[]), fe::sync()]),
        ext(&[bind_exec("x", &["1", "2"]), fe::sync()]),
        q("PREPARE p(int) AS SELECT $1"),
        q("EXECUTE p(1, 2)"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[1], "E(08P01 "), "{:?}", got[1]);
    assert!(has(&got[3], "E(42601 "), "{:?}", got[3]);
}

/// An error the pooler answers itself must do to the server's transaction what
/// PostgreSQL's error would: the implicit transaction of the pipeline is rolled back, and
/// an explicit transaction becomes failed (ReadyForQuery 'E').
#[test]
fn the_poolers_own_errors_abort_the_transaction_like_postgres() {
    const DB: &str = "prep_sem_abort";
    let pooler = start(DB, 1, "");
    Postgres::shared().psql(
        DB,
        "CREATE TABLE IF NOT EXISTS t (v int); GRANT ALL ON t TO PUBLIC",
    );
    let insert = |v: &str| {
        let mut out = fe::parse("", "INSERT INTO t VALUES ($1::int)", &[]);
        out.extend(bind_exec("", &[v]));
        out
    };
    let steps = [
        q("DELETE FROM t"),
        ext(&[fe::parse("x", "SELECT 1", &[]), fe::sync()]),
        // Implicit transaction: an insert, then an error of the pooler's making.
        ext(&[insert("1"), fe::parse("x", "SELECT 2", &[]), fe::sync()]),
        ext(&[insert("2"), bind_exec("nope", &[]), fe::sync()]),
        // Explicit transaction.
        q("BEGIN"),
        ext(&[insert("3"), fe::sync()]),
        ext(&[bind_exec("nope", &[]), fe::sync()]),
        q("SELECT 'after the error'"),
        q("COMMIT"),
        // The same with SQL-level errors of the pooler's making.
        q("BEGIN"),
        ext(&[insert("4"), fe::sync()]),
        q("EXECUTE nope"),
        q("COMMIT"),
        q("BEGIN"),
        ext(&[insert("5"), fe::sync()]),
        q("DEALLOCATE nope"),
        q("COMMIT"),
        q("SELECT count(*) FROM t"),
    ];
    let got = same_as_postgres(&pooler, DB, &steps);
    assert!(has(&got[6], "E(26000 "), "{:?}", got[6]);
    let count = Postgres::shared().psql(DB, "SELECT count(*) FROM t");
    assert_eq!(
        count, "0",
        "every insert was rolled back, as PostgreSQL does"
    );
}

/// After DDL changes the result type of a prepared query, PostgreSQL says "cached plan
/// must not change result type". Outside an explicit transaction the pooler re-prepares
/// the statement and retries; inside one it passes the error through.
#[test]
fn cached_plan_changed_by_ddl_is_re_prepared_outside_a_transaction() {
    const DB: &str = "prep_sem_ddl";
    let pg = Postgres::shared();
    let pooler = start(DB, 1, "");
    pg.psql(
        DB,
        "DROP TABLE IF EXISTS t; CREATE TABLE t (a int); INSERT INTO t VALUES (1); \
         GRANT ALL ON t TO PUBLIC",
    );
    // PostgreSQL itself refuses: this is the case the pooler has to handle.
    let (mut direct, _) = RawClient::login_trust(pg.port, TRUST_USER, DB);
    let first = run(
        &mut direct,
        &[
            ext(&[fe::parse("s", "SELECT * FROM t", &[]), fe::sync()]),
            q("PREPARE p AS SELECT * FROM t"),
        ],
    );
    assert!(!first.concat().iter().any(Msg::is_error), "{first:?}");

    let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let before = run(
        &mut c,
        &[
            ext(&[
                fe::parse("s", "SELECT * FROM t", &[]),
                bind_exec("s", &[]),
                fe::sync(),
            ]),
            q("PREPARE p AS SELECT * FROM t"),
            q("EXECUTE p"),
        ],
    );
    assert!(!before.concat().iter().any(Msg::is_error), "{before:?}");

    pg.psql(DB, "ALTER TABLE t ADD COLUMN b int DEFAULT 2");
    let direct_after = run(&mut direct, &[ext(&[bind_exec("s", &[]), fe::sync()])]);
    let direct_err = direct_after[0].iter().find(|m| m.is_error());
    assert_eq!(
        direct_err.and_then(|e| e.field(b'M')).as_deref(),
        Some("cached plan must not change result type"),
        "{direct_after:?}"
    );

    let mut rows = Vec::new();
    for bytes in [
        [bind_exec("s", &[]), fe::sync()].concat(),
        fe::query("EXECUTE p"),
    ] {
        c.send(&bytes);
        let reply = c.recv_until_ready();
        assert!(
            !reply.iter().any(Msg::is_error),
            "outside a transaction the pooler re-prepares and retries; got {reply:?}"
        );
        rows.extend(data_rows(&reply));
    }
    let one_two = vec![Some("1".to_string()), Some("2".to_string())];
    assert_eq!(rows, vec![one_two.clone(), one_two]);

    // Inside an explicit transaction a retry is not safe: the error goes through.
    pg.psql(DB, "ALTER TABLE t ADD COLUMN c int DEFAULT 3");
    assert!(!c.query("BEGIN").iter().any(Msg::is_error));
    c.send(&[bind_exec("s", &[]), fe::sync()].concat());
    let reply = c.recv_until_ready();
    let err = reply.iter().find(|m| m.is_error());
    assert_eq!(
        err.and_then(|e| e.field(b'C')).as_deref(),
        Some("0A000"),
        "{reply:?}"
    );
    assert_eq!(reply.last().map(|m| m.body.clone()), Some(b"E".to_vec()));
    assert!(!c.query("ROLLBACK").iter().any(Msg::is_error));
}

/// After DDL, a client that closes its statement and prepares the same text again gets a
/// statement with the new result type, as in PostgreSQL, even though the server still
/// holds the old one under the pooler's name.
#[test]
fn parse_again_after_ddl_gets_the_new_result_type() {
    const DB: &str = "prep_sem_ddl_reparse";
    let pg = Postgres::shared();
    let pooler = start(DB, 1, "");
    pg.psql(
        DB,
        "DROP TABLE IF EXISTS t; CREATE TABLE t (a int); INSERT INTO t VALUES (1); \
         GRANT ALL ON t TO PUBLIC",
    );
    let prepare = ext(&[
        fe::parse("s", "SELECT * FROM t", &[]),
        bind_exec("s", &[]),
        fe::sync(),
    ]);
    let again = [ext(&[fe::close(b'S', "s"), fe::sync()]), prepare.clone()];
    let (mut direct, _) = RawClient::login_trust(pg.port, TRUST_USER, DB);
    let (mut pooled, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    run(&mut direct, std::slice::from_ref(&prepare));
    run(&mut pooled, std::slice::from_ref(&prepare));
    pg.psql(DB, "ALTER TABLE t ADD COLUMN b int DEFAULT 2");
    let want = lines(&run(&mut direct, &again));
    let got = lines(&run(&mut pooled, &again));
    assert!(!has(&want[1], "E("), "{want:?}");
    assert_eq!(got, want, "through the pooler (left), PostgreSQL (right)");
}
