//! Unit tests of the config module: one test per rule, defaults, forms, messages, example files.

mod databases;
mod defaults;
mod files;
mod general;
mod set;

use super::{Config, ConfigError};

/// `[pooler]` with trust auth (so no auth_file is needed) plus `lines`.
fn pooler(lines: &str) -> String {
    format!("[pooler]\nauth_type = \"trust\"\n{lines}\n")
}

/// Parse, failing the test with every error when the text is refused.
fn parse(text: &str) -> Config {
    match Config::parse_str(text, None) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}\n--- in:\n{text}"),
    }
}

/// All errors of a text that must be refused.
fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse_str(text, None) {
        Ok(_) => panic!("accepted, but should have been refused:\n{text}"),
        Err(errors) => errors.0,
    }
}

/// The single error of a text with exactly one problem.
fn one_error(text: &str) -> ConfigError {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected exactly one error, got {all:#?}");
    all.remove(0)
}

/// Assert the text yields exactly one error, for `key`, whose message contains `needle`.
fn assert_error(text: &str, key: &str, needle: &str) {
    let e = one_error(text);
    assert_eq!(e.key, key, "wrong key in {e:?}");
    assert!(
        e.message.contains(needle),
        "message {:?} does not contain {needle:?}",
        e.message
    );
}
