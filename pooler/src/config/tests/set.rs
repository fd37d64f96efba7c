//! `Config::with_setting` (the admin console's SET): one key changed, everything validated.

use std::time::Duration;

use super::super::{Config, PoolMode, is_pooler_key};

const BASE: &str = r#"
[pooler]
listen_addr = "127.0.0.1"
auth_type = "trust"
default_pool_size = 20

[databases]
app = { host = "127.0.0.1", port = 5432 }
"#;

fn base() -> Config {
    Config::parse_str(BASE, None).expect("base config")
}

#[test]
fn typed_values_and_bare_words() {
    let c = base().with_setting("default_pool_size", "30").unwrap();
    assert_eq!(c.pooler.default_pool_size, 30);
    let c = c.with_setting("pool_mode", "transaction").unwrap();
    assert_eq!(c.pooler.pool_mode, PoolMode::Transaction);
    let c = c
        .with_setting("server_reset_query", "'DISCARD ALL; SELECT 1'")
        .unwrap();
    assert_eq!(c.pooler.server_reset_query, "DISCARD ALL; SELECT 1");
    let c = c.with_setting("query_timeout", "2.5").unwrap();
    assert_eq!(c.pooler.query_timeout, Duration::from_millis(2500));
    let c = c.with_setting("log_connections", "0").unwrap();
    assert!(!c.pooler.log_connections);
    // Everything else kept.
    assert_eq!(c.pooler.default_pool_size, 30);
    assert!(c.databases.contains_key("app"));
}

#[test]
fn bad_values_are_refused_with_the_key() {
    let e = base().with_setting("default_pool_size", "-3").unwrap_err();
    assert!(e.to_string().contains("pooler.default_pool_size"), "{e}");
    let e = base().with_setting("pool_mode", "sometimes").unwrap_err();
    assert!(e.to_string().contains("pooler.pool_mode"), "{e}");
    // Cross-key rules still apply: md5 needs an auth_file.
    let e = base().with_setting("auth_type", "md5").unwrap_err();
    assert!(e.to_string().contains("auth_file"), "{e}");
}

#[test]
fn pooler_keys_are_known() {
    assert!(is_pooler_key("default_pool_size"));
    assert!(is_pooler_key("io_backend"));
    assert!(!is_pooler_key("extra_float_digits"));
    assert!(!is_pooler_key("application_name"));
}
