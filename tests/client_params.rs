//! Per-client parameters (TimeZone, application_name, DateStyle, IntervalStyle, SETs) kept across server switches in transaction mode.

mod common;
use common::*;

const DB: &str = "client_params";
const ROUNDS: usize = 20;

/// Transaction mode, one server for everybody, plus extra [pooler] lines.
fn start(extra: &str) -> Pooler {
    Postgres::shared().create_database(DB);
    Pooler::start(&TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5\n",
        &format!("default_pool_size = 1\n{extra}\n"),
    ))
}

fn login(port: u16, params: &[(&str, &str)]) -> (RawClient, Vec<Msg>) {
    let mut client = RawClient::connect(port);
    client.startup(TRUST_USER, DB, params);
    let msgs = client.recv_until_ready();
    assert!(
        msgs.iter().any(|m| m.auth_code() == Some(0)) && !msgs.iter().any(Msg::is_error),
        "login with {params:?} failed: {msgs:?}"
    );
    (client, msgs)
}

/// The only row of a query, as text; panics on an error.
fn row(client: &mut RawClient, sql: &str) -> Vec<String> {
    let reply = client.query(sql);
    assert!(!reply.iter().any(Msg::is_error), "{sql}: {reply:?}");
    let rows = data_rows(&reply);
    assert_eq!(rows.len(), 1, "{sql}: {reply:?}");
    rows[0]
        .iter()
        .map(|v| v.clone().unwrap_or_default())
        .collect()
}

/// Value of a ParameterStatus in `msgs`, the last one if several.
fn param_status(msgs: &[Msg], name: &str) -> Option<String> {
    msgs.iter().rev().filter(|m| m.tag == b'S').find_map(|m| {
        let mut parts = m.body.split(|&b| b == 0);
        let n = parts.next()?;
        let v = parts.next()?;
        (n == name.as_bytes()).then(|| String::from_utf8_lossy(v).into_owned())
    })
}

/// Runs `sql` on each client in turn, ROUNDS times; client i must always get `expected[i]`.
/// All answers must come from the same backend (pid in an extra last column).
fn alternate(clients: &mut [RawClient], sql: &str, expected: &[&[&str]]) {
    let sql = format!("{sql}, pg_backend_pid()::text");
    let mut pids = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        for (i, client) in clients.iter_mut().enumerate() {
            let mut r = row(client, &sql);
            pids.insert(r.pop().unwrap());
            assert_eq!(r, expected[i], "round {round}, client {i}");
        }
    }
    assert_eq!(
        pids.len(),
        1,
        "the clients did not share one server: {pids:?}"
    );
}

#[test]
fn timezone_from_startup_is_kept_per_client() {
    let pooler = start("");
    let (a, greet_a) = login(pooler.port, &[("TimeZone", "Asia/Tokyo")]);
    let (b, greet_b) = login(pooler.port, &[("TimeZone", "America/Sao_Paulo")]);
    assert_eq!(
        param_status(&greet_a, "TimeZone").as_deref(),
        Some("Asia/Tokyo")
    );
    assert_eq!(
        param_status(&greet_b, "TimeZone").as_deref(),
        Some("America/Sao_Paulo")
    );
    // now()::text carries the offset of the session's time zone.
    alternate(
        &mut [a, b],
        "SELECT current_setting('TimeZone'), right(now()::text, 3)",
        &[&["Asia/Tokyo", "+09"], &["America/Sao_Paulo", "-03"]],
    );
}

#[test]
fn application_name_is_kept_per_client() {
    let pooler = start("");
    let (a, _) = login(pooler.port, &[("application_name", "app_alpha")]);
    let (b, _) = login(pooler.port, &[("application_name", "app_beta")]);
    // The second column is what the server shows in pg_stat_activity.
    alternate(
        &mut [a, b],
        "SELECT current_setting('application_name'), \
         (SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid())",
        &[&["app_alpha", "app_alpha"], &["app_beta", "app_beta"]],
    );
}

#[test]
fn datestyle_is_kept_per_client() {
    let pooler = start("");
    let (a, _) = login(pooler.port, &[("DateStyle", "SQL, DMY")]);
    let (b, _) = login(pooler.port, &[("DateStyle", "German, DMY")]);
    let (c, _) = login(pooler.port, &[]);
    alternate(
        &mut [a, b, c],
        "SELECT current_setting('DateStyle'), '2024-03-01'::date::text",
        &[
            &["SQL, DMY", "01/03/2024"],
            &["German, DMY", "01.03.2024"],
            &["ISO, MDY", "2024-03-01"],
        ],
    );
}

/// A SET by the client is reported (ParameterStatus), remembered, and restored on the
/// server the client gets next, while other clients keep their own values.
#[test]
fn set_by_the_client_is_restored_after_a_switch() {
    let pooler = start("");
    let (mut a, greet) = login(pooler.port, &[]);
    let (mut b, _) = login(pooler.port, &[("application_name", "bystander")]);
    let default_tz = param_status(&greet, "TimeZone").expect("TimeZone in the greeting");
    assert_ne!(default_tz, "Pacific/Auckland");

    let reply = a.query("SET TimeZone = 'Pacific/Auckland'");
    assert!(!reply.iter().any(Msg::is_error), "{reply:?}");
    assert_eq!(
        param_status(&reply, "TimeZone").as_deref(),
        Some("Pacific/Auckland"),
        "{reply:?}"
    );
    let reply = a.query("SET application_name = 'renamed_a'");
    assert_eq!(
        param_status(&reply, "application_name").as_deref(),
        Some("renamed_a")
    );

    let mut clients = [a, b];
    alternate(
        &mut clients,
        "SELECT current_setting('TimeZone'), current_setting('application_name')",
        &[
            &["Pacific/Auckland", "renamed_a"],
            &[&default_tz, "bystander"],
        ],
    );

    // A SET inside a transaction that commits is remembered too; a RESET goes back.
    [a, b] = clients;
    let reply = b.query("BEGIN; SET TimeZone = 'Asia/Kolkata'; COMMIT");
    assert!(!reply.iter().any(Msg::is_error), "{reply:?}");
    let reply = a.query("RESET TimeZone");
    assert_eq!(
        param_status(&reply, "TimeZone").as_deref(),
        Some(default_tz.as_str())
    );
    alternate(
        &mut [a, b],
        "SELECT current_setting('TimeZone')",
        &[&[&default_tz], &["Asia/Kolkata"]],
    );
}

#[test]
fn track_extra_parameters_keeps_interval_style() {
    let pooler = start("track_extra_parameters = [\"IntervalStyle\"]");
    let (a, greet) = login(pooler.port, &[("IntervalStyle", "postgres_verbose")]);
    let (b, _) = login(pooler.port, &[("IntervalStyle", "iso_8601")]);
    let (mut c, _) = login(pooler.port, &[]);
    assert_eq!(
        param_status(&greet, "IntervalStyle").as_deref(),
        Some("postgres_verbose")
    );
    let reply = c.query("SET IntervalStyle = 'sql_standard'");
    assert!(!reply.iter().any(Msg::is_error), "{reply:?}");
    alternate(
        &mut [a, b, c],
        "SELECT current_setting('IntervalStyle'), '1 day 2 hours'::interval::text",
        &[
            &["postgres_verbose", "@ 1 day 2 hours"],
            &["iso_8601", "P1DT2H"],
            &["sql_standard", "1 2:00:00"],
        ],
    );
}
