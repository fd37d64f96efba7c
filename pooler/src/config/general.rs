//! The document walker: sections, and the `[pooler]` keys (PgBouncer's `[pgbouncer]` ones).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::extract::{Collector, describe, did_you_mean};
use super::{
    ALWAYS_IGNORED_STARTUP_PARAMETER, AuthType, Config, ConfigError, ConfigErrors, EbpfMode,
    General, IoBackend, PoolMode, databases, validate,
};

/// The sections a file may have.
const SECTIONS: [&str; 3] = ["pooler", "databases", "users"];

/// Every key `[pooler]` accepts.
pub(super) const GENERAL_KEYS: [&str; 58] = [
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "unix_socket_mode",
    "listen_backlog",
    "so_reuseport",
    "pool_mode",
    "max_client_conn",
    "default_pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "max_db_connections",
    "max_user_connections",
    "auth_type",
    "auth_file",
    "admin_users",
    "stats_users",
    "server_reset_query",
    "server_reset_query_always",
    "server_check_query",
    "server_check_delay",
    "server_idle_timeout",
    "server_lifetime",
    "server_connect_timeout",
    "server_login_retry",
    "server_login_concurrency",
    "suspend_timeout",
    "query_timeout",
    "query_wait_timeout",
    "client_idle_timeout",
    "client_login_timeout",
    "idle_transaction_timeout",
    "dns_max_ttl",
    "ignore_startup_parameters",
    "track_extra_parameters",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "max_packet_size",
    "max_prepared_statements",
    "max_client_prepared_statements",
    "pkt_buf",
    "stats_period",
    "tcp_keepalive",
    "tcp_keepcnt",
    "tcp_keepidle",
    "tcp_keepintvl",
    "tcp_user_timeout",
    "application_name_add_host",
    "workers",
    "io_backend",
    "recv_ring_buffers",
    "log_level",
    "metrics_addr",
    "ebpf",
    "ebpf_rtt_samples",
    "ebpf_pin_path",
];

/// PgBouncer 1.25.2 settings this pooler does not implement. They get a clearer refusal than
/// "unknown key", because operators migrating an ini file will meet them.
const PGBOUNCER_ONLY_KEYS: [&str; 49] = [
    "auth_dbname",
    "auth_hba_file",
    "auth_ident_file",
    "auth_ldap_options",
    "auth_query",
    "auth_user",
    "autodb_idle_timeout",
    "cancel_wait_timeout",
    "client_tls13_ciphers",
    "client_tls_ca_file",
    "client_tls_cert_file",
    "client_tls_ciphers",
    "client_tls_dheparams",
    "client_tls_ecdhcurve",
    "client_tls_key_file",
    "client_tls_protocols",
    "client_tls_sslmode",
    "conffile",
    "disable_pqexec",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
    "job_name",
    "log_stats",
    "logfile",
    "max_db_client_connections",
    "max_user_client_connections",
    "peer_id",
    "pidfile",
    "query_wait_notify",
    "resolv_conf",
    "sbuf_loopcnt",
    "scram_iterations",
    "server_fast_close",
    "server_round_robin",
    "server_tls13_ciphers",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_ciphers",
    "server_tls_key_file",
    "server_tls_protocols",
    "server_tls_sslmode",
    "syslog",
    "syslog_facility",
    "syslog_ident",
    "tcp_defer_accept",
    "tcp_socket_buffer",
    "transaction_timeout",
    "unix_socket_group",
    "user",
];

/// PgBouncer authentication methods we recognise but do not implement.
const UNSUPPORTED_AUTH_TYPES: [&str; 5] = ["hba", "cert", "any", "pam", "ldap"];

/// Parse and validate a whole document.
pub(super) fn parse_document(text: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
    let table = match text.parse::<Table>() {
        Ok(table) => table,
        Err(e) => return Err(ConfigErrors(vec![syntax_error(text, path, &e)])),
    };
    parse_table(table, path)
}

/// Validate a parsed document (also used by SET, which edits the table and re-validates).
pub(super) fn parse_table(table: Table, path: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut c = Collector::new(path);
    let base_dir = path.and_then(Path::parent);
    let mut config = Config {
        path: path.map(Path::to_path_buf),
        pooler: General::default(),
        databases: Default::default(),
        users: Default::default(),
        source: Table::new(),
    };
    for (section, value) in &table {
        match (section.as_str(), value) {
            ("pooler", Value::Table(t)) => parse_general(&mut c, t, base_dir, &mut config.pooler),
            ("databases", Value::Table(t)) => {
                config.databases = databases::parse_databases(&mut c, t)
            }
            ("users", Value::Table(t)) => config.users = databases::parse_users(&mut c, t),
            (name, v) if SECTIONS.contains(&name) => {
                c.error(
                    name,
                    format!("expected a [{name}] section, found {}", describe(v)),
                );
            }
            ("pgbouncer", _) => {
                c.error(
                    "pgbouncer",
                    "unknown section; PgBouncer's [pgbouncer] keys go in [pooler] here",
                );
                // The settings meant for [pooler] were not read: checks on them would mislead.
                c.suppress("pooler");
            }
            (name, v) if !v.is_table() && GENERAL_KEYS.contains(&name) => c.error(
                name,
                format!("key outside any section; did you mean `pooler.{name}` (under [pooler])?"),
            ),
            (name, _) => {
                let mut message = "unknown section".to_owned();
                if let Some(s) = did_you_mean(name, &SECTIONS) {
                    message.push_str(&format!("; did you mean `{s}`?"));
                }
                c.error(name, message);
            }
        }
    }
    validate::check(&mut c, &config);
    if c.errors.is_empty() {
        config.source = table;
        Ok(config)
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// A TOML syntax error as one message with line and column, without quoting the source line
/// (it may hold a password).
fn syntax_error(text: &str, path: Option<&Path>, e: &toml::de::Error) -> ConfigError {
    let detail = e.message().trim().replace('\n', "; ");
    let message = match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("TOML syntax error at line {line}, column {column}: {detail}")
        }
        None => format!("TOML syntax error: {detail}"),
    };
    ConfigError {
        file: path.map(Path::to_path_buf),
        key: String::new(),
        message,
    }
}

/// Walk `[pooler]`, overwriting the defaults in `g` with every value that is valid.
fn parse_general(c: &mut Collector, t: &Table, base_dir: Option<&Path>, g: &mut General) {
    // Each arm: extract, and only on success overwrite the default.
    macro_rules! set {
        ($field:expr, $value:expr) => {
            if let Some(x) = $value {
                $field = x;
            }
        };
    }
    for (name, v) in t {
        let key = format!("pooler.{name}");
        let key = key.as_str();
        match name.as_str() {
            "listen_addr" => set!(g.listen_addr, listen_addr(c, key, v)),
            "listen_port" => set!(g.listen_port, c.port(key, v)),
            "unix_socket_dir" => set!(
                g.unix_socket_dir,
                c.string(key, v)
                    .map(|s| (!s.is_empty()).then(|| PathBuf::from(s)))
            ),
            "unix_socket_mode" => set!(g.unix_socket_mode, socket_mode(c, key, v)),
            "listen_backlog" => set!(g.listen_backlog, c.count(key, v)),
            "so_reuseport" => set!(g.so_reuseport, c.boolean(key, v)),
            "pool_mode" => set!(g.pool_mode, c.choice(key, v, &PoolMode::ALL)),
            "max_client_conn" => set!(g.max_client_conn, c.u32_in(key, v, 1, u32::MAX)),
            "default_pool_size" => set!(g.default_pool_size, c.count(key, v)),
            "min_pool_size" => set!(g.min_pool_size, c.count(key, v)),
            "reserve_pool_size" => set!(g.reserve_pool_size, c.count(key, v)),
            "reserve_pool_timeout" => set!(g.reserve_pool_timeout, c.duration(key, v)),
            "max_db_connections" => set!(g.max_db_connections, c.count(key, v)),
            "max_user_connections" => set!(g.max_user_connections, c.count(key, v)),
            "auth_type" => set!(g.auth_type, auth_type(c, key, v)),
            "auth_file" => set!(g.auth_file, auth_file(c, key, v, base_dir)),
            "admin_users" => set!(g.admin_users, c.list(key, v)),
            "stats_users" => set!(g.stats_users, c.list(key, v)),
            "server_reset_query" => set!(g.server_reset_query, c.string(key, v)),
            "server_reset_query_always" => set!(g.server_reset_query_always, c.boolean(key, v)),
            "server_check_query" => set!(g.server_check_query, c.string(key, v)),
            "server_check_delay" => set!(g.server_check_delay, c.duration(key, v)),
            "server_idle_timeout" => set!(g.server_idle_timeout, c.duration(key, v)),
            "server_lifetime" => set!(g.server_lifetime, c.duration(key, v)),
            "server_connect_timeout" => set!(g.server_connect_timeout, c.duration(key, v)),
            "server_login_retry" => set!(g.server_login_retry, c.duration(key, v)),
            "server_login_concurrency" => set!(g.server_login_concurrency, c.count(key, v)),
            "suspend_timeout" => set!(g.suspend_timeout, c.duration(key, v)),
            "query_timeout" => set!(g.query_timeout, c.duration(key, v)),
            "query_wait_timeout" => set!(g.query_wait_timeout, c.duration(key, v)),
            "client_idle_timeout" => set!(g.client_idle_timeout, c.duration(key, v)),
            "client_login_timeout" => set!(g.client_login_timeout, c.duration(key, v)),
            "idle_transaction_timeout" => set!(g.idle_transaction_timeout, c.duration(key, v)),
            "dns_max_ttl" => set!(g.dns_max_ttl, c.duration(key, v)),
            "ignore_startup_parameters" => set!(
                g.ignore_startup_parameters,
                c.list(key, v).map(ignored_parameters)
            ),
            "track_extra_parameters" => set!(g.track_extra_parameters, c.list(key, v)),
            "log_connections" => set!(g.log_connections, c.boolean(key, v)),
            "log_disconnections" => set!(g.log_disconnections, c.boolean(key, v)),
            "log_pooler_errors" => set!(g.log_pooler_errors, c.boolean(key, v)),
            "max_packet_size" => set!(g.max_packet_size, c.u32_in(key, v, 1024, 2_147_483_647)),
            "max_prepared_statements" => {
                set!(g.max_prepared_statements, c.u32_in(key, v, 0, 1_000_000))
            }
            "max_client_prepared_statements" => {
                set!(
                    g.max_client_prepared_statements,
                    c.u32_in(key, v, 1, 10_000_000)
                )
            }
            "pkt_buf" => set!(g.pkt_buf, c.u32_in(key, v, 1024, u32::MAX)),
            "stats_period" => set!(g.stats_period, c.duration(key, v)),
            "tcp_keepalive" => set!(g.tcp_keepalive, c.boolean(key, v)),
            "tcp_keepcnt" => set!(g.tcp_keepcnt, c.count(key, v)),
            "tcp_keepidle" => set!(g.tcp_keepidle, c.duration(key, v)),
            "tcp_keepintvl" => set!(g.tcp_keepintvl, c.duration(key, v)),
            "tcp_user_timeout" => set!(g.tcp_user_timeout, c.duration(key, v)),
            "application_name_add_host" => set!(g.application_name_add_host, c.boolean(key, v)),
            "workers" => set!(g.workers, c.u32_in(key, v, 0, 1024)),
            "io_backend" => set!(g.io_backend, c.choice(key, v, &IoBackend::ALL)),
            "recv_ring_buffers" => set!(g.recv_ring_buffers, c.u32_in(key, v, 0, 32768)),
            "log_level" => set!(
                g.log_level,
                c.string(key, v)
                    .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
            ),
            "metrics_addr" => set!(g.metrics_addr, metrics_addr(c, key, v)),
            "ebpf" => set!(g.ebpf, c.choice(key, v, &EbpfMode::ALL)),
            "ebpf_rtt_samples" => set!(g.ebpf_rtt_samples, c.boolean(key, v)),
            "ebpf_pin_path" => set!(
                g.ebpf_pin_path,
                c.string(key, v)
                    .map(|s| (!s.is_empty()).then(|| PathBuf::from(s)))
            ),
            other if PGBOUNCER_ONLY_KEYS.contains(&other) => c.error(
                key,
                "PgBouncer setting not supported by this pooler; remove it",
            ),
            other => c.unknown_key(key, other, &GENERAL_KEYS),
        }
    }
}

/// `metrics_addr`: "" (off) or `host:port`, the host an IP address ("[::1]" for IPv6) or a
/// host name; checked here so a typo fails `--check` rather than the start.
fn metrics_addr(c: &mut Collector, key: &str, v: &Value) -> Option<String> {
    let s = c.string(key, v)?.trim().to_owned();
    if s.is_empty() || s.parse::<std::net::SocketAddr>().is_ok() {
        return Some(s);
    }
    let valid = s.rsplit_once(':').is_some_and(|(host, port)| {
        is_host_name(host) && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if !valid {
        c.error(
            key,
            format!("expected \"\" (off) or \"host:port\" such as \"127.0.0.1:9127\", found {s:?}"),
        );
        return None;
    }
    Some(s)
}

/// `listen_addr`: "*", addresses or host names, as a comma-separated string or an array.
fn listen_addr(c: &mut Collector, key: &str, v: &Value) -> Option<Vec<String>> {
    let addrs = c.list(key, v)?;
    let mut ok = true;
    for addr in &addrs {
        if addr != "*" && addr.parse::<IpAddr>().is_err() && !is_host_name(addr) {
            c.error(
                key,
                format!("expected \"*\", an IP address or a host name, found {addr:?}"),
            );
            ok = false;
        }
    }
    ok.then_some(addrs)
}

/// Letters, digits, '-' and '.', in non-empty dot-separated labels.
fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        })
}

/// `unix_socket_mode`: an integer (TOML's `0o777` works) or an octal string like "0777".
fn socket_mode(c: &mut Collector, key: &str, v: &Value) -> Option<u32> {
    const EXPECTED: &str = "expected a permission mode up to 0o777, as an octal string like \"0777\" or a TOML integer like 0o777";
    let mode = match v {
        Value::Integer(n) => {
            let looks_octal = n.to_string().chars().all(|ch| ('0'..='7').contains(&ch));
            if *n > 0o777 && looks_octal {
                // 777 or 660 written as decimal integers would silently mean odd modes.
                c.error(
                    key,
                    format!("{n} is a decimal integer; write the mode as \"0{n}\" or 0o{n}"),
                );
                return None;
            }
            u32::try_from(*n).ok()
        }
        Value::String(s) => {
            let digits = s.trim().trim_start_matches("0o");
            u32::from_str_radix(digits, 8).ok()
        }
        _ => None,
    };
    let mode = mode.filter(|m| *m <= 0o777);
    if mode.is_none() {
        c.error(key, format!("{EXPECTED}, found {}", describe(v)));
    }
    mode
}

/// `auth_type`, telling PgBouncer's other methods apart from plain mistakes.
fn auth_type(c: &mut Collector, key: &str, v: &Value) -> Option<AuthType> {
    if let Some(s) = v.as_str()
        && UNSUPPORTED_AUTH_TYPES.contains(&s)
    {
        c.error(
            key,
            format!(
                "auth_type {s:?} is not supported (supported: trust, plain, md5, scram-sha-256)"
            ),
        );
        return None;
    }
    c.choice(key, v, &AuthType::ALL)
}

/// `auth_file`, relative to the config file's directory when relative; "" means none.
fn auth_file(
    c: &mut Collector,
    key: &str,
    v: &Value,
    base_dir: Option<&Path>,
) -> Option<Option<PathBuf>> {
    let s = c.string(key, v)?;
    if s.is_empty() {
        return Some(None);
    }
    let p = PathBuf::from(s);
    Some(Some(match base_dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }))
}

/// The operator's list plus extra_float_digits (first), without case-insensitive duplicates:
/// PostgreSQL parameter names are case-insensitive.
fn ignored_parameters(listed: Vec<String>) -> Vec<String> {
    let mut out = vec![ALWAYS_IGNORED_STARTUP_PARAMETER.to_owned()];
    for p in listed {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&p)) {
            out.push(p);
        }
    }
    out
}
