//! Defaults: every `[pooler]` default against PgBouncer 1.25.2's SHOW CONFIG.

use std::time::Duration;

use super::super::{AuthType, General, IoBackend, PoolMode};
use super::{parse, pooler};

/// Rows of SHOW CONFIG (key, default) of PgBouncer 1.25.2 for the keys we support, copied from
/// shared/docs/pgbouncer-console.md (beside the checkout). Two rows are garbled there by commas inside values
/// (admin_users, auth_query); admin_users' real default is empty, as PgBouncer documents.
const PGBOUNCER_DEFAULTS: [(&str, &str); 48] = [
    ("admin_users", ""),
    ("application_name_add_host", "0"),
    ("auth_file", ""),
    ("auth_type", "md5"),
    ("client_idle_timeout", "0"),
    ("client_login_timeout", "60"),
    ("default_pool_size", "20"),
    ("dns_max_ttl", "15"),
    ("idle_transaction_timeout", "0"),
    ("ignore_startup_parameters", ""),
    ("listen_addr", ""),
    ("listen_backlog", "128"),
    ("listen_port", "6432"),
    ("log_connections", "1"),
    ("log_disconnections", "1"),
    ("log_pooler_errors", "1"),
    ("max_client_conn", "100"),
    ("max_db_connections", "0"),
    ("max_packet_size", "2147483647"),
    ("max_prepared_statements", "200"),
    ("max_user_connections", "0"),
    ("min_pool_size", "0"),
    ("pkt_buf", "4096"),
    ("pool_mode", "session"),
    ("query_timeout", "0"),
    ("query_wait_timeout", "120"),
    ("reserve_pool_size", "0"),
    ("reserve_pool_timeout", "5"),
    ("server_check_delay", "30"),
    ("server_check_query", "<empty>"),
    ("server_connect_timeout", "15"),
    ("server_idle_timeout", "600"),
    ("server_lifetime", "3600"),
    ("server_login_retry", "15"),
    ("server_reset_query", "DISCARD ALL"),
    ("server_reset_query_always", "0"),
    ("so_reuseport", "0"),
    ("stats_period", "60"),
    ("stats_users", ""),
    ("suspend_timeout", "10"),
    ("tcp_keepalive", "1"),
    ("tcp_keepcnt", "0"),
    ("tcp_keepidle", "0"),
    ("tcp_keepintvl", "0"),
    ("tcp_user_timeout", "0"),
    ("track_extra_parameters", "IntervalStyle"),
    ("unix_socket_dir", "/tmp"),
    ("unix_socket_mode", "0777"),
];

/// A setting the way PgBouncer's SHOW CONFIG prints it.
fn render(g: &General, key: &str) -> Option<String> {
    let secs = |d: Duration| {
        if d.subsec_nanos() == 0 {
            d.as_secs().to_string()
        } else {
            d.as_secs_f64().to_string()
        }
    };
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    let list = |v: &[String]| v.join(",");
    Some(match key {
        "admin_users" => list(&g.admin_users),
        "application_name_add_host" => flag(g.application_name_add_host),
        "auth_file" => g
            .auth_file
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string()),
        "auth_type" => g.auth_type.to_string(),
        "client_idle_timeout" => secs(g.client_idle_timeout),
        "client_login_timeout" => secs(g.client_login_timeout),
        "default_pool_size" => g.default_pool_size.to_string(),
        "dns_max_ttl" => secs(g.dns_max_ttl),
        "idle_transaction_timeout" => secs(g.idle_transaction_timeout),
        // Ours always holds extra_float_digits on top of PgBouncer's (empty) list.
        "ignore_startup_parameters" => {
            list(g.ignore_startup_parameters.get(1..).unwrap_or_default())
        }
        "listen_addr" => list(&g.listen_addr),
        "listen_backlog" => g.listen_backlog.to_string(),
        "listen_port" => g.listen_port.to_string(),
        "log_connections" => flag(g.log_connections),
        "log_disconnections" => flag(g.log_disconnections),
        "log_pooler_errors" => flag(g.log_pooler_errors),
        "max_client_conn" => g.max_client_conn.to_string(),
        "max_db_connections" => g.max_db_connections.to_string(),
        "max_packet_size" => g.max_packet_size.to_string(),
        "max_prepared_statements" => g.max_prepared_statements.to_string(),
        "max_user_connections" => g.max_user_connections.to_string(),
        "min_pool_size" => g.min_pool_size.to_string(),
        "pkt_buf" => g.pkt_buf.to_string(),
        "pool_mode" => g.pool_mode.to_string(),
        "query_timeout" => secs(g.query_timeout),
        "query_wait_timeout" => secs(g.query_wait_timeout),
        "reserve_pool_size" => g.reserve_pool_size.to_string(),
        "reserve_pool_timeout" => secs(g.reserve_pool_timeout),
        "server_check_delay" => secs(g.server_check_delay),
        "server_check_query" if g.server_check_query.is_empty() => "<empty>".to_owned(),
        "server_check_query" => g.server_check_query.clone(),
        "server_connect_timeout" => secs(g.server_connect_timeout),
        "server_idle_timeout" => secs(g.server_idle_timeout),
        "server_lifetime" => secs(g.server_lifetime),
        "server_login_retry" => secs(g.server_login_retry),
        "server_reset_query" => g.server_reset_query.clone(),
        "server_reset_query_always" => flag(g.server_reset_query_always),
        "so_reuseport" => flag(g.so_reuseport),
        "stats_period" => secs(g.stats_period),
        "stats_users" => list(&g.stats_users),
        "suspend_timeout" => secs(g.suspend_timeout),
        "tcp_keepalive" => flag(g.tcp_keepalive),
        "tcp_keepcnt" => g.tcp_keepcnt.to_string(),
        "tcp_keepidle" => secs(g.tcp_keepidle),
        "tcp_keepintvl" => secs(g.tcp_keepintvl),
        "tcp_user_timeout" => secs(g.tcp_user_timeout),
        "track_extra_parameters" => list(&g.track_extra_parameters),
        "unix_socket_dir" => g
            .unix_socket_dir
            .as_ref()
            .map_or(String::new(), |p| p.display().to_string()),
        "unix_socket_mode" => format!("0{:o}", g.unix_socket_mode),
        _ => return None,
    })
}

#[test]
fn defaults_match_pgbouncer() {
    let g = General::default();
    for (key, expected) in PGBOUNCER_DEFAULTS {
        let ours = render(&g, key).unwrap_or_else(|| panic!("no renderer for {key}"));
        assert_eq!(ours, expected, "default of {key}");
    }
}

#[test]
fn defaults_match_the_recorded_show_config_when_available() {
    // The recording lives beside the checkout, not in it; skip quietly where it is absent.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/docs/pgbouncer-console.md"
    );
    let Ok(doc) = std::fs::read_to_string(path) else {
        return;
    };
    let g = General::default();
    let mut compared = 0;
    for line in doc.lines() {
        let mut fields = line.splitn(3, ',');
        let (Some(key), Some(default)) = (fields.next(), fields.next()) else {
            continue;
        };
        // admin_users is garbled in the recording (see PGBOUNCER_DEFAULTS); the rest is exact.
        if key == "admin_users" {
            continue;
        }
        if let Some(ours) = render(&g, key) {
            assert_eq!(ours, default, "default of {key} differs from the recording");
            compared += 1;
        }
    }
    assert_eq!(compared, PGBOUNCER_DEFAULTS.len() - 1);
}

#[test]
fn every_supported_key_is_compared_or_ours() {
    let ours = [
        "workers",
        "io_backend",
        "recv_ring_buffers",
        "log_level",
        "metrics_addr",
        "ebpf",
        "ebpf_rtt_samples",
        "ebpf_pin_path",
        "max_client_prepared_statements",
        "server_login_concurrency",
    ];
    for key in super::super::general::GENERAL_KEYS {
        assert!(
            ours.contains(&key) || PGBOUNCER_DEFAULTS.iter().any(|(k, _)| *k == key),
            "{key} has no PgBouncer default in the table"
        );
    }
}

#[test]
fn a_minimal_file_gets_every_default() {
    let config = parse(&pooler(""));
    let g = &config.pooler;
    let d = General::default();
    // Everything but the auth_type the helper sets.
    assert_eq!(g.auth_type, AuthType::Trust);
    assert_eq!(d.auth_type, AuthType::Md5);
    assert_eq!(
        format!(
            "{:?}",
            General {
                auth_type: d.auth_type,
                ..g.clone()
            }
        ),
        format!("{d:?}")
    );
    assert!(config.databases.is_empty());
    assert!(config.users.is_empty());
    assert_eq!(config.path, None);
}

#[test]
fn our_own_defaults() {
    let g = General::default();
    assert_eq!(g.workers, 0);
    assert_eq!(g.io_backend, IoBackend::Auto);
    assert_eq!(g.log_level, None);
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!(g.ignore_startup_parameters, ["extra_float_digits"]);
    assert_eq!(g.track_extra_parameters, ["IntervalStyle"]);
    assert!(g.worker_count() >= 1);
    assert_eq!(General { workers: 3, ..g }.worker_count(), 3);
}
