//! Whole files: every error collected, messages, syntax errors, and the example configs.

use std::path::{Path, PathBuf};

use super::super::{AuthType, Config, ConfigError, ConfigErrors, PoolMode};
use super::{errors, one_error, pooler};

#[test]
fn every_problem_of_a_file_is_reported() {
    let text = r#"
[pooler]
auth_type = "trust"
listen_port = 0
default_pool_sise = 10

[databases]
app = { host = "h", pool_mode = "banana" }
"#;
    let all = errors(text);
    let mut keys: Vec<&str> = all.iter().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "databases.app.pool_mode",
            "pooler.default_pool_sise",
            "pooler.listen_port"
        ]
    );
}

#[test]
fn error_display_has_file_key_and_message() {
    let e = ConfigError {
        file: Some(PathBuf::from("config/lab.toml")),
        key: "pooler.listen_port".into(),
        message: "expected an integer between 1 and 65535, found \"abc\"".into(),
    };
    assert_eq!(
        e.to_string(),
        "config/lab.toml: pooler.listen_port: expected an integer between 1 and 65535, found \"abc\""
    );
    let no_file = ConfigError {
        file: None,
        ..e.clone()
    };
    assert_eq!(
        no_file.to_string(),
        "pooler.listen_port: expected an integer between 1 and 65535, found \"abc\""
    );
    let all = ConfigErrors(vec![e, no_file]);
    assert_eq!(all.to_string().lines().count(), 2);
    let boxed: Box<dyn std::error::Error> = Box::new(all);
    assert!(boxed.to_string().starts_with("config/lab.toml: "));
}

#[test]
fn errors_carry_the_file_name() {
    let path = Path::new("/etc/pooler/pooler.toml");
    let Err(all) = Config::parse_str(
        "[pooler]\nlisten_port = 0\nauth_type = \"trust\"",
        Some(path),
    ) else {
        panic!("accepted a bad port");
    };
    assert_eq!(all.0.len(), 1);
    assert_eq!(all.0[0].file.as_deref(), Some(path));
    assert!(
        all.to_string()
            .starts_with("/etc/pooler/pooler.toml: pooler.listen_port: ")
    );
}

#[test]
fn a_syntax_error_is_one_error_with_line_and_column() {
    let e = one_error("[pooler]\nauth_type = \"trust\"\nlisten_port = = 5\n");
    assert_eq!(e.key, "");
    assert!(e.message.contains("line 3, column"), "{}", e.message);
    assert!(!e.message.contains('\n'));
    let e = one_error("[pooler]\nlisten_port = 1\nlisten_port = 2\n");
    assert!(e.message.contains("line 3"), "{}", e.message);
}

#[test]
fn a_syntax_error_does_not_quote_the_line() {
    let e = one_error("[databases]\napp = { password = hunter2secret }\n");
    assert!(!e.to_string().contains("hunter2secret"), "{e}");
}

#[test]
fn a_missing_file_is_one_error() {
    let path = Path::new("/nonexistent/pooler.toml");
    let Err(all) = Config::load(path) else {
        panic!("loaded a missing file");
    };
    assert_eq!(all.0.len(), 1);
    assert_eq!(all.0[0].file.as_deref(), Some(path));
    assert!(all.0[0].message.contains("cannot read"));
}

#[test]
fn arbitrary_truncations_never_panic() {
    // Cutting a real file anywhere yields all sorts of syntax and value errors.
    let text = format!(
        "{}[databases]\napp = \"host=h port=5432 password='a\\\\'b' pool_size=3\"\nb = {{ port = 70000 }}\n\
         [users]\nu = {{ pool_mode = \"x\" }}\n",
        pooler(
            "listen_addr = [\"*\", \"::1\"]\nunix_socket_mode = \"0777\"\nreserve_pool_timeout = 0.5"
        )
    );
    for (i, _) in text.char_indices() {
        let _ = Config::parse_str(&text[..i], None);
    }
}

/// The directory of the example configs, found by walking up from the crate.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("config"))
        .find(|dir| dir.join("lab.toml").is_file())
        .expect("config/lab.toml not found above the crate directory")
}

#[test]
fn every_example_config_parses() {
    let dir = config_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut seen = Vec::new();
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(errors) = Config::load(&path) {
                panic!("{} does not parse:\n{errors}", path.display());
            }
            seen.push(path);
        }
    }
    assert!(
        seen.len() >= 3,
        "expected pooler.toml, lab.toml and prod.toml in {}",
        dir.display()
    );
}

#[test]
fn lab_config_is_the_reference_deployment() {
    let c = Config::load(&config_dir().join("lab.toml")).unwrap_or_else(|e| panic!("{e}"));
    let g = &c.pooler;
    assert_eq!(g.listen_addr, ["*"]);
    assert_eq!(g.listen_port, 6432);
    assert_eq!(g.max_client_conn, 1000);
    assert_eq!(g.default_pool_size, 50);
    assert_eq!(g.reserve_pool_size, 10);
    assert_eq!(g.pool_mode, PoolMode::Transaction);
    assert_eq!(g.auth_type, AuthType::Trust);
    assert_eq!(g.admin_users, ["postgres"]);
    let (key, primary) = c.database("anything").expect("a fallback entry");
    assert_eq!(
        (key, primary.host.as_str(), primary.port),
        ("*", "127.0.0.1", 5432)
    );
}

#[test]
fn prod_config_uses_scram_with_an_absolute_auth_file() {
    let c = Config::load(&config_dir().join("prod.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.pooler.auth_type, AuthType::ScramSha256);
    assert_eq!(
        c.pooler.auth_file.as_deref(),
        Some(Path::new("/etc/pooler/userlist.txt"))
    );
    assert_eq!(c.pooler.pool_mode, PoolMode::Transaction);
    assert!(
        c.database("no-such-db").is_none(),
        "prod lists its databases explicitly"
    );
}

#[test]
fn pooler_toml_mentions_every_key() {
    let text = std::fs::read_to_string(config_dir().join("pooler.toml")).expect("pooler.toml");
    for key in super::super::general::GENERAL_KEYS {
        assert!(
            text.contains(&format!("# {key} = ")) || text.contains(&format!("\n{key} = ")),
            "pooler.toml does not document {key}"
        );
    }
}
