//! Client startup at byte level: SSL/GSS refusal, protocol negotiation, the login greeting, startup parameters, refusals.

mod common;
use common::*;

use std::io::Read;
use std::time::Duration;

const DB: &str = "startup_protocol";

/// TRUST_TRANSACTION_CONFIG with extra [pooler] lines.
fn config(extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5\n",
        &format!("default_pool_size = 5\n{extra}\n"),
    )
}

fn start(extra: &str) -> Pooler {
    Postgres::shared().create_database(DB);
    Pooler::start(&config(extra))
}

/// A StartupMessage with any protocol version and parameter list (user not forced in).
fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = (body.len() as i32 + 4).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn gssenc_request() -> Vec<u8> {
    let mut out = 8i32.to_be_bytes().to_vec();
    out.extend_from_slice(&80877104i32.to_be_bytes());
    out
}

fn read_byte(client: &mut RawClient) -> u8 {
    let mut b = [0u8; 1];
    client.stream.read_exact(&mut b).expect("one byte");
    b[0]
}

/// Splits raw backend bytes into messages.
fn parse_msgs(mut bytes: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let end = (1 + len).min(bytes.len());
        out.push(Msg {
            tag: bytes[0],
            body: bytes[5..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
    out
}

/// Sends `packet`, expects one FATAL ErrorResponse and then the connection closed.
fn expect_refusal(port: u16, packet: &[u8]) -> Msg {
    let mut client = RawClient::connect(port);
    client.send(packet);
    let err = client.recv().expect("an ErrorResponse, got EOF");
    assert!(err.is_error(), "expected an error, got {err:?}");
    assert_eq!(err.field(b'S').as_deref(), Some("FATAL"), "{err:?}");
    assert!(client.recv().is_none(), "the connection stayed open");
    err
}

fn login(port: u16, extra: &[(&str, &str)]) -> (RawClient, Vec<Msg>) {
    let mut client = RawClient::connect(port);
    client.startup(TRUST_USER, DB, extra);
    let msgs = client.recv_until_ready();
    assert!(!msgs.iter().any(Msg::is_error), "login failed: {msgs:?}");
    assert_eq!(msgs[0].auth_code(), Some(0), "{msgs:?}");
    (client, msgs)
}

fn show(client: &mut RawClient, sql: &str) -> String {
    let reply = client.query(sql);
    let rows = data_rows(&reply);
    assert_eq!(rows.len(), 1, "{sql}: {reply:?}");
    rows[0][0].clone().unwrap_or_default()
}

fn param_status(msgs: &[Msg], name: &str) -> Option<String> {
    msgs.iter().filter(|m| m.tag == b'S').find_map(|m| {
        let mut parts = m.body.split(|&b| b == 0);
        let n = parts.next()?;
        let v = parts.next()?;
        (n == name.as_bytes()).then(|| String::from_utf8_lossy(v).into_owned())
    })
}

#[test]
fn ssl_request_is_answered_n_then_plaintext_login_works() {
    let pooler = start("");
    let mut client = RawClient::connect(pooler.port);
    client.send(&fe::ssl_request());
    assert_eq!(read_byte(&mut client), b'N');
    client.startup(TRUST_USER, DB, &[]);
    let msgs = client.recv_until_ready();
    assert_eq!(msgs[0].auth_code(), Some(0), "{msgs:?}");
    assert_eq!(
        data_rows(&client.query("SELECT 7")),
        vec![vec![Some("7".into())]]
    );
}

#[test]
fn gssenc_request_is_answered_n_then_plaintext_login_works() {
    let pooler = start("");
    let mut client = RawClient::connect(pooler.port);
    client.send(&gssenc_request());
    assert_eq!(read_byte(&mut client), b'N');
    client.startup(TRUST_USER, DB, &[]);
    let msgs = client.recv_until_ready();
    assert_eq!(msgs[0].auth_code(), Some(0), "{msgs:?}");
    assert_eq!(
        data_rows(&client.query("SELECT 8")),
        vec![vec![Some("8".into())]]
    );
}

/// Bytes that arrive with the SSLRequest, before its answer, are refused (CVE-2021-23222 shape).
#[test]
fn data_sent_before_the_ssl_answer_is_refused() {
    let pooler = start("");
    let mut client = RawClient::connect(pooler.port);
    let mut bytes = fe::ssl_request();
    bytes.extend(fe::startup(TRUST_USER, DB, &[]));
    client.send(&bytes);
    let mut all = Vec::new();
    client.stream.read_to_end(&mut all).expect("read until EOF");
    // PostgreSQL answers 'N' before the error; the pooler may or may not.
    let rest = all.strip_prefix(b"N").unwrap_or(&all);
    let msgs = parse_msgs(rest);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("08P01"), "{msgs:?}");
    assert_eq!(
        msgs[0].field(b'M').as_deref(),
        Some("received unencrypted data after SSL request")
    );
}

/// 3.1 and `_pq_.` options get NegotiateProtocolVersion as PostgreSQL sends it, then a login.
#[test]
fn newer_minor_and_protocol_options_get_negotiate_protocol_version() {
    let pooler = start("");
    let pg = Postgres::shared();
    // (protocol version, extra startup parameters, options the answer must list)
    type Case = (
        i32,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case; 2] = [
        (196609, &[], &[]),
        (196608, &[("_pq_.something", "on")], &["_pq_.something"]),
    ];
    let mut answers = Vec::new();
    for (version, extra, listed) in cases {
        let mut params = vec![("user", TRUST_USER), ("database", DB)];
        params.extend_from_slice(extra);
        let packet = startup_packet(version, &params);

        let mut client = RawClient::connect(pooler.port);
        client.send(&packet);
        let msgs = client.recv_until_ready();
        let v = &msgs[0];
        assert_eq!(v.tag, b'v', "version {version:#x}: {msgs:?}");
        let newest = i32::from_be_bytes(v.body[0..4].try_into().unwrap());
        let count = i32::from_be_bytes(v.body[4..8].try_into().unwrap());
        let names: Vec<String> = v.body[8..]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(count as usize, listed.len(), "{v:?}");
        assert_eq!(names, listed, "{v:?}");
        assert_eq!(newest & 0xffff, 0, "newest minor must be 0: {newest:#x}");
        // PostgreSQL's own answer to the same packet (it sends PG_PROTOCOL_LATEST, 0x30000).
        let mut direct = RawClient::connect(pg.port);
        direct.send(&packet);
        let pg_v = direct.recv().expect("PostgreSQL's answer");
        assert_eq!(pg_v.tag, b'v', "{pg_v:?}");
        answers.push((version, v.body.clone(), pg_v.body));

        assert_eq!(msgs[1].auth_code(), Some(0), "{msgs:?}");
        assert!(!msgs.iter().any(Msg::is_error), "{msgs:?}");
        assert_eq!(
            data_rows(&client.query("SELECT 9")),
            vec![vec![Some("9".into())]]
        );
    }
    // Clients read the first field as a whole version number (libpq prints it as major.minor;
    // libpq 18 refuses a "downgrade to pre-3.0"), so it must carry 3.0 as PostgreSQL's does.
    for (version, ours, theirs) in answers {
        assert_eq!(
            ours, theirs,
            "startup version {version:#x}: NegotiateProtocolVersion body differs from PostgreSQL's"
        );
    }
}

#[test]
fn login_greeting_has_postgres_shape() {
    let pooler = start("");
    let (_client, msgs) = login(pooler.port, &[]);
    let tags: String = msgs.iter().map(|m| m.tag as char).collect();
    let n = tags.len();
    assert!(n >= 10, "{tags}");
    assert_eq!(&tags[..1], "R", "{msgs:?}");
    assert!(tags[1..n - 2].chars().all(|c| c == 'S'), "{tags}: {msgs:?}");
    assert_eq!(&tags[n - 2..], "KZ", "{msgs:?}");
    assert_eq!(msgs[n - 2].body.len(), 8, "BackendKeyData: {msgs:?}");
    assert_eq!(msgs[n - 1].body, b"I", "{msgs:?}");
    for name in [
        "server_version",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "integer_datetimes",
        "standard_conforming_strings",
        "application_name",
    ] {
        assert!(
            param_status(&msgs, name).is_some(),
            "no ParameterStatus {name}: {msgs:?}"
        );
    }
    assert_eq!(
        param_status(&msgs, "client_encoding").as_deref(),
        Some("UTF8")
    );
    assert_eq!(
        param_status(&msgs, "integer_datetimes").as_deref(),
        Some("on")
    );
}

#[test]
fn options_timezone_is_honoured() {
    let pooler = start("");
    let (mut client, msgs) = login(pooler.port, &[("options", "-c TimeZone=Asia/Tokyo")]);
    assert_eq!(
        param_status(&msgs, "TimeZone").as_deref(),
        Some("Asia/Tokyo")
    );
    assert_eq!(show(&mut client, "SHOW TimeZone"), "Asia/Tokyo");
}

#[test]
fn options_with_an_untracked_setting_is_refused() {
    let pooler = start("");
    let packet = fe::startup(TRUST_USER, DB, &[("options", "-c work_mem=4MB")]);
    let err = expect_refusal(pooler.port, &packet);
    assert_eq!(err.field(b'C').as_deref(), Some("08P01"), "{err:?}");
    assert!(err.field(b'M').unwrap().contains("work_mem"), "{err:?}");
}

#[test]
fn malformed_options_are_refused_cleanly() {
    let pooler = start("");
    for options in ["-c=", "-c", "--x", "-v"] {
        let packet = fe::startup(TRUST_USER, DB, &[("options", options)]);
        let err = expect_refusal(pooler.port, &packet);
        assert_eq!(
            err.field(b'C').as_deref(),
            Some("08P01"),
            "{options}: {err:?}"
        );
    }
    // The pooler is still fine.
    let (mut client, _) = login(pooler.port, &[]);
    assert_eq!(show(&mut client, "SELECT 1"), "1");
}

#[test]
fn unknown_startup_parameter_is_refused() {
    let pooler = start("");
    let err = expect_refusal(pooler.port, &fe::startup(TRUST_USER, DB, &[("foo", "bar")]));
    assert_eq!(err.field(b'C').as_deref(), Some("08P01"), "{err:?}");
    assert_eq!(
        err.field(b'M').as_deref(),
        Some("unsupported startup parameter: foo")
    );
}

#[test]
fn extra_float_digits_is_accepted_by_default() {
    let pooler = start("");
    let (mut client, _) = login(pooler.port, &[("extra_float_digits", "3")]);
    assert_eq!(show(&mut client, "SELECT 2 + 2"), "4");
}

#[test]
fn ignore_startup_parameters_accepts_listed_names() {
    let pooler = start("ignore_startup_parameters = \"foo, search_path\"");
    let (mut client, _) = login(
        pooler.port,
        &[
            ("foo", "bar"),
            ("search_path", "nowhere"),
            ("extra_float_digits", "2"),
        ],
    );
    // Ignored means not forwarded.
    assert_eq!(show(&mut client, "SHOW search_path"), "\"$user\", public");
    // Names not listed are still refused.
    let err = expect_refusal(pooler.port, &fe::startup(TRUST_USER, DB, &[("bar", "1")]));
    assert_eq!(err.field(b'C').as_deref(), Some("08P01"), "{err:?}");
}

#[test]
fn missing_user_is_refused_28000() {
    let pooler = start("");
    let err = expect_refusal(pooler.port, &startup_packet(196608, &[("database", DB)]));
    assert_eq!(err.field(b'C').as_deref(), Some("28000"), "{err:?}");
}

#[test]
fn terminate_closes_the_connection() {
    let pooler = start("");
    let (mut client, _) = login(pooler.port, &[]);
    assert_eq!(show(&mut client, "SELECT 1"), "1");
    client.send(&fe::terminate());
    assert!(client.recv().is_none(), "still open after Terminate");
}

#[test]
fn unknown_database_without_wildcard_is_refused_3d000() {
    Postgres::shared().create_database(DB);
    let cfg = TRUST_TRANSACTION_CONFIG.replace("\"*\" = {", &format!("{DB} = {{"));
    let pooler = Pooler::start(&cfg);
    let err = expect_refusal(pooler.port, &fe::startup(TRUST_USER, "no_such_db_x", &[]));
    assert_eq!(err.field(b'C').as_deref(), Some("3D000"), "{err:?}");
    assert_eq!(
        err.field(b'M').as_deref(),
        Some("no such database: no_such_db_x")
    );
    let (mut client, _) = login(pooler.port, &[]);
    assert_eq!(show(&mut client, "SELECT current_database()"), DB);
}

#[test]
fn max_client_conn_refuses_the_third_client() {
    let pooler = start("max_client_conn = 2");
    let (mut first, _) = login(pooler.port, &[]);
    let (_second, _) = login(pooler.port, &[]);
    let err = expect_refusal(pooler.port, &fe::startup(TRUST_USER, DB, &[]));
    assert_eq!(err.field(b'C').as_deref(), Some("53300"), "{err:?}");
    assert_eq!(
        err.field(b'M').as_deref(),
        Some("no more connections allowed (max_client_conn)")
    );
    // A slot frees up when a client leaves.
    first.send(&fe::terminate());
    assert!(first.recv().is_none());
    let admitted = wait_until(Duration::from_secs(10), || {
        let mut c = RawClient::connect(pooler.port);
        c.startup(TRUST_USER, DB, &[]);
        c.recv().is_some_and(|m| m.auth_code() == Some(0))
    });
    assert!(admitted, "no client admitted after one left");
}
