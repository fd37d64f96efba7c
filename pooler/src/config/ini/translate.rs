//! The translation of a read ini file into TOML, with the parser as the judge of every key.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use toml::Value;

use super::super::ConfigError;
use super::super::general::{GENERAL_KEYS, parse_document};
use super::{Entry, IGNORED_EXTRA_KEYS, Origin, last_of_each, unquote};

/// The TOML being built, in the ini's order, with where each item came from.
#[derive(Default)]
pub(super) struct Translation {
    pooler: Vec<(String, Value)>,
    databases: Vec<(String, Vec<(String, Value)>)>,
    users: Vec<(String, Vec<(String, Value)>)>,
    /// With the reading position of their line.
    pub(super) warnings: Vec<(usize, String)>,
    /// Connection strings that do not parse.
    pub(super) errors: Vec<ConfigError>,
    /// Dotted TOML key ("pooler.listen_port", "databases.app") -> its ini line.
    origins: BTreeMap<String, Origin>,
}

impl Translation {
    pub(super) fn warn(&mut self, origin: &Origin, key: &str, reason: &str) {
        let message = format!("{}: {key}: not supported ({reason})", origin.label());
        self.warnings.push((origin.seq, message));
    }

    /// The warnings in the order of their lines.
    pub(super) fn sorted_warnings(&mut self) -> Vec<String> {
        self.warnings.sort_by_key(|(seq, _)| *seq);
        self.warnings.drain(..).map(|(_, w)| w).collect()
    }

    /// A `[pgbouncer]` key: typed as the parser wants it, or a warning when not supported.
    pub(super) fn general(&mut self, entry: Entry) {
        let key = entry.key.as_str();
        let value = if GENERAL_KEYS.contains(&key) {
            accepted_value(&candidates(&entry.value, true), |v| general_probe(key, v))
        } else {
            let value = Value::String(entry.value.clone());
            if IGNORED_EXTRA_KEYS.contains(&key) || unsupported(general_probe(key, &value)) {
                return self.warn(&entry.origin, key, unsupported_reason(key));
            }
            value // unknown to PgBouncer too: the parser refuses it, with a suggestion
        };
        self.origins.insert(format!("pooler.{key}"), entry.origin);
        self.pooler.push((entry.key, value));
    }

    /// A `[databases]` or `[users]` entry: its connection string as a typed table, without the
    /// fields the parser refuses as not supported (each one a warning).
    pub(super) fn entry(&mut self, section: &'static str, entry: Entry) {
        let prefix = format!("{section}.{}", entry.key);
        let pairs = match pgbouncer_pairs(&entry.value) {
            Ok(pairs) => pairs,
            Err(message) => return self.errors.push(entry.origin.error(&prefix, message)),
        };
        let fields: Vec<Entry> = pairs
            .into_iter()
            .map(|(key, value)| Entry {
                section: entry.section,
                key,
                value,
                origin: entry.origin.clone(),
            })
            .collect();
        let mut table = Vec::new();
        for field in last_of_each(fields, &mut self.warnings, |f| {
            format!("{prefix}.{}", f.key)
        }) {
            let probe = |v: &Value| field_probe(section, &field.key, v);
            let value = accepted_value(&candidates(&field.value, false), probe);
            if unsupported(probe(&value)) {
                let key = format!("{prefix}.{}", field.key);
                self.warn(&entry.origin, &key, unsupported_reason(&field.key));
            } else {
                table.push((field.key, value));
            }
        }
        self.origins.insert(prefix, entry.origin);
        match section {
            "databases" => self.databases.push((entry.key, table)),
            _ => self.users.push((entry.key, table)),
        }
    }

    /// An error of the TOML parse, pointed at the ini line of its key, in ini spelling.
    pub(super) fn relocate(&self, path: &Path, mut e: ConfigError) -> ConfigError {
        // The longest matching key: database names may contain dots.
        let origin = self
            .origins
            .iter()
            .filter(|(k, _)| {
                let rest = e.key.strip_prefix(k.as_str());
                rest.is_some_and(|r| r.is_empty() || r.starts_with('.'))
            })
            .max_by_key(|(k, _)| k.len());
        e.file = Some(origin.map_or_else(|| path.to_path_buf(), |(_, o)| o.label().into()));
        if let Some(key) = e.key.strip_prefix("pooler.") {
            e.key = key.to_owned();
        }
        e
    }

    /// The TOML document: `[pooler]`, `[databases]` with inline tables, `[users]` if any.
    pub(super) fn render(&self, path: &Path) -> String {
        let name = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        let name = name.replace(char::is_control, "?");
        let mut out = format!("# Converted from {name} by `pooler import-pgbouncer`.\n");
        out.push_str("\n[pooler]\n");
        for (key, value) in &self.pooler {
            out.push_str(&format!("{} = {value}\n", toml_key(key)));
        }
        for (section, entries) in [("databases", &self.databases), ("users", &self.users)] {
            if section == "users" && entries.is_empty() {
                continue;
            }
            out.push_str(&format!("\n[{section}]\n"));
            for (name, fields) in entries {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{} = {v}", toml_key(k)))
                    .collect();
                let table = match fields.is_empty() {
                    true => "{}".to_owned(),
                    false => format!("{{ {} }}", fields.join(", ")),
                };
                out.push_str(&format!("{} = {table}\n", toml_key(name)));
            }
        }
        out
    }
}

/// A TOML key: bare when it can be, else a quoted string.
fn toml_key(key: &str) -> String {
    let bare_char = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-';
    match !key.is_empty() && key.chars().all(bare_char) {
        true => key.to_owned(),
        false => Value::String(key.to_owned()).to_string(),
    }
}

/// The first candidate the parser accepts; when none is, the most specific one (whose error
/// quotes the value best). Accepted whole-second floats (durations) read better as integers.
fn accepted_value(candidates: &[Value], probe: impl Fn(&Value) -> Vec<ConfigError>) -> Value {
    match candidates.iter().find(|v| probe(v).is_empty()) {
        Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Integer(*f as i64),
        Some(v) => v.clone(),
        None => candidates
            .first()
            .cloned()
            .unwrap_or(Value::String(String::new())),
    }
}

/// Typings of an ini value, most specific first, the string last. With `c_style`, integers
/// follow C's `strtol(.., 0)` as PgBouncer's `[pgbouncer]` keys do (`0777` is octal), while its
/// durations follow `strtod` (decimal): where the two differ, the string (an octal mode reads
/// best as written), the decimal and the C reading are tried in turn.
fn candidates(raw: &str, c_style: bool) -> Vec<Value> {
    let string = Value::String(raw.to_owned());
    let decimal = decimal_float(raw);
    let integer = match c_style {
        true => c_integer(raw),
        false => raw.parse::<i64>().ok(),
    };
    match integer {
        Some(n) if decimal == Some(n as f64) => {
            let boolean = (n == 0 || n == 1).then_some(Value::Boolean(n == 1));
            boolean
                .into_iter()
                .chain([Value::Integer(n), string])
                .collect()
        }
        Some(n) => [
            Some(string),
            decimal.map(Value::Float),
            Some(Value::Integer(n)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        None => decimal
            .map(Value::Float)
            .into_iter()
            .chain([string])
            .collect(),
    }
}

/// C's `strtol(s, .., 0)` over the whole string: a sign, then `0x` hex, `0` octal or decimal.
fn c_integer(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let hex = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"));
    let (radix, digits) = match (hex, digits.strip_prefix('0')) {
        (Some(hex), _) => (16, hex),
        (None, Some(octal)) if !octal.is_empty() => (8, octal),
        _ => (10, digits),
    };
    if digits.is_empty() || !digits.chars().all(|ch| ch.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -n } else { n })
}

/// A finite decimal number (`5`, `0.5`, `1e3`); not `inf` or `nan`.
fn decimal_float(s: &str) -> Option<f64> {
    let number_char = |ch: char| ch.is_ascii_digit() || ".eE+-".contains(ch);
    let plausible = s.chars().any(|ch| ch.is_ascii_digit()) && s.chars().all(number_char);
    let parsed = plausible.then(|| s.parse::<f64>().ok()).flatten();
    parsed.filter(|f| f.is_finite())
}

/// Whether the parser's errors say it knowingly does not support the setting.
fn unsupported(errors: Vec<ConfigError>) -> bool {
    errors.iter().any(|e| e.message.contains("not supported"))
}

/// The errors the parser reports for `pooler.KEY` set to `value` alone (with trust auth, so
/// that no probe fails for the lack of an auth_file).
fn general_probe(key: &str, value: &Value) -> Vec<ConfigError> {
    let setting = format!("{} = {value}", toml_key(key));
    let auth = if key == "auth_type" {
        ""
    } else {
        "auth_type = \"trust\""
    };
    probe_errors(
        &format!("[pooler]\n{auth}\n{setting}\n"),
        &format!("pooler.{key}"),
    )
}

/// The errors the parser reports for one field of a `[databases]` / `[users]` entry alone.
fn field_probe(section: &str, field: &str, value: &Value) -> Vec<ConfigError> {
    let quoted = toml_key(field);
    let doc =
        format!("[pooler]\nauth_type = \"trust\"\n[{section}]\np = {{ {quoted} = {value} }}\n");
    probe_errors(&doc, &format!("{section}.p.{field}"))
}

/// The errors of a probe document that concern `key`. Probes repeat (the same keys and values
/// in every file), so their answers are remembered, up to a bound.
fn probe_errors(doc: &str, key: &str) -> Vec<ConfigError> {
    thread_local! {
        static SEEN: RefCell<HashMap<String, Vec<ConfigError>>> = RefCell::new(HashMap::new());
    }
    let errors = SEEN.with_borrow_mut(|seen| {
        if let Some(errors) = seen.get(doc) {
            return errors.clone();
        }
        let errors = parse_document(doc, None)
            .err()
            .map_or_else(Vec::new, |e| e.0);
        if seen.len() >= 4096 {
            seen.clear();
        }
        seen.insert(doc.to_owned(), errors.clone());
        errors
    });
    errors.into_iter().filter(|e| e.key == key).collect()
}

/// Why a PgBouncer setting is ignored, for its warning.
fn unsupported_reason(key: &str) -> &'static str {
    match key {
        "logfile" | "syslog" | "syslog_facility" | "syslog_ident" | "log_stats" | "verbose" => {
            "the pooler logs to stderr, filtered by log_level"
        }
        "pidfile" => "the pooler runs in the foreground and writes no pid file",
        "user" => "the pooler does not switch users; start it as the right user",
        "job_name" | "service_name" => "a Windows service setting",
        "conffile" => "the file is given on the command line",
        "auth_query" | "auth_user" | "auth_dbname" => {
            "auth_query is not implemented; every user must be in auth_file"
        }
        "auth_hba_file" | "auth_ident_file" | "auth_ldap_options" => {
            "hba, ident and LDAP authentication are not implemented"
        }
        "peer_id" => "peering between PgBouncer processes is not implemented",
        k if k.contains("tls") => "TLS is not implemented",
        k if k.contains("client_connections") => "client connection limits are not implemented",
        _ => "PgBouncer setting not implemented by this pooler",
    }
}

/// PgBouncer's connection string: `key=value` pairs apart by spaces; a value may be quoted with
/// single quotes. Messages never show values (they may be passwords).
fn pgbouncer_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|ch: char| ch == '=' || ch.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after = match rest[key_end..].trim_start().strip_prefix('=') {
            Some(_) if key.is_empty() => return Err("`=` without a key".to_owned()),
            Some(after) => after.trim_start(),
            None => return Err(format!("expected `=` after `{key}`")),
        };
        let value = if let Some(quoted) = after.strip_prefix('\'') {
            let (value, after) = unquote(quoted, '\'')
                .ok_or_else(|| format!("unterminated quoted value of `{key}`"))?;
            if after.starts_with(|ch: char| !ch.is_whitespace()) {
                return Err(format!(
                    "expected a space after the quoted value of `{key}`"
                ));
            }
            rest = after;
            value
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            rest = &after[end..];
            after[..end].to_owned()
        };
        pairs.push((key.to_owned(), value));
        rest = rest.trim_start();
    }
    Ok(pairs)
}
