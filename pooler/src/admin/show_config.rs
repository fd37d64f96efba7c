//! SHOW CONFIG: every PgBouncer 1.25.2 setting with its default and `changeable` flag as
//! PgBouncer reports them, the running value for the settings we implement (PgBouncer's
//! default for the others), and our own settings (workers, io_backend, log_level, metrics_addr).

use std::time::Duration;

use super::result::row;
use crate::config::Config;

row! {
    pub struct ConfigRow {
        key: Text,
        value: Text,
        default: Text,
        changeable: Text,
    }
}

/// (key, PgBouncer's default, changeable), in PgBouncer's order (alphabetical), ours
/// placed alphabetically too.
const SETTINGS: [(&str, &str, bool); 107] = [
    ("admin_users", "", true),
    ("application_name_add_host", "0", true),
    ("auth_dbname", "", true),
    ("auth_file", "", true),
    ("auth_hba_file", "", true),
    ("auth_ident_file", "", true),
    ("auth_ldap_options", "", true),
    (
        "auth_query",
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin",
        true,
    ),
    ("auth_type", "md5", true),
    ("auth_user", "", true),
    ("autodb_idle_timeout", "3600", true),
    ("cancel_wait_timeout", "10", true),
    ("client_idle_timeout", "0", true),
    ("client_login_timeout", "60", true),
    ("client_tls13_ciphers", "", true),
    ("client_tls_ca_file", "", true),
    ("client_tls_cert_file", "", true),
    ("client_tls_ciphers", "default", true),
    ("client_tls_dheparams", "auto", true),
    ("client_tls_ecdhcurve", "auto", true),
    ("client_tls_key_file", "", true),
    ("client_tls_protocols", "secure", true),
    ("client_tls_sslmode", "disable", true),
    ("conffile", "", true),
    ("default_pool_size", "20", true),
    ("disable_pqexec", "0", false),
    ("dns_max_ttl", "15", true),
    ("dns_nxdomain_ttl", "15", true),
    ("dns_zone_check_period", "0", true),
    ("ebpf", "auto", false),
    ("ebpf_pin_path", "", false),
    ("ebpf_rtt_samples", "0", false),
    ("idle_transaction_timeout", "0", true),
    ("ignore_startup_parameters", "", true),
    ("io_backend", "auto", false),
    ("job_name", "pgbouncer", false),
    ("listen_addr", "", false),
    ("listen_backlog", "128", false),
    ("listen_port", "6432", false),
    ("log_connections", "1", true),
    ("log_disconnections", "1", true),
    ("log_level", "", false),
    ("log_pooler_errors", "1", true),
    ("log_stats", "1", true),
    ("logfile", "", true),
    ("max_client_conn", "100", true),
    ("max_client_prepared_statements", "1000", true),
    ("max_db_client_connections", "0", true),
    ("max_db_connections", "0", true),
    ("max_packet_size", "2147483647", true),
    ("max_prepared_statements", "200", true),
    ("max_user_client_connections", "0", true),
    ("max_user_connections", "0", true),
    ("metrics_addr", "", false),
    ("min_pool_size", "0", true),
    ("peer_id", "0", true),
    ("pidfile", "", false),
    ("pkt_buf", "4096", false),
    ("pool_mode", "session", true),
    ("query_timeout", "0", true),
    ("query_wait_notify", "5", true),
    ("query_wait_timeout", "120", true),
    ("reserve_pool_size", "0", true),
    ("reserve_pool_timeout", "5", true),
    ("resolv_conf", "", false),
    ("sbuf_loopcnt", "5", true),
    ("scram_iterations", "4096", true),
    ("server_check_delay", "30", true),
    ("server_check_query", "<empty>", true),
    ("server_connect_timeout", "15", true),
    ("server_fast_close", "0", true),
    ("server_idle_timeout", "600", true),
    ("server_lifetime", "3600", true),
    ("server_login_concurrency", "1", true),
    ("server_login_retry", "15", true),
    ("server_reset_query", "DISCARD ALL", true),
    ("server_reset_query_always", "0", true),
    ("server_round_robin", "0", true),
    ("server_tls13_ciphers", "", true),
    ("server_tls_ca_file", "", true),
    ("server_tls_cert_file", "", true),
    ("server_tls_ciphers", "default", true),
    ("server_tls_key_file", "", true),
    ("server_tls_protocols", "secure", true),
    ("server_tls_sslmode", "prefer", true),
    ("so_reuseport", "0", false),
    ("stats_period", "60", true),
    ("stats_users", "", true),
    ("suspend_timeout", "10", true),
    ("syslog", "0", true),
    ("syslog_facility", "daemon", true),
    ("syslog_ident", "pgbouncer", true),
    ("tcp_defer_accept", "1", true),
    ("tcp_keepalive", "1", true),
    ("tcp_keepcnt", "0", true),
    ("tcp_keepidle", "0", true),
    ("tcp_keepintvl", "0", true),
    ("tcp_socket_buffer", "0", true),
    ("tcp_user_timeout", "0", true),
    ("track_extra_parameters", "IntervalStyle", false),
    ("transaction_timeout", "0", true),
    ("unix_socket_dir", "/tmp", false),
    ("unix_socket_group", "", false),
    ("unix_socket_mode", "0777", false),
    ("user", "", false),
    ("verbose", "", true),
    ("workers", "0", false),
];

/// Whether `key` (lower case) is a setting SHOW CONFIG lists, hence one SET may change.
pub fn is_setting(key: &str) -> bool {
    SETTINGS.iter().any(|(k, _, _)| *k == key)
}

/// Seconds, as PgBouncer prints durations ("5", "0.5").
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// The running value of a setting we implement; None for PgBouncer-only settings.
fn value(cfg: &Config, key: &str) -> Option<String> {
    let g = &cfg.pooler;
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    Some(match key {
        "admin_users" => g.admin_users.join(","),
        "application_name_add_host" => flag(g.application_name_add_host),
        "auth_file" => path(&g.auth_file),
        "auth_type" => g.auth_type.as_str().to_string(),
        "client_idle_timeout" => secs(g.client_idle_timeout),
        "client_login_timeout" => secs(g.client_login_timeout),
        "conffile" => path(&cfg.path),
        "default_pool_size" => g.default_pool_size.to_string(),
        "dns_max_ttl" => secs(g.dns_max_ttl),
        "idle_transaction_timeout" => secs(g.idle_transaction_timeout),
        "ignore_startup_parameters" => g.ignore_startup_parameters.join(","),
        "io_backend" => g.io_backend.as_str().to_string(),
        "listen_addr" => g.listen_addr.join(","),
        "listen_backlog" => g.listen_backlog.to_string(),
        "listen_port" => g.listen_port.to_string(),
        "log_connections" => flag(g.log_connections),
        "log_disconnections" => flag(g.log_disconnections),
        "log_level" => g.log_level.clone().unwrap_or_default(),
        "log_pooler_errors" => flag(g.log_pooler_errors),
        "max_client_conn" => g.max_client_conn.to_string(),
        "max_db_connections" => g.max_db_connections.to_string(),
        "max_packet_size" => g.max_packet_size.to_string(),
        "max_prepared_statements" => g.max_prepared_statements.to_string(),
        "max_user_connections" => g.max_user_connections.to_string(),
        "metrics_addr" => g.metrics_addr.clone(),
        "ebpf" => g.ebpf.as_str().to_string(),
        "ebpf_rtt_samples" => flag(g.ebpf_rtt_samples),
        "ebpf_pin_path" => g
            .ebpf_pin_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        "max_client_prepared_statements" => g.max_client_prepared_statements.to_string(),
        "min_pool_size" => g.min_pool_size.to_string(),
        "pkt_buf" => g.pkt_buf.to_string(),
        "pool_mode" => g.pool_mode.as_str().to_string(),
        "query_timeout" => secs(g.query_timeout),
        "query_wait_timeout" => secs(g.query_wait_timeout),
        "reserve_pool_size" => g.reserve_pool_size.to_string(),
        "reserve_pool_timeout" => secs(g.reserve_pool_timeout),
        "server_check_delay" => secs(g.server_check_delay),
        "server_check_query" => g.server_check_query.clone(),
        "server_connect_timeout" => secs(g.server_connect_timeout),
        "server_idle_timeout" => secs(g.server_idle_timeout),
        "server_lifetime" => secs(g.server_lifetime),
        "server_login_concurrency" => g.server_login_concurrency.to_string(),
        "server_login_retry" => secs(g.server_login_retry),
        "server_reset_query" => g.server_reset_query.clone(),
        "server_reset_query_always" => flag(g.server_reset_query_always),
        "so_reuseport" => flag(g.so_reuseport),
        "stats_period" => secs(g.stats_period),
        "stats_users" => g.stats_users.join(","),
        "suspend_timeout" => secs(g.suspend_timeout),
        "tcp_keepalive" => flag(g.tcp_keepalive),
        "tcp_keepcnt" => g.tcp_keepcnt.to_string(),
        "tcp_keepidle" => secs(g.tcp_keepidle),
        "tcp_keepintvl" => secs(g.tcp_keepintvl),
        "tcp_user_timeout" => secs(g.tcp_user_timeout),
        "track_extra_parameters" => g.track_extra_parameters.join(","),
        "unix_socket_dir" => path(&g.unix_socket_dir),
        "unix_socket_mode" => format!("{:04o}", g.unix_socket_mode),
        "workers" => g.workers.to_string(),
        _ => return None,
    })
}

pub fn rows(cfg: &Config) -> Vec<ConfigRow> {
    SETTINGS
        .iter()
        .map(|&(key, default, changeable)| ConfigRow {
            key: key.to_string(),
            value: value(cfg, key).unwrap_or_else(|| default.to_string()),
            default: default.to_string(),
            changeable: if changeable { "yes" } else { "no" }.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testdata::snapshot;

    #[test]
    fn sorted_and_complete() {
        let keys: Vec<_> = SETTINGS.iter().map(|s| s.0).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(keys, sorted);
        // PgBouncer's 98 plus ours (workers, io_backend, log_level, metrics_addr, the three
        // ebpf keys, max_client_prepared_statements, server_login_concurrency).
        assert_eq!(keys.len(), 98 + 9);
    }

    #[test]
    fn values_formatted_like_pgbouncer() {
        let snap = snapshot(
            "reserve_pool_timeout = 0.5\nadmin_users = [\"a\", \"b\"]\nlog_connections = false",
            "",
        );
        let rows = rows(&snap.config);
        let get = |k: &str| rows.iter().find(|r| r.key == k).expect(k).clone();
        assert_eq!(get("reserve_pool_timeout").value, "0.5");
        assert_eq!(get("server_lifetime").value, "3600");
        assert_eq!(get("admin_users").value, "a,b");
        assert_eq!(get("log_connections").value, "0");
        assert_eq!(get("unix_socket_mode").value, "0777");
        assert_eq!(get("auth_type").value, "trust");
        assert_eq!(get("auth_type").default, "md5");
        // Not implemented: PgBouncer's default stands as the value.
        assert_eq!(get("job_name").value, "pgbouncer");
        assert_eq!(get("listen_port").changeable, "no");
        assert_eq!(get("pool_mode").changeable, "yes");
        assert!(is_setting("default_pool_size") && is_setting("workers"));
        assert!(!is_setting("extra_float_digits") && !is_setting("application_name"));
    }
}
