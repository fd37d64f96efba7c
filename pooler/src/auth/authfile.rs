//! PgBouncer's userlist.txt: `"user" "secret"` lines mapping user names to password secrets.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Secret;

/// PgBouncer's userlist.txt format: one user per line, `"name" "secret"`, extra fields ignored, `;` or `#` comment
/// lines, blank lines; a double quote inside a field is written as two double quotes (`""`).
/// When a user appears twice the last line wins, as in PgBouncer.
pub struct AuthFile {
    users: HashMap<String, Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

// Debug lists only user names: the secrets stay out of logs.
impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("AuthFile").field("users", &names).finish()
    }
}

impl AuthFile {
    pub fn load(path: &Path) -> Result<AuthFile, AuthFileError> {
        let bytes = std::fs::read(path).map_err(|source| AuthFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => AuthFile::parse(text, path),
            Err(e) => {
                // Report the line holding the first invalid byte, like any other syntax error.
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                Err(syntax(path, line, "not valid UTF-8".to_owned()))
            }
        }
    }

    /// Parses the file contents; `path` is used only in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<AuthFile, AuthFileError> {
        let mut users = HashMap::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let (user, secret) = parse_line(line).map_err(|m| syntax(path, idx + 1, m))?;
            users.insert(user, secret);
        }
        Ok(AuthFile { users })
    }

    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.users.get(user)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// User names in the file (unordered), e.g. for SHOW USERS.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

fn syntax(path: &Path, line: usize, message: String) -> AuthFileError {
    AuthFileError::Syntax {
        path: path.to_owned(),
        line,
        message,
    }
}

/// One non-blank, non-comment line (leading whitespace removed). Error messages name the problem but quote
/// nothing from the line, not even the user name: on a mis-quoted line the "user name" may contain the secret.
fn parse_line(line: &str) -> Result<(String, Secret), String> {
    let (user, rest) = quoted_field(line).map_err(|m| format!("user name field: {m}"))?;
    if user.is_empty() {
        return Err("empty user name".to_owned());
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err("missing password field".to_owned());
    }
    let (secret, _extra_fields_ignored) =
        quoted_field(rest).map_err(|m| format!("password field: {m}"))?;
    let secret = Secret::try_parse(&secret).map_err(str::to_owned)?;
    Ok((user, secret))
}

/// Parses a `"..."` field at the start of `s` (with `""` standing for one `"`); returns it and the rest of `s`.
fn quoted_field(s: &str) -> Result<(String, &str), &'static str> {
    let body = s
        .strip_prefix('"')
        .ok_or("expected a double-quoted field")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
            continue;
        }
        if body[i + 1..].starts_with('"') {
            value.push('"');
            chars.next();
            continue;
        }
        let rest = &body[i + 1..];
        // A field must be followed by whitespace or end of line: `"a"b` is almost certainly a quoting mistake.
        if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
            return Err("unexpected character after closing quote");
        }
        return Ok((value, rest));
    }
    Err("missing closing double quote")
}
