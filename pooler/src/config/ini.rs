//! PgBouncer's `pgbouncer.ini`: read it (sections, comments, `%include`), translate it into the TOML our parser validates, and map its errors back to ini lines.
//!
//! The translation asks the TOML parser everything it knows: which `[pgbouncer]` keys exist,
//! their types (the typing of the raw text it accepts), and which PgBouncer settings it does not
//! support (its "not supported" refusals, warnings here so an operator can start from an
//! existing file). The TOML built is both what `pooler import-pgbouncer` prints and what
//! `Config::load` validates for an ini file, so the two always agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Table;

use super::general::parse_document;
use super::{Config, ConfigError, ConfigErrors};
use translate::Translation;

mod translate;

/// How deep `%include` may nest (a loop is caught before that).
const MAX_INCLUDE_DEPTH: usize = 16;

/// PgBouncer keys the TOML parser does not list at all; ignored in an ini file.
const IGNORED_EXTRA_KEYS: [&str; 2] = ["verbose", "service_name"];

/// The result of translating a PgBouncer ini file.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The equivalent TOML configuration.
    pub toml: String,
    /// One line per ignored setting (`pgbouncer.ini:LINE: key: not supported (reason)`) or
    /// overridden duplicate.
    pub warnings: Vec<String>,
    /// That TOML, validated; errors name the ini file and line (in `file`) and the key.
    pub config: Result<Config, ConfigErrors>,
}

/// Translate the PgBouncer ini file at `path`: `Err` when it (or an included file) cannot be
/// read or has syntax errors; otherwise the TOML, the warnings and the validation result.
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

/// Whether a config file is PgBouncer's ini: its name ends in `.ini`, or its first line is an
/// ini section header (or `%include`) and the text is not TOML.
pub(super) fn looks_like_ini(path: &Path, text: &str) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ini"))
    {
        return true;
    }
    let mut lines = text
        .lines()
        .map(|l| l.trim_start_matches('\u{feff}').trim());
    let first = lines.find(|l| !(l.is_empty() || l.starts_with('#') || l.starts_with(';')));
    let ini_start = first.is_some_and(|l| {
        ["[pgbouncer]", "[databases]", "[users]"].contains(&l) || l.starts_with("%include")
    });
    ini_start && text.parse::<Table>().is_err()
}

/// The sections of PgBouncer's file (`Other`: an unknown one, already reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Position in reading order, across included files (warnings are sorted by it).
    seq: usize,
}

impl Origin {
    fn label(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// An error at this line; `ConfigError` has no line field, so it goes with the file name.
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: Some(PathBuf::from(self.label())),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// One `key = value` line, or one field of a connection string (then `key` is the field's).
#[derive(Debug)]
struct Entry {
    section: Section,
    key: String,
    value: String,
    origin: Origin,
}

/// Reads a file and its includes into entries, collecting every syntax error.
#[derive(Default)]
struct Reader {
    entries: Vec<Entry>,
    errors: Vec<ConfigError>,
    /// Canonical paths of the files being read, outermost first (for loop detection).
    stack: Vec<PathBuf>,
    /// As in PgBouncer, the current section carries across `%include`, both ways.
    section: Option<Section>,
    lines_read: usize,
}

impl Reader {
    fn read_text(&mut self, shown: &Path, text: &str) {
        self.stack
            .push(std::fs::canonicalize(shown).unwrap_or_else(|_| shown.to_path_buf()));
        for (i, raw) in text.lines().enumerate() {
            let origin = Origin {
                file: shown.to_path_buf(),
                line: i + 1,
                seq: self.lines_read,
            };
            self.lines_read += 1;
            let line = raw.trim_start_matches('\u{feff}').trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            } else if let Some(rest) = line.strip_prefix('[') {
                self.section_header(rest, &origin);
            } else if let Some(rest) = line.strip_prefix('%') {
                self.directive(rest, &origin);
            } else {
                match split_key_value(line) {
                    Ok((key, value)) => self.entry(key, value, origin),
                    Err(message) => self.errors.push(origin.error("", message)),
                }
            }
        }
        self.stack.pop();
    }

    fn section_header(&mut self, rest: &str, origin: &Origin) {
        let Some((name, after)) = rest.split_once(']') else {
            let message = "section header without a closing `]`";
            return self.errors.push(origin.error("", message));
        };
        let after = after.trim();
        if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
            let message = "unexpected text after the section header";
            self.errors.push(origin.error("", message));
        }
        self.section = Some(match name.trim() {
            "databases" => Section::Databases,
            "users" => Section::Users,
            "pgbouncer" => Section::Pgbouncer,
            "peers" => Section::Peers,
            other => {
                let message = format!(
                    "unknown section [{other}] (PgBouncer's are [databases], [users], \
                     [pgbouncer] and [peers])"
                );
                self.errors.push(origin.error("", message));
                Section::Other
            }
        });
    }

    fn directive(&mut self, rest: &str, origin: &Origin) {
        let target = match rest.strip_prefix("include") {
            Some(t) if t.is_empty() || t.starts_with(char::is_whitespace) => t.trim(),
            _ => {
                let message = "unknown directive (the only one is `%include FILE`)";
                return self.errors.push(origin.error("", message));
            }
        };
        let relative_to = origin
            .file
            .parent()
            .filter(|_| Path::new(target).is_relative());
        let shown = relative_to.map_or_else(|| PathBuf::from(target), |dir| dir.join(target));
        let canonical = std::fs::canonicalize(&shown).unwrap_or_else(|_| shown.clone());
        let problem = if target.is_empty() {
            "expected a file name".to_owned()
        } else if self.stack.contains(&canonical) {
            format!("{} is already being read: include loop", shown.display())
        } else if self.stack.len() >= MAX_INCLUDE_DEPTH {
            format!("includes nested more than {MAX_INCLUDE_DEPTH} deep")
        } else {
            match std::fs::read_to_string(&shown) {
                Ok(text) => return self.read_text(&shown, &text),
                Err(e) => format!("cannot read {}: {e}", shown.display()),
            }
        };
        self.errors.push(origin.error("%include", problem));
    }

    fn entry(&mut self, key: String, value: String, origin: Origin) {
        match self.section {
            None => {
                let message = "setting outside any section (start with [databases] or [pgbouncer])";
                self.errors.push(origin.error(&key, message));
            }
            Some(Section::Other) => {} // reported at the section header
            Some(section) => self.entries.push(Entry {
                section,
                key,
                value,
                origin,
            }),
        }
    }
}

/// `key = value`: the key is PgBouncer's `[A-Za-z0-9_.*-]+`, or double-quoted (`""` inside for
/// a quote); the value is the rest of the line, trimmed (no inline comments, as in PgBouncer).
fn split_key_value(line: &str) -> Result<(String, String), String> {
    let (key, rest) = if let Some(quoted) = line.strip_prefix('"') {
        unquote(quoted, '"').ok_or("unterminated quoted name")?
    } else {
        let end = line
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || "_.-*".contains(ch)))
            .unwrap_or(line.len());
        (line[..end].to_owned(), &line[end..])
    };
    match rest.trim_start().strip_prefix('=') {
        Some(_) if key.is_empty() => Err("expected a name before `=`".to_owned()),
        Some(value) => Ok((key, value.trim().to_owned())),
        None if key.is_empty() => {
            Err("expected `key = value`, a [section] header or a comment".to_owned())
        }
        None => Err(format!("expected `=` after `{key}`")),
    }
}

/// The text up to the closing `quote` (a doubled quote stands for one), and what follows it.
fn unquote(s: &str, quote: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, ch)) = chars.next() {
        if ch != quote {
            out.push(ch);
        } else if s[i + 1..].starts_with(quote) {
            out.push(quote);
            chars.next();
        } else {
            return Some((out, &s[i + 1..]));
        }
    }
    None
}

/// Read `text` (the file at `path`) and its includes, translate, validate.
fn translate(path: &Path, text: &str) -> Result<Imported, ConfigErrors> {
    let mut reader = Reader::default();
    reader.read_text(path, text);
    if !reader.errors.is_empty() {
        return Err(ConfigErrors(reader.errors));
    }
    let mut t = Translation::default();
    for entry in last_of_each(reader.entries, &mut t.warnings, ini_key) {
        match entry.section {
            Section::Pgbouncer => t.general(entry),
            Section::Databases => t.entry("databases", entry),
            Section::Users => t.entry("users", entry),
            Section::Peers | Section::Other => {
                let reason = "peering between PgBouncer processes is not implemented";
                t.warn(&entry.origin, &ini_key(&entry), reason);
            }
        }
    }
    let toml = t.render(path);
    let parsed = parse_document(&toml, Some(path));
    let config = match parsed {
        Ok(config) if t.errors.is_empty() => Ok(config),
        other => {
            let parse_errors = other.err().map(|e| e.0).unwrap_or_default();
            let mut errors = std::mem::take(&mut t.errors);
            errors.extend(parse_errors.into_iter().map(|e| t.relocate(path, e)));
            Err(ConfigErrors(errors))
        }
    };
    Ok(Imported {
        toml,
        warnings: t.sorted_warnings(),
        config,
    })
}

/// How messages name an entry: `listen_port`, `databases.app`, `users.bob`, `peers.1`.
fn ini_key(entry: &Entry) -> String {
    match entry.section {
        Section::Pgbouncer => entry.key.clone(),
        Section::Databases => format!("databases.{}", entry.key),
        Section::Users => format!("users.{}", entry.key),
        Section::Peers | Section::Other => format!("peers.{}", entry.key),
    }
}

/// PgBouncer applies settings in turn, so the last of equal keys wins: keep its value at the
/// place of the first, and warn about each override.
fn last_of_each(
    entries: Vec<Entry>,
    warnings: &mut Vec<(usize, String)>,
    name: impl Fn(&Entry) -> String,
) -> Vec<Entry> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept: Vec<Entry> = Vec::new();
    for entry in entries {
        let key = name(&entry);
        if let Some(&i) = index.get(&key) {
            let (new, old) = (entry.origin.label(), kept[i].origin.label());
            let message =
                format!("{new}: {key}: set again (first at {old}); the last value is used");
            warnings.push((entry.origin.seq, message));
            kept[i] = entry;
        } else {
            index.insert(key, kept.len());
            kept.push(entry);
        }
    }
    kept
}
