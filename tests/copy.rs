//! COPY in and out through the pooler (psql, pgbench -i, large raw transfers) and multi-statement simple queries.

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

use md5::{Digest, Md5};

const ROWS: usize = 200_000;

/// Transaction mode, one server per pool.
fn start(db: &str) -> Pooler {
    Postgres::shared().create_database(db);
    Pooler::start(
        &TRUST_TRANSACTION_CONFIG.replace("default_pool_size = 5", "default_pool_size = 1"),
    )
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// psql -f FILE through the pooler; Ok(stdout) or Err(stderr).
fn psql_file(pooler: &Pooler, db: &str, path: &std::path::Path) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    clear_pg_env(&mut cmd);
    cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(pooler.connstr(TRUST_USER, db))
        .arg("-f")
        .arg(path)
        .env("PGCONNECT_TIMEOUT", "10");
    let out = run_with_timeout(cmd, Duration::from_secs(60))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn psql_copy_from_stdin_and_backslash_copy() {
    const DB: &str = "copy_psql";
    let pg = Postgres::shared();
    let pooler = start(DB);
    pg.psql(
        DB,
        "DROP TABLE IF EXISTS items; CREATE TABLE items (id int, name text)",
    );
    let dir = tempfile::tempdir().unwrap();
    let psql = |sql: &str| pooler.psql(TRUST_USER, DB, None, sql);
    pg.psql(DB, "GRANT ALL ON items TO PUBLIC");

    // \copy FROM a file (COPY FROM STDIN underneath).
    let input = dir.path().join("in.csv");
    let csv: String = (1..=1000).map(|i| format!("{i},\"name, {i}\"\n")).collect();
    std::fs::write(&input, &csv).unwrap();
    psql(&format!(
        "\\copy items FROM '{}' WITH (FORMAT csv)",
        input.display()
    ))
    .unwrap();

    // COPY FROM STDIN with the data inline in a script.
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "COPY items FROM STDIN;\n1001\tinline a\n1002\tinline\\tb\n\\.\nSELECT count(*) FROM items;\n",
    )
    .unwrap();
    assert_eq!(psql_file(&pooler, DB, &script).as_deref(), Ok("1002"));

    // \copy TO a file (COPY TO STDOUT underneath) gives back what went in.
    let output = dir.path().join("out.csv");
    psql(&format!(
        "\\copy (SELECT * FROM items WHERE id <= 1000 ORDER BY id) TO '{}' WITH (FORMAT csv)",
        output.display()
    ))
    .unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap(), csv);

    // COPY TO STDOUT straight to psql's output.
    let out =
        psql("COPY (SELECT id, name FROM items WHERE id > 1000 ORDER BY id) TO STDOUT").unwrap();
    assert_eq!(out, "1001\tinline a\n1002\tinline\\tb");
    assert_eq!(
        pg.psql(DB, "SELECT name FROM items WHERE id = 1002"),
        "inline\tb"
    );
}

#[test]
fn pgbench_initialises_through_the_pooler() {
    const DB: &str = "copy_pgbench";
    let pg = Postgres::shared();
    let pooler = start(DB);
    let init = pooler.pgbench("postgres", DB, &["-i", "-s", "1", "-q"]);
    assert!(
        init.ok,
        "pgbench -i failed:\n{}\n{}",
        init.stdout, init.stderr
    );
    assert_eq!(
        pg.psql(DB, "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
    assert_eq!(
        pg.psql(DB, "SELECT sum(aid) FROM pgbench_accounts"),
        (100_000u64 * 100_001 / 2).to_string()
    );
    let run = pooler.pgbench("postgres", DB, &["-c", "2", "-t", "50"]);
    assert!(run.ok, "pgbench failed:\n{}\n{}", run.stdout, run.stderr);
    assert_eq!((run.failed, run.aborted, run.transactions), (0, 0, 100));
}

#[test]
fn large_copy_out_arrives_complete() {
    const DB: &str = "copy_out_large";
    let pg = Postgres::shared();
    let pooler = start(DB);
    let rows = format!("SELECT g, md5(g::text) AS h FROM generate_series(1, {ROWS}) g");
    let (mut client, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    client.send(&fe::query(&format!("COPY ({rows}) TO STDOUT")));
    let mut data = Vec::new();
    let mut others = Vec::new();
    loop {
        let m = client.recv().expect("EOF during COPY OUT");
        match m.tag {
            b'd' => data.extend_from_slice(&m.body),
            b'Z' => {
                others.push(m);
                break;
            }
            _ => others.push(m),
        }
    }
    assert_eq!(tags(&others), "HcCZ", "{others:?}");
    assert_eq!(others[2].body, format!("COPY {ROWS}\0").as_bytes());
    assert!(data.len() > 7_000_000, "{} bytes", data.len());
    assert_eq!(data.iter().filter(|&&b| b == b'\n').count(), ROWS);
    let expected = pg.psql(
        DB,
        &format!(
            "SELECT md5(string_agg(g || E'\\t' || h || E'\\n', '' ORDER BY g)) FROM ({rows}) s"
        ),
    );
    assert_eq!(md5_hex(&data), expected);
    // The client and the server are still in step.
    assert_eq!(
        data_rows(&client.query("SELECT 'after'")),
        vec![vec![Some("after".into())]]
    );
}

#[test]
fn large_copy_in_arrives_complete() {
    const DB: &str = "copy_in_large";
    let pg = Postgres::shared();
    let pooler = start(DB);
    pg.psql(DB, "DROP TABLE IF EXISTS big_in; CREATE TABLE big_in (id int, payload text); GRANT ALL ON big_in TO PUBLIC");
    let data: String = (1..=ROWS)
        .map(|i| format!("{i}\tpayload-{i}-{}\n", "x".repeat(i % 40)))
        .collect();
    assert!(data.len() > 5_000_000);
    let (mut client, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);

    // A COPY the client gives up on: CopyFail, an error, and the client carries on.
    client.send(&fe::query("COPY big_in FROM STDIN"));
    let g = client.recv().expect("CopyInResponse");
    assert_eq!(g.tag, b'G', "{g:?}");
    let mut msgs = fe::copy_data(b"1\tnever\n");
    msgs.extend(fe::copy_fail("changed my mind"));
    client.send(&msgs);
    let reply = client.recv_until_ready();
    assert_eq!(tags(&reply), "EZ", "{reply:?}");
    assert_eq!(reply[0].field(b'C').as_deref(), Some("57014"), "{reply:?}");

    client.send(&fe::query("COPY big_in FROM STDIN"));
    let g = client.recv().expect("CopyInResponse");
    assert_eq!(g.tag, b'G', "{g:?}");
    // Chunks that do not follow row boundaries, as psql sends them.
    for chunk in data.as_bytes().chunks(65_000) {
        client.send(&fe::copy_data(chunk));
    }
    client.send(&fe::copy_done());
    let reply = client.recv_until_ready();
    assert_eq!(tags(&reply), "CZ", "{reply:?}");
    assert_eq!(reply[0].body, format!("COPY {ROWS}\0").as_bytes());

    let check = pg.psql(
        DB,
        "SELECT count(*) || ' ' || md5(string_agg(id || E'\\t' || payload || E'\\n', '' ORDER BY id)) FROM big_in",
    );
    assert_eq!(check, format!("{ROWS} {}", md5_hex(data.as_bytes())));
}

#[test]
fn multi_statement_query_returns_every_result() {
    const DB: &str = "copy_multi";
    let pooler = start(DB);
    let (mut client, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let reply = client.query("SELECT 1; SELECT 2; SELECT 3");
    assert_eq!(tags(&reply), "TDCTDCTDCZ", "{reply:?}");
    assert_eq!(
        data_rows(&reply),
        vec![
            vec![Some("1".into())],
            vec![Some("2".into())],
            vec![Some("3".into())]
        ]
    );
}

#[test]
fn error_inside_a_multi_statement_query_and_the_client_continues() {
    const DB: &str = "copy_multi_error";
    let pooler = start(DB);
    let (mut a, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let (mut b, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    let reply = a.query("SELECT 1; SELECT 1/0; SELECT 3");
    assert_eq!(tags(&reply), "TDCEZ", "{reply:?}");
    assert_eq!(reply[3].field(b'C').as_deref(), Some("22012"), "{reply:?}");
    assert_eq!(reply[4].body, b"I");
    // The implicit transaction was rolled back, the one server is free again.
    assert_eq!(
        data_rows(&b.query("SELECT 'b'")),
        vec![vec![Some("b".into())]]
    );
    let reply = a.query("SELECT 4; SELECT 5");
    assert_eq!(
        data_rows(&reply),
        vec![vec![Some("4".into())], vec![Some("5".into())]]
    );
}
