//! One test per `[pooler]` value rule and per global cross-key rule.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::{AuthType, Config, IoBackend, PoolMode};
use super::{assert_error, errors, one_error, parse, pooler};

#[test]
fn durations_accept_integers_and_floats() {
    let g = parse(&pooler(
        "reserve_pool_timeout = 0.5\nserver_lifetime = 7200\nquery_timeout = 0",
    ))
    .pooler;
    assert_eq!(g.reserve_pool_timeout, Duration::from_millis(500));
    assert_eq!(g.server_lifetime, Duration::from_secs(7200));
    assert_eq!(g.query_timeout, Duration::ZERO);
}

#[test]
fn durations_refuse_negative_non_finite_and_strings() {
    for bad in ["-1", "-0.5", "nan", "inf", "\"5\"", "1e300"] {
        assert_error(
            &pooler(&format!("query_wait_timeout = {bad}")),
            "pooler.query_wait_timeout",
            "expected a non-negative number of seconds",
        );
    }
}

#[test]
fn booleans_accept_true_false_and_zero_one() {
    let g = parse(&pooler(
        "so_reuseport = true\nlog_connections = 0\ntcp_keepalive = 1",
    ))
    .pooler;
    assert!(g.so_reuseport);
    assert!(!g.log_connections);
    assert!(g.tcp_keepalive);
    for bad in ["2", "\"yes\"", "-1"] {
        assert_error(
            &pooler(&format!("so_reuseport = {bad}")),
            "pooler.so_reuseport",
            "expected true or false",
        );
    }
}

#[test]
fn listen_addr_forms() {
    let addr = |v: &str| {
        parse(&pooler(&format!("listen_addr = {v}")))
            .pooler
            .listen_addr
    };
    assert_eq!(addr("\"*\""), ["*"]);
    assert_eq!(addr("\" 127.0.0.1 , ::1 \""), ["127.0.0.1", "::1"]);
    assert_eq!(
        addr("[\"127.0.0.1\", \"db.example.com\"]"),
        ["127.0.0.1", "db.example.com"]
    );
    assert!(addr("\"\"").is_empty());
    assert_error(
        &pooler("listen_addr = \"127.0.0.1 6432\""),
        "pooler.listen_addr",
        "IP address",
    );
    assert_error(
        &pooler("listen_addr = [\"*\", 5]"),
        "pooler.listen_addr",
        "element 1",
    );
    assert_error(
        &pooler("listen_addr = 5"),
        "pooler.listen_addr",
        "comma-separated",
    );
}

#[test]
fn user_lists_accept_strings_and_arrays() {
    let g = parse(&pooler(
        "admin_users = \"postgres, admin,,postgres\"\nstats_users = [\"mon\", \"ops\"]",
    ))
    .pooler;
    assert_eq!(g.admin_users, ["postgres", "admin"]);
    assert_eq!(g.stats_users, ["mon", "ops"]);
    assert_error(
        &pooler("stats_users = true"),
        "pooler.stats_users",
        "found true",
    );
}

#[test]
fn ignore_startup_parameters_always_holds_extra_float_digits() {
    let g = parse(&pooler(
        "ignore_startup_parameters = \"search_path, EXTRA_FLOAT_DIGITS,options\"",
    ))
    .pooler;
    assert_eq!(
        g.ignore_startup_parameters,
        ["extra_float_digits", "search_path", "options"]
    );
    let g = parse(&pooler("ignore_startup_parameters = []")).pooler;
    assert_eq!(g.ignore_startup_parameters, ["extra_float_digits"]);
}

#[test]
fn track_extra_parameters_replaces_the_default() {
    let g = parse(&pooler(
        "track_extra_parameters = [\"IntervalStyle\", \"search_path\"]",
    ))
    .pooler;
    assert_eq!(g.track_extra_parameters, ["IntervalStyle", "search_path"]);
}

#[test]
fn unix_socket_dir_empty_disables_it() {
    let g = parse(&pooler("unix_socket_dir = \"\"\nlisten_addr = \"*\"")).pooler;
    assert_eq!(g.unix_socket_dir, None);
    let g = parse(&pooler("unix_socket_dir = \"/run/pooler\"")).pooler;
    assert_eq!(g.unix_socket_dir, Some(PathBuf::from("/run/pooler")));
}

#[test]
fn no_listener_at_all_is_refused() {
    assert_error(
        &pooler("unix_socket_dir = \"\""),
        "pooler.listen_addr",
        "nothing to accept",
    );
}

#[test]
fn unix_socket_mode_forms() {
    let mode = |v: &str| {
        parse(&pooler(&format!("unix_socket_mode = {v}")))
            .pooler
            .unix_socket_mode
    };
    assert_eq!(mode("\"0777\""), 0o777);
    assert_eq!(mode("\"0660\""), 0o660);
    assert_eq!(mode("\"700\""), 0o700);
    assert_eq!(mode("0o755"), 0o755);
    assert_eq!(mode("511"), 0o777);
    // 777 as a decimal integer is a mistake for 0o777, not mode 0o1411.
    assert_error(
        &pooler("unix_socket_mode = 777"),
        "pooler.unix_socket_mode",
        "\"0777\"",
    );
    for bad in ["\"0999\"", "\"01777\"", "-1", "\"rw\"", "4096"] {
        assert_error(
            &pooler(&format!("unix_socket_mode = {bad}")),
            "pooler.unix_socket_mode",
            "expected a permission mode",
        );
    }
}

#[test]
fn auth_file_is_relative_to_the_config_file() {
    let text = "[pooler]\nauth_file = \"userlist.txt\"";
    let c = Config::parse_str(text, Some(Path::new("/etc/pooler/pooler.toml"))).unwrap();
    assert_eq!(
        c.pooler.auth_file,
        Some(PathBuf::from("/etc/pooler/userlist.txt"))
    );
    assert_eq!(c.path, Some(PathBuf::from("/etc/pooler/pooler.toml")));
    let text = "[pooler]\nauth_file = \"/srv/users.txt\"";
    let c = Config::parse_str(text, Some(Path::new("/etc/pooler/pooler.toml"))).unwrap();
    assert_eq!(c.pooler.auth_file, Some(PathBuf::from("/srv/users.txt")));
    // Without a file, a relative path is left relative (to the working directory).
    let c = parse("[pooler]\nauth_file = \"userlist.txt\"");
    assert_eq!(c.pooler.auth_file, Some(PathBuf::from("userlist.txt")));
}

#[test]
fn ports_are_1_to_65535() {
    assert_eq!(parse(&pooler("listen_port = 1")).pooler.listen_port, 1);
    assert_eq!(
        parse(&pooler("listen_port = 65535")).pooler.listen_port,
        65535
    );
    for bad in ["0", "65536", "-1"] {
        assert_error(
            &pooler(&format!("listen_port = {bad}")),
            "pooler.listen_port",
            "expected an integer between 1 and 65535",
        );
    }
    let e = one_error(&pooler("listen_port = \"abc\""));
    assert_eq!(
        e.message,
        "expected an integer between 1 and 65535, found \"abc\""
    );
}

#[test]
fn counts_refuse_negative_and_non_integers() {
    for key in [
        "default_pool_size",
        "reserve_pool_size",
        "max_db_connections",
        "tcp_keepcnt",
    ] {
        assert_error(
            &pooler(&format!("{key} = -1")),
            &format!("pooler.{key}"),
            "non-negative integer, found -1",
        );
        assert_error(
            &pooler(&format!("{key} = 2.5")),
            &format!("pooler.{key}"),
            "found 2.5",
        );
    }
    assert_error(
        &pooler("default_pool_size = 4294967296"),
        "pooler.default_pool_size",
        "non-negative",
    );
}

#[test]
fn max_client_conn_is_at_least_1() {
    assert_error(
        &pooler("max_client_conn = 0"),
        "pooler.max_client_conn",
        "at least 1",
    );
    assert_eq!(
        parse(&pooler("max_client_conn = 1")).pooler.max_client_conn,
        1
    );
}

#[test]
fn workers_is_0_to_1024() {
    assert_eq!(parse(&pooler("workers = 1024")).pooler.workers, 1024);
    assert_error(
        &pooler("workers = 1025"),
        "pooler.workers",
        "between 0 and 1024",
    );
}

#[test]
fn max_packet_size_bounds() {
    assert_eq!(
        parse(&pooler("max_packet_size = 1024"))
            .pooler
            .max_packet_size,
        1024
    );
    assert_error(
        &pooler("max_packet_size = 1023"),
        "pooler.max_packet_size",
        "between 1024 and 2147483647",
    );
    assert_error(
        &pooler("max_packet_size = 2147483648"),
        "pooler.max_packet_size",
        "between 1024",
    );
}

#[test]
fn pkt_buf_is_at_least_1024() {
    assert_eq!(parse(&pooler("pkt_buf = 8192")).pooler.pkt_buf, 8192);
    assert_error(&pooler("pkt_buf = 1023"), "pooler.pkt_buf", "at least 1024");
}

#[test]
fn auth_type_values() {
    for (text, expected) in AuthType::ALL {
        let c = parse(&format!(
            "[pooler]\nauth_type = \"{text}\"\nauth_file = \"u.txt\""
        ));
        assert_eq!(c.pooler.auth_type, expected);
    }
    for unsupported in ["hba", "cert", "any", "pam", "ldap"] {
        assert_error(
            &format!("[pooler]\nauth_type = \"{unsupported}\""),
            "pooler.auth_type",
            "not supported",
        );
    }
    assert_error(
        &pooler("auth_type = \"scram\"").replacen("auth_type = \"trust\"\n", "", 1),
        "pooler.auth_type",
        "expected one of",
    );
    assert_error(
        "[pooler]\nauth_type = \"MD5\"",
        "pooler.auth_type",
        "did you mean `md5`?",
    );
}

#[test]
fn password_auth_types_require_auth_file() {
    for auth in ["plain", "md5", "scram-sha-256"] {
        assert_error(
            &format!("[pooler]\nauth_type = \"{auth}\""),
            "pooler.auth_file",
            "auth_file must name",
        );
    }
    // The default auth_type is md5, so an empty file needs one too.
    assert_error("", "pooler.auth_file", "md5");
    assert_error("[pooler]\nauth_file = \"\"", "pooler.auth_file", "md5");
}

#[test]
fn global_min_pool_size_fits_default_pool_size() {
    assert_error(
        &pooler("min_pool_size = 30\ndefault_pool_size = 20"),
        "pooler.min_pool_size",
        "larger than default_pool_size",
    );
    assert_eq!(
        parse(&pooler("min_pool_size = 20")).pooler.min_pool_size,
        20
    );
}

#[test]
fn pool_mode_values() {
    for (text, expected) in PoolMode::ALL {
        assert_eq!(
            parse(&pooler(&format!("pool_mode = \"{text}\"")))
                .pooler
                .pool_mode,
            expected
        );
    }
    assert_error(
        &pooler("pool_mode = \"transactoin\""),
        "pooler.pool_mode",
        "did you mean `transaction`?",
    );
}

#[test]
fn io_backend_and_log_level() {
    let g = parse(&pooler(
        "io_backend = \"io_uring\"\nlog_level = \" info,pooler=debug \"",
    ))
    .pooler;
    assert_eq!(g.io_backend, IoBackend::IoUring);
    assert_eq!(g.log_level.as_deref(), Some("info,pooler=debug"));
    assert_eq!(
        parse(&pooler("io_backend = \"epoll\"")).pooler.io_backend,
        IoBackend::Epoll
    );
    assert_eq!(parse(&pooler("log_level = \"\"")).pooler.log_level, None);
    assert_error(
        &pooler("io_backend = \"uring\""),
        "pooler.io_backend",
        "expected one of auto, io_uring, epoll",
    );
    assert_error(
        &pooler("log_level = 3"),
        "pooler.log_level",
        "expected a string",
    );
}

#[test]
fn strings_are_kept_as_written() {
    let g = parse(&pooler(
        "server_reset_query = \"RESET ALL\"\nserver_check_query = \"SELECT 1\"",
    ))
    .pooler;
    assert_eq!(g.server_reset_query, "RESET ALL");
    assert_eq!(g.server_check_query, "SELECT 1");
}

#[test]
fn unknown_keys_and_sections_are_refused() {
    assert_error(&pooler("banana = 1"), "pooler.banana", "unknown key");
    assert!(
        !one_error(&pooler("banana = 1"))
            .message
            .contains("did you mean")
    );
    assert_error(
        &pooler("logfile = \"/var/log/x\""),
        "pooler.logfile",
        "PgBouncer setting not supported",
    );
    // Only that error: not also "md5 requires auth_file" from the [pooler] that was not read.
    assert_error(
        &pooler("").replace("[pooler]", "[pgbouncer]"),
        "pgbouncer",
        "go in [pooler]",
    );
    assert_error(
        &format!("{}[extra]\na = 1", pooler("")),
        "extra",
        "unknown section",
    );
    assert_error(
        &format!("{}[databses]", pooler("")),
        "databses",
        "did you mean `databases`?",
    );
    assert_error(
        &format!("listen_port = 1\n{}", pooler("")),
        "listen_port",
        "`pooler.listen_port`",
    );
    assert_error("pooler = 5", "pooler", "expected a [pooler] section");
}

#[test]
fn did_you_mean_suggests_the_nearest_key() {
    let e = one_error(&pooler("default_pool_sise = 5"));
    assert_eq!(e.key, "pooler.default_pool_size".replace("size", "sise"));
    assert_eq!(e.message, "unknown key; did you mean `default_pool_size`?");
    // A swap of two letters counts as one slip.
    assert_error(
        &pooler("lisetn_port = 5"),
        "pooler.lisetn_port",
        "did you mean `listen_port`?",
    );
    assert_error(
        &pooler("Listen_Port = 5"),
        "pooler.Listen_Port",
        "did you mean `listen_port`?",
    );
}

#[test]
fn a_refused_value_does_not_cause_a_second_error() {
    // The bad auth_type must not also trigger "md5 requires auth_file".
    assert_eq!(errors("[pooler]\nauth_type = \"hba\"").len(), 1);
    assert_eq!(
        errors(&pooler("min_pool_size = 30\ndefault_pool_size = -1")).len(),
        1
    );
}

#[test]
fn did_you_mean_finds_longer_slips_and_prefixes() {
    assert_error(
        &pooler("auth_type = \"scram\"").replacen("auth_type = \"trust\"\n", "", 1),
        "pooler.auth_type",
        "did you mean `scram-sha-256`?",
    );
    assert_error(
        &pooler("reserve_pool_timout = 1"),
        "pooler.reserve_pool_timout",
        "did you mean `reserve_pool_timeout`?",
    );
}

#[test]
fn every_listed_key_is_handled() {
    // A key in GENERAL_KEYS that the walker forgot would be refused as unknown.
    for key in super::super::general::GENERAL_KEYS {
        for value in ["1", "\"x\""] {
            if let Err(all) = Config::parse_str(&pooler(&format!("{key} = {value}")), None) {
                assert!(
                    all.0.iter().all(|e| !e.message.contains("unknown key")),
                    "{key} is listed but not handled: {all}"
                );
            }
        }
    }
}
