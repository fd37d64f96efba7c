//! PgBouncer's `pgbouncer.ini`: read it (sections, comments, `%include`), translate it into the TOML our parser validates, and map its errors back to ini lines.
//!
//! The translation reuses the TOML parser for everything it knows: which `[pgbouncer]` keys
//! exist, their types (found by asking the parser which typing of the raw text it accepts),
//! and which PgBouncer settings are not supported (the parser's "not supported" refusals, which
//! become warnings here so an operator can start from an existing file). The resulting TOML is
//! what `pooler import-pgbouncer` prints, and what `Config::load` validates for an ini file, so
//! both always agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::databases::parse_conn_string;
use super::general::{GENERAL_KEYS, parse_document};
use super::{Config, ConfigError, ConfigErrors};

/// How deep `%include` may nest before the file is refused (a loop is caught earlier).
const MAX_INCLUDE_DEPTH: usize = 16;

/// PgBouncer keys the TOML parser does not list at all; accepted and ignored in an ini file.
const IGNORED_EXTRA_KEYS: [&str; 2] = ["verbose", "service_name"];

/// The result of translating a PgBouncer ini file.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The equivalent TOML configuration.
    pub toml: String,
    /// One line per ignored setting or overridden duplicate:
    /// `pgbouncer.ini:LINE: key: not supported (reason)`.
    pub warnings: Vec<String>,
    /// That TOML, validated; errors name the ini file, line and key.
    pub config: Result<Config, ConfigErrors>,
}

/// Translate the PgBouncer ini file at `path`. `Err` when it cannot be read or has ini syntax
/// errors; otherwise the TOML, the warnings, and the validation result.
pub fn import_pgbouncer(path: &Path) -> Result<Imported, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => translate(path, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: Some(path.to_path_buf()),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// `Config::load` for an ini file: the config and its warnings, or every error.
pub(super) fn load(path: &Path, text: &str) -> Result<(Config, Vec<String>), ConfigErrors> {
    let imported = translate(path, text)?;
    imported.config.map(|config| (config, imported.warnings))
}

/// Whether a config file is PgBouncer's ini rather than TOML: by its `.ini` extension, or by a
/// first line that is an ini section header (or `%include`) in a text TOML cannot parse.
pub(super) fn looks_like_ini(path: &Path, text: &str) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ini"))
    {
        return true;
    }
    let first = text.lines().map(str::trim).find(|l| {
        !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('\u{feff}')
    });
    let ini_start = first.is_some_and(|l| {
        ["[pgbouncer]", "[databases]", "[users]"].contains(&l) || l.starts_with("%include")
    });
    ini_start && text.parse::<Table>().is_err()
}

/// The sections of PgBouncer's file (`Other` = an unknown one, already reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Databases,
    Users,
    Pgbouncer,
    Peers,
    Other,
}

/// Where a line is: the file as shown in messages, and its 1-based line number.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    line: usize,
}

impl Origin {
    fn label(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: Some(PathBuf::from(self.label())),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// One `key = value` line.
#[derive(Debug)]
struct Entry {
    section: Section,
    key: String,
    value: String,
    origin: Origin,
}

/// Reads a file and its includes into entries, collecting every syntax error.
struct Reader {
    entries: Vec<Entry>,
    errors: Vec<ConfigError>,
    /// Canonical paths of the files being read, outermost first (for loop detection).
    stack: Vec<PathBuf>,
    /// PgBouncer keeps the current section across `%include`s, in both directions.
    section: Option<Section>,
}

impl Reader {
    fn read_text(&mut self, shown: &Path, text: &str) {
        let canonical = std::fs::canonicalize(shown).unwrap_or_else(|_| shown.to_path_buf());
        self.stack.push(canonical);
        for (i, raw) in text.lines().enumerate() {
            let origin = Origin {
                file: shown.to_path_buf(),
                line: i + 1,
            };
            self.read_line(raw, &origin);
        }
        self.stack.pop();
    }

    fn read_line(&mut self, raw: &str, origin: &Origin) {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            return;
        }
        if let Some(rest) = line.strip_prefix('[') {
            self.section_header(rest, origin);
        } else if let Some(rest) = line.strip_prefix('%') {
            self.directive(rest, origin);
        } else {
            match split_key_value(line) {
                Ok((key, value)) => self.entry(key, value, origin),
                Err(message) => self.errors.push(origin.error("", message)),
            }
        }
    }

    fn section_header(&mut self, rest: &str, origin: &Origin) {
        let Some((name, after)) = rest.split_once(']') else {
            self.errors
                .push(origin.error("", "section header without a closing `]`"));
            return;
        };
        let after = after.trim();
        if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
            self.errors
                .push(origin.error("", "unexpected text after the section header"));
        }
        let section = match name.trim() {
            "databases" => Section::Databases,
            "users" => Section::Users,
            "pgbouncer" => Section::Pgbouncer,
            "peers" => Section::Peers,
            other => {
                self.errors.push(origin.error(
                    "",
                    format!(
                        "unknown section [{other}] (PgBouncer's are [databases], [users], \
                         [pgbouncer] and [peers])"
                    ),
                ));
                Section::Other
            }
        };
        self.section = Some(section);
    }

    fn directive(&mut self, rest: &str, origin: &Origin) {
        let target = match rest.strip_prefix("include") {
            Some(t) if t.is_empty() || t.starts_with(char::is_whitespace) => t.trim(),
            _ => {
                self.errors
                    .push(origin.error("", "unknown directive (the only one is `%include FILE`)"));
                return;
            }
        };
        if target.is_empty() {
            self.errors
                .push(origin.error("%include", "expected a file name"));
            return;
        }
        let target = Path::new(target);
        let shown = match origin.file.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target.to_path_buf(),
        };
        let canonical = std::fs::canonicalize(&shown).unwrap_or_else(|_| shown.clone());
        if self.stack.contains(&canonical) {
            self.errors.push(origin.error(
                "%include",
                format!("{} is already being read: include loop", shown.display()),
            ));
            return;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            self.errors.push(origin.error(
                "%include",
                format!("includes nested more than {MAX_INCLUDE_DEPTH} deep"),
            ));
            return;
        }
        match std::fs::read_to_string(&shown) {
            Ok(text) => self.read_text(&shown, &text),
            Err(e) => self
                .errors
                .push(origin.error("%include", format!("cannot read {}: {e}", shown.display()))),
        }
    }

    fn entry(&mut self, key: String, value: String, origin: &Origin) {
        match self.section {
            None => self.errors.push(origin.error(
                &key,
                "setting outside any section (start with [databases] or [pgbouncer])",
            )),
            // Already reported at the section header.
            Some(Section::Other) => {}
            Some(section) => self.entries.push(Entry {
                section,
                key,
                value,
                origin: origin.clone(),
            }),
        }
    }
}

/// `key = value`: the key is PgBouncer's `[A-Za-z0-9_.*-]+` or a double-quoted name (`""` for a
/// quote); the value is the rest of the line, trimmed (no inline comments, as in PgBouncer).
fn split_key_value(line: &str) -> Result<(String, String), String> {
    let (key, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let mut key = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            if ch != '"' {
                key.push(ch);
            } else if quoted[i + 1..].starts_with('"') {
                key.push('"');
                chars.next();
            } else {
                end = Some(i + 1);
                break;
            }
        }
        let end = end.ok_or_else(|| "unterminated quoted name".to_owned())?;
        (key, &quoted[end..])
    } else {
        let end = line
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || "_.-*".contains(ch)))
            .unwrap_or(line.len());
        (line[..end].to_owned(), &line[end..])
    };
    let Some(value) = rest.trim_start().strip_prefix('=') else {
        return Err(if key.is_empty() {
            "expected `key = value`, a [section] header or a comment".to_owned()
        } else {
            format!("expected `=` after `{key}`")
        });
    };
    if key.is_empty() {
        return Err("expected a name before `=`".to_owned());
    }
    Ok((key, value.trim().to_owned()))
}

/// Read `text` (the file at `path`) and its includes, translate, validate.
fn translate(path: &Path, text: &str) -> Result<Imported, ConfigErrors> {
    let mut reader = Reader {
        entries: Vec::new(),
        errors: Vec::new(),
        stack: Vec::new(),
        section: None,
    };
    reader.read_text(path, text);
    if !reader.errors.is_empty() {
        return Err(ConfigErrors(reader.errors));
    }
    let mut t = Translation::default();
    for entry in last_of_each(reader.entries, &mut t.warnings) {
        match entry.section {
            Section::Pgbouncer => t.general(entry),
            Section::Databases => t.entry("databases", entry),
            Section::Users => t.entry("users", entry),
            Section::Peers => t.warn(
                &entry.origin,
                &format!("peers.{}", entry.key),
                "peering between PgBouncer processes is not implemented",
            ),
            Section::Other => {}
        }
    }
    let toml = render(path, &t.sections);
    let config = parse_document(&toml, Some(path)).map_err(|errors| {
        ConfigErrors(errors.0.into_iter().map(|e| t.relocate(path, e)).collect())
    });
    Ok(Imported {
        toml,
        warnings: t.warnings,
        config,
    })
}

/// PgBouncer applies every line in turn, so the last of several equal keys wins: keep it, in
/// the order of first appearance, and warn about the ones it overrides.
fn last_of_each(entries: Vec<Entry>, warnings: &mut Vec<String>) -> Vec<Entry> {
    let mut index: BTreeMap<(Section, String), usize> = BTreeMap::new();
    let mut kept: Vec<Entry> = Vec::new();
    for entry in entries {
        let id = (entry.section, entry.key.clone());
        match index.get(&id) {
            Some(&i) => {
                warnings.push(format!(
                    "{}: {}: set again (first at {}); the last value is used",
                    entry.origin.label(),
                    entry.key,
                    kept[i].origin.label()
                ));
                kept[i] = entry;
            }
            None => {
                index.insert(id, kept.len());
                kept.push(entry);
            }
        }
    }
    kept
}

/// The TOML being built, with where each item came from.
#[derive(Default)]
struct Translation {
    /// "pooler", "databases", "users" tables.
    sections: BTreeMap<&'static str, Table>,
    warnings: Vec<String>,
    /// Dotted TOML key ("pooler.listen_port", "databases.app") -> its ini line.
    origins: BTreeMap<String, Origin>,
}

impl Translation {
    fn warn(&mut self, origin: &Origin, key: &str, reason: &str) {
        self.warnings.push(format!(
            "{}: {key}: not supported ({reason})",
            origin.label()
        ));
    }

    /// A `[pgbouncer]` key: typed as the parser wants it, or a warning when not supported.
    fn general(&mut self, entry: Entry) {
        let key = entry.key.as_str();
        let value = if GENERAL_KEYS.contains(&key) {
            typed_general_value(key, &entry.value)
        } else {
            let value = Value::String(entry.value.clone());
            let refusal = general_probe(key, &value).into_iter().next();
            if IGNORED_EXTRA_KEYS.contains(&key)
                || refusal.is_some_and(|e| e.message.contains("not supported"))
            {
                self.warn(&entry.origin, key, unsupported_reason(key));
                return;
            }
            // Unknown to PgBouncer too: the parser refuses it with a suggestion.
            value
        };
        self.origins.insert(format!("pooler.{key}"), entry.origin);
        self.sections
            .entry("pooler")
            .or_default()
            .insert(entry.key, value);
    }

    /// A `[databases]` or `[users]` entry: its connection string, without the settings the
    /// parser refuses as not supported (each one a warning).
    fn entry(&mut self, section: &'static str, entry: Entry) {
        let prefix = format!("{section}.{}", entry.key);
        let mut value = entry.value.clone();
        if let Ok(pairs) = parse_conn_string(&entry.value) {
            let mut probe = Table::new();
            probe.insert(entry.key.clone(), Value::String(entry.value.clone()));
            let refused: Vec<String> = probe_errors(section, probe)
                .into_iter()
                .filter(|e| e.message.contains("not supported"))
                .filter_map(|e| Some(e.key.strip_prefix(&format!("{prefix}."))?.to_owned()))
                .collect();
            if !refused.is_empty() {
                for field in &refused {
                    let reason = unsupported_reason(field);
                    self.warn(&entry.origin, &format!("{prefix}.{field}"), reason);
                }
                let kept = pairs.into_iter().filter(|(k, _)| !refused.contains(k));
                value = conn_string(kept);
            }
        }
        self.origins.insert(prefix, entry.origin);
        self.sections
            .entry(section)
            .or_default()
            .insert(entry.key, Value::String(value));
    }

    /// An error of the TOML parse, pointed at the ini line of its key, in ini spelling.
    fn relocate(&self, path: &Path, mut e: ConfigError) -> ConfigError {
        // The longest known prefix: database names may contain dots.
        let origin = self
            .origins
            .iter()
            .filter(|(k, _)| {
                e.key == **k
                    || e.key
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, o)| o);
        e.file = Some(match origin {
            Some(o) => PathBuf::from(o.label()),
            None => path.to_path_buf(),
        });
        if let Some(key) = e.key.strip_prefix("pooler.") {
            e.key = key.to_owned();
        }
        e
    }
}

/// The TOML value the parser accepts for a `[pgbouncer]` key's raw text, trying the typings
/// PgBouncer could mean in turn; when none is accepted, the most specific one, whose error
/// message quotes the value best.
fn typed_general_value(key: &str, raw: &str) -> Value {
    let candidates = candidates(raw);
    let accepted = candidates
        .iter()
        .find(|v| general_probe(key, v).is_empty())
        .or(candidates.first());
    match accepted {
        // Only durations take floats, and whole seconds read better as integers.
        Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Integer(*f as i64),
        Some(v) => v.clone(),
        None => Value::String(raw.to_owned()),
    }
}

/// Typings of an ini value, most specific first. Integers follow C's `strtol(.., 0)` as
/// PgBouncer does (`0777` is octal, `0x10` hex); durations follow `strtod` (decimal), so
/// where the two differ both are tried.
fn candidates(raw: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let c_int = c_integer(raw);
    let decimal = decimal_float(raw);
    match c_int {
        Some(n) if decimal == Some(n as f64) => {
            if n == 0 || n == 1 {
                out.push(Value::Boolean(n == 1));
            }
            out.push(Value::Integer(n));
        }
        Some(n) => {
            out.extend(decimal.map(Value::Float));
            out.push(Value::Integer(n));
        }
        None => out.extend(decimal.map(Value::Float)),
    }
    out.push(Value::String(raw.to_owned()));
    out
}

/// C's `strtol(s, .., 0)` over the whole string: optional sign, then `0x` hex, `0` octal or
/// decimal digits.
fn c_integer(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|ch| ch.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -n } else { n })
}

/// A finite decimal number (`5`, `0.5`, `1e3`); not `inf` or `nan`.
fn decimal_float(s: &str) -> Option<f64> {
    let plausible = s.chars().any(|ch| ch.is_ascii_digit())
        && s.chars()
            .all(|ch| ch.is_ascii_digit() || ".eE+-".contains(ch));
    plausible
        .then(|| s.parse::<f64>().ok())
        .flatten()
        .filter(|f| f.is_finite())
}

/// The errors the parser reports for `pooler.KEY` when it is set to `value` alone.
fn general_probe(key: &str, value: &Value) -> Vec<ConfigError> {
    let mut table = Table::new();
    // Trust: a probe must not fail for the lack of an auth_file.
    table.insert("auth_type".to_owned(), Value::String("trust".to_owned()));
    table.insert(key.to_owned(), value.clone());
    let wanted = format!("pooler.{key}");
    probe_errors("pooler", table)
        .into_iter()
        .filter(|e| e.key == wanted)
        .collect()
}

/// Every error of a document holding `table` as `section` (plus trust auth for `[pooler]`).
fn probe_errors(section: &str, table: Table) -> Vec<ConfigError> {
    let mut doc = Table::new();
    let mut pooler = Table::new();
    pooler.insert("auth_type".to_owned(), Value::String("trust".to_owned()));
    doc.insert("pooler".to_owned(), Value::Table(pooler));
    doc.insert(section.to_owned(), Value::Table(table));
    match parse_document(&doc.to_string(), None) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0,
    }
}

/// Why a PgBouncer setting is ignored, for the warning.
fn unsupported_reason(key: &str) -> &'static str {
    match key {
        "logfile" | "syslog" | "syslog_facility" | "syslog_ident" | "log_stats" => {
            "the pooler logs to stderr; see log_level"
        }
        "verbose" => "use log_level",
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
        "max_prepared_statements" => {
            "prepared statements are not tracked across server connections"
        }
        k if k.contains("tls") => "TLS is not implemented",
        k if k.contains("client_connections") => "client connection limits are not implemented",
        _ => "PgBouncer setting not implemented by this pooler",
    }
}

/// PgBouncer's connection string from pairs, quoting values that need it.
fn conn_string(pairs: impl Iterator<Item = (String, String)>) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&key);
        out.push('=');
        if value.is_empty() || value.contains(|ch: char| ch.is_whitespace() || "'\\".contains(ch)) {
            out.push('\'');
            out.push_str(&value.replace('\\', "\\\\").replace('\'', "\\'"));
            out.push('\'');
        } else {
            out.push_str(&value);
        }
    }
    out
}

/// The TOML document: `[pooler]` first, then `[databases]`, then `[users]` when there are any.
fn render(path: &Path, sections: &BTreeMap<&'static str, Table>) -> String {
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let mut out = format!("# Converted from {name} by `pooler import-pgbouncer`.\n");
    let empty = Table::new();
    for section in ["pooler", "databases", "users"] {
        let table = sections.get(section);
        if section == "users" && table.is_none_or(Table::is_empty) {
            continue;
        }
        out.push_str(&format!("\n[{section}]\n"));
        out.push_str(&table.unwrap_or(&empty).to_string());
    }
    out
}
