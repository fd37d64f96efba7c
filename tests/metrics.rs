//! Monitoring endpoints: /metrics parsed strictly (the exporter's names, labels and types;
//! counters that follow a known workload) and by prometheus_client's own parser, /healthz
//! through a SIGTERM shutdown, and /readyz naming a database that cannot be reached.

mod common;
use common::*;

use std::time::Duration;

#[path = "metrics_support.rs"]
mod metrics_support;
use metrics_support::*;

/// Families pgbouncer_exporter emits, with their type and label names.
const EXPORTER_FAMILIES: &[(&str, &str, &[&str])] = &[
    ("pgbouncer_up", "gauge", &[]),
    ("pgbouncer_version_info", "gauge", &["version"]),
    ("pgbouncer_databases", "gauge", &[]),
    ("pgbouncer_users", "gauge", &[]),
    ("pgbouncer_pools", "gauge", &[]),
    ("pgbouncer_used_clients", "gauge", &[]),
    ("pgbouncer_login_clients", "gauge", &[]),
    ("pgbouncer_used_servers", "gauge", &[]),
    ("pgbouncer_cached_dns_names", "gauge", &[]),
    ("pgbouncer_in_flight_dns_queries", "gauge", &[]),
    ("pgbouncer_config_max_client_connections", "gauge", &[]),
    ("pgbouncer_config_max_user_connections", "gauge", &[]),
    ("pgbouncer_databases_pool_size", "gauge", DB_LABELS),
    ("pgbouncer_databases_reserve_pool", "gauge", DB_LABELS),
    ("pgbouncer_databases_max_connections", "gauge", DB_LABELS),
    (
        "pgbouncer_databases_current_connections",
        "gauge",
        DB_LABELS,
    ),
    ("pgbouncer_databases_paused", "gauge", DB_LABELS),
    ("pgbouncer_databases_disabled", "gauge", DB_LABELS),
    (
        "pgbouncer_stats_queries_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_queries_duration_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_received_bytes_total",
        "counter",
        &["database"],
    ),
    ("pgbouncer_stats_sent_bytes_total", "counter", &["database"]),
    (
        "pgbouncer_stats_client_wait_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_sql_transactions_pooled_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_stats_server_in_transaction_seconds_total",
        "counter",
        &["database"],
    ),
    (
        "pgbouncer_pools_client_active_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_waiting_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_active_cancel_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_active_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_idle_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_used_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_testing_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_server_login_connections",
        "gauge",
        POOL_LABELS,
    ),
    (
        "pgbouncer_pools_client_maxwait_seconds",
        "gauge",
        POOL_LABELS,
    ),
    ("pgbouncer_server_connections", "gauge", SERVER_LABELS),
];
const DB_LABELS: &[&str] = &[
    "database",
    "force_user",
    "host",
    "name",
    "pool_mode",
    "port",
];
const POOL_LABELS: &[&str] = &["database", "user"];
const SERVER_LABELS: &[&str] = &["addr", "close_needed", "database", "state", "user"];

#[test]
fn metrics_follow_the_exporter_and_a_known_workload() {
    const DB: &str = "metrics_workload";
    const N: usize = 40;
    Postgres::shared().create_database(DB);
    let mport = free_port();
    let dbs = format!("{DB} = {{ host = \"{{pg_host}}\", port = {{pg_port}}, pool_size = 1 }}");
    let pooler = Pooler::start(&config(mport, &dbs));
    // The harness' readiness probe is a connection too: count from after its accept.
    let mut before = scrape(mport);
    wait_until(Duration::from_secs(5), || {
        before = scrape(mport);
        before.sum("pooler_worker_accepted_connections_total") >= 1.0
    });
    let xacts = |e: &Exposition| {
        e.value(
            "pgbouncer_stats_sql_transactions_pooled_total",
            &labels(&[("database", DB)]),
        )
    };
    let pool = labels(&[("database", DB), ("user", "postgres")]);

    let (mut a, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    for _ in 0..N {
        assert!(!a.query("SELECT 1").iter().any(|m| m.is_error()));
    }
    // A client queued behind a transaction, for the wait histogram.
    assert!(!a.query("BEGIN").iter().any(|m| m.is_error()));
    let (mut b, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    b.send(&fe::query("SELECT 2"));
    let waiting = wait_until(Duration::from_secs(10), || {
        scrape(mport).value("pgbouncer_pools_client_waiting_connections", &pool) == Some(1.0)
    });
    assert!(waiting, "the second client never showed as waiting");
    std::thread::sleep(Duration::from_millis(5)); // the wait being measured
    assert!(!a.query("COMMIT").iter().any(|m| m.is_error()));
    assert!(!b.recv_until_ready().iter().any(|m| m.is_error()));

    // N autocommit SELECTs, BEGIN..COMMIT and the waiting SELECT.
    let expected = xacts(&before).unwrap_or(0.0) + N as f64 + 2.0;
    let mut after = scrape(mport);
    wait_until(Duration::from_secs(5), || {
        after = scrape(mport);
        xacts(&after) >= Some(expected)
    });
    assert_eq!(xacts(&after), Some(expected), "transactions counted");
    assert!(
        after.value(
            "pgbouncer_stats_queries_pooled_total",
            &labels(&[("database", DB)])
        ) >= Some(N as f64)
    );

    for (name, kind, label_names) in EXPORTER_FAMILIES {
        let f = after
            .families
            .get(*name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(f.kind.as_deref(), Some(*kind), "TYPE of {name}");
        assert!(
            f.help.as_deref().is_some_and(|h| !h.is_empty()),
            "HELP of {name}"
        );
        for s in &f.samples {
            let got: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            assert_eq!(&got, label_names, "labels of {name}");
        }
    }
    assert_eq!(after.value("pgbouncer_up", &labels(&[])), Some(1.0));
    assert_eq!(
        after.families["pgbouncer_stats_client_wait_seconds_total"]
            .help
            .as_deref(),
        Some("Time spent by clients waiting for a server in seconds")
    );
    let db_row = labels(&[
        ("database", DB),
        ("force_user", ""),
        ("host", "127.0.0.1"),
        ("name", DB),
        ("pool_mode", ""),
        ("port", &Postgres::shared().port.to_string()),
    ]);
    assert_eq!(
        after.value("pgbouncer_databases_pool_size", &db_row),
        Some(1.0)
    );
    assert!(
        after.value(
            "pgbouncer_stats_client_wait_seconds_total",
            &labels(&[("database", DB)])
        ) > Some(0.0)
    );
    // Every counter series only grew.
    for (name, f) in &before.families {
        if f.kind.as_deref() == Some("counter") {
            for s in &f.samples {
                assert!(
                    after.value(name, &s.labels) >= Some(s.value),
                    "{name}{:?} went down",
                    s.labels
                );
            }
        }
    }
    // Ours: the wait histogram saw the queued client; the two logins were counted.
    let count = after
        .value("pooler_pool_wait_seconds_count", &pool)
        .expect("histogram of the pool");
    let sum = after
        .value("pooler_pool_wait_seconds_sum", &pool)
        .expect("histogram sum");
    assert!(count >= 1.0 && sum > 0.0, "count {count} sum {sum}");
    assert_eq!(
        after.families["pooler_pool_wait_seconds"].kind.as_deref(),
        Some("histogram")
    );
    let accepted = |e: &Exposition| e.sum("pooler_worker_accepted_connections_total");
    assert_eq!(accepted(&after) - accepted(&before), 2.0);
    assert!(after.sum("pooler_worker_sessions") >= 2.0);
    assert_eq!(
        after.families["pooler_worker_sessions"].samples.len(),
        2,
        "one per worker"
    );
}

#[test]
fn healthz_fails_once_a_shutdown_starts() {
    const DB: &str = "metrics_health";
    Postgres::shared().create_database(DB);
    let mport = free_port();
    let mut pooler = Pooler::start(&config(mport, ""));
    assert_eq!(get(mport, "/healthz"), (200, "ok\n".into()));
    // Neither garbage nor wrong requests take the listener down.
    assert_eq!(http_raw(mport, b"POST /healthz HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(get(mport, "/nowhere").0, 404);
    assert_eq!(http_raw(mport, b"\x16\x03\x01\x00\xa5\x01\r\n\r\n").0, 400);
    assert_eq!(http_raw(mport, &[b'A'; 20_000]).0, 431);
    let (mut client, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    pooler.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || get(mport, "/healthz").0 == 503),
        "/healthz still 200 after SIGTERM"
    );
    // The connected client may finish; then the pooler exits.
    assert!(!client.query("SELECT 1").iter().any(|m| m.is_error()));
    drop(client);
    assert!(
        pooler.wait_exit(Duration::from_secs(10)).is_some(),
        "the pooler did not exit"
    );
}

#[test]
fn readyz_names_an_unreachable_database() {
    const DB: &str = "metrics_ready";
    Postgres::shared().create_database(DB);
    let mport = free_port();
    let dbs = format!("{DB} = {{ host = \"{{pg_host}}\", port = {{pg_port}} }}");
    let pooler = Pooler::start(&config(mport, &dbs));
    let (status, body) = get(mport, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{DB}: ok")), "{body}");
    // A database whose host:port nobody listens on, added by RELOAD.
    let dead = free_port();
    let path = pooler.dir.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[databases]\n",
        &format!("[databases]\nmetrics_dead = {{ host = \"127.0.0.1\", port = {dead} }}\n"),
    );
    std::fs::write(&path, text).unwrap();
    pooler.admin("RELOAD").expect("RELOAD");
    let (status, body) = get(mport, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("metrics_dead: unreachable: 127.0.0.1:{dead}")),
        "{body}"
    );
    assert!(body.contains(&format!("{DB}: ok")), "{body}");
}

const PARSE: &str = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=20).read().decode()
families = {f.name: f for f in text_string_to_metric_families(text)}
print("FAMILIES", len(families))
for name in sys.argv[2:]:
    f = families.get(name)
    print("FAMILY", name, f.type if f else "missing", len(f.samples) if f else 0)
"#;

#[test]
fn prometheus_clients_parser_reads_metrics() {
    const DB: &str = "metrics_parser";
    let driver = match prometheus_client() {
        Ok(d) => d,
        Err(why) => return skip("prometheus_clients_parser_reads_metrics", &why),
    };
    Postgres::shared().create_database(DB);
    let mport = free_port();
    let pooler = Pooler::start(&config(mport, ""));
    let (mut c, _) = RawClient::login_trust(pooler.port, "postgres", DB);
    assert!(!c.query("SELECT 1").iter().any(Msg::is_error));
    // The parser drops a counter's _total suffix from its family name.
    let families = [
        ("pgbouncer_up", "gauge"),
        ("pgbouncer_pools_client_active_connections", "gauge"),
        ("pgbouncer_stats_queries_pooled", "counter"),
        ("pooler_pool_wait_seconds", "histogram"),
        ("pooler_worker_accepted_connections", "counter"),
    ];
    let mut args = vec![format!("http://127.0.0.1:{mport}/metrics")];
    args.extend(families.iter().map(|(n, _)| n.to_string()));
    let out = driver
        .run("parse.py", PARSE, &args)
        .unwrap_or_else(|e| panic!("prometheus_client could not parse /metrics: {e}"));
    let count: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("FAMILIES "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(count >= 30, "{out}");
    for (name, kind) in families {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("FAMILY {name} ")))
            .unwrap_or_else(|| panic!("{name}: {out}"));
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[2], kind, "{line}");
        assert!(parts[3].parse::<usize>().unwrap() >= 1, "{line}");
    }
}
