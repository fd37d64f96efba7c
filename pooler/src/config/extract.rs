//! Small typed extractors that turn TOML values into config fields, recording every problem.
//!
//! Each extractor returns `None` after pushing an error, so the walkers keep going and a single
//! load reports all the problems of a file instead of stopping at the first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::ConfigError;

/// Longest piece of a wrong string value quoted back in a message.
const MAX_QUOTED_CHARS: usize = 60;

/// Collects the errors of one load.
pub(super) struct Collector {
    file: Option<PathBuf>,
    pub(super) errors: Vec<ConfigError>,
    /// Keys whose value was refused, so cross-key checks do not pile a second, misleading error
    /// on top (a bad `auth_type` must not also yield "md5 requires auth_file").
    failed: BTreeSet<String>,
}

impl Collector {
    pub(super) fn new(file: Option<&Path>) -> Self {
        Collector {
            file: file.map(Path::to_path_buf),
            errors: Vec::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Record one problem with `key` (a dotted path).
    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
        self.failed.insert(key.to_owned());
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Whether an error was already recorded for `key` or for a section holding it.
    pub(super) fn failed(&self, key: &str) -> bool {
        self.failed.contains(key)
            || key
                .match_indices('.')
                .any(|(i, _)| key.get(..i).is_some_and(|k| self.failed.contains(k)))
    }

    /// Treat `key` as refused without reporting it, when another error already explains it.
    pub(super) fn suppress(&mut self, key: &str) {
        self.failed.insert(key.to_owned());
    }

    /// An unsigned integer in `min..=max`.
    pub(super) fn u32_in(&mut self, key: &str, v: &Value, min: u32, max: u32) -> Option<u32> {
        let n = v
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (min..=max).contains(n));
        if n.is_none() {
            let expected = if min == 0 && max == u32::MAX {
                "expected a non-negative integer".to_owned()
            } else if max == u32::MAX {
                format!("expected an integer of at least {min}")
            } else {
                format!("expected an integer between {min} and {max}")
            };
            self.error(key, format!("{expected}, found {}", describe(v)));
        }
        n
    }

    /// An unsigned integer (pool sizes, counts).
    pub(super) fn count(&mut self, key: &str, v: &Value) -> Option<u32> {
        self.u32_in(key, v, 0, u32::MAX)
    }

    /// A TCP port, 1..=65535.
    pub(super) fn port(&mut self, key: &str, v: &Value) -> Option<u16> {
        self.u32_in(key, v, 1, u32::from(u16::MAX))
            .and_then(|n| u16::try_from(n).ok())
    }

    /// Seconds, integer or float, non-negative and finite.
    pub(super) fn duration(&mut self, key: &str, v: &Value) -> Option<Duration> {
        let d = match v {
            Value::Integer(n) => u64::try_from(*n).ok().map(Duration::from_secs),
            Value::Float(f) => Duration::try_from_secs_f64(*f).ok(),
            _ => None,
        };
        if d.is_none() {
            self.error(
                key,
                format!(
                    "expected a non-negative number of seconds (e.g. 5 or 0.5), found {}",
                    describe(v)
                ),
            );
        }
        d
    }

    /// A TOML boolean; 0 and 1 are accepted too because PgBouncer's ini files use them.
    pub(super) fn boolean(&mut self, key: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Boolean(b) => Some(*b),
            Value::Integer(0) => Some(false),
            Value::Integer(1) => Some(true),
            _ => {
                self.error(
                    key,
                    format!("expected true or false (or 1 or 0), found {}", describe(v)),
                );
                None
            }
        }
    }

    /// Any string, quoted back in the message when wrong.
    pub(super) fn string(&mut self, key: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(key, format!("expected a string, found {}", describe(v)));
                None
            }
        }
    }

    /// A string that may be a secret: a wrong value is described by its type only, never quoted.
    pub(super) fn secret(&mut self, key: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(key, format!("expected a string, found {}", type_name(v)));
                None
            }
        }
    }

    /// A non-empty string (names, hosts).
    pub(super) fn name(&mut self, key: &str, v: &Value) -> Option<String> {
        let s = self.string(key, v)?;
        if s.trim().is_empty() {
            self.error(key, "expected a non-empty string");
            return None;
        }
        Some(s)
    }

    /// A comma-separated string or an array of strings; items trimmed, empty items dropped,
    /// duplicates removed (first one kept).
    pub(super) fn list(&mut self, key: &str, v: &Value) -> Option<Vec<String>> {
        let mut items: Vec<String> = Vec::new();
        let mut push = |item: &str| {
            let item = item.trim();
            if !item.is_empty() && !items.iter().any(|i| i == item) {
                items.push(item.to_owned());
            }
        };
        match v {
            Value::String(s) => s.split(',').for_each(&mut push),
            Value::Array(array) => {
                for (i, elem) in array.iter().enumerate() {
                    match elem {
                        // An element may itself hold "a,b", like the string form.
                        Value::String(s) => s.split(',').for_each(&mut push),
                        _ => {
                            self.error(
                                key,
                                format!(
                                    "expected an array of strings, but element {i} is {}",
                                    describe(elem)
                                ),
                            );
                            return None;
                        }
                    }
                }
            }
            _ => {
                self.error(
                    key,
                    format!(
                        "expected a comma-separated string or an array of strings, found {}",
                        describe(v)
                    ),
                );
                return None;
            }
        }
        Some(items)
    }

    /// One of a fixed set of spellings.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &str,
        v: &Value,
        options: &[(&str, T)],
    ) -> Option<T> {
        let found = v
            .as_str()
            .and_then(|s| options.iter().find(|(name, _)| *name == s));
        if let Some((_, value)) = found {
            return Some(*value);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let mut message = format!(
            "expected one of {}, found {}",
            names.join(", "),
            describe(v)
        );
        if let Some(s) = v.as_str()
            && let Some(suggestion) = did_you_mean(s, &names)
        {
            message.push_str(&format!("; did you mean `{suggestion}`?"));
        }
        self.error(key, message);
        None
    }

    /// A key nobody knows: refused, with the nearest known spelling when there is one.
    pub(super) fn unknown_key(&mut self, key: &str, name: &str, known: &[&str]) {
        let mut message = "unknown key".to_owned();
        if let Some(suggestion) = did_you_mean(name, known) {
            message.push_str(&format!("; did you mean `{suggestion}`?"));
        }
        self.error(key, message);
    }
}

/// How a wrong value is quoted back: strings in quotes (shortened), numbers as written, and
/// compound values by their type. Never use it for secrets.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => {
            if s.chars().count() > MAX_QUOTED_CHARS {
                let short: String = s.chars().take(MAX_QUOTED_CHARS).collect();
                format!("{:?}...", short)
            } else {
                format!("{s:?}")
            }
        }
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        _ => type_name(v).to_owned(),
    }
}

/// The type of a value, for messages that must not show the value itself.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date/time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// The known name closest to `name`, when it is close enough to be a likely typo, or the only
/// known name that starts with it ("scram" -> "scram-sha-256").
pub(super) fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = name.to_lowercase();
    // Short names tolerate one edit, longer ones up to three: "passwd" vs "password" is a
    // plausible slip, "port" vs "user" is not.
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let nearest = known
        .iter()
        .map(|k| (edit_distance(&name, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    nearest.or_else(|| {
        let mut starting = known
            .iter()
            .filter(|k| name.len() >= 3 && k.starts_with(&name));
        match (starting.next(), starting.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions, and swaps of two
/// neighbouring characters each cost 1 (swaps are the most common typing slip).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the classic dynamic-programming table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
