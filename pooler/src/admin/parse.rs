//! Console command parsing: statements split on ';' outside quotes, then tokens matched
//! against PgBouncer's grammar (`CMD [arg]`, `SET key = value`), case-insensitively.
//! Never panics: every input ends as a command or a [`ParseError`].

use crate::{control::ShutdownMode, proto::sqlstate};

/// A parsed console statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Nothing but whitespace.
    Empty,
    /// SHOW of a console listing (canonical upper-case name, e.g. "POOLS").
    Show(&'static str),
    /// SHOW of a PostgreSQL parameter drivers ask about (canonical name).
    Param(&'static str),
    /// SET of a pooler setting.
    Set {
        key: String,
        value: String,
    },
    /// SET of anything else (driver noise): accepted and ignored.
    SetIgnored {
        application_name: Option<String>,
    },
    Pause(Option<String>),
    Resume(Option<String>),
    Suspend,
    Disable(String),
    Enable(String),
    Reconnect(Option<String>),
    Kill(Option<String>),
    KillClient(u64),
    WaitClose(Option<String>),
    Shutdown(ShutdownMode),
    Reload,
    /// BEGIN/COMMIT/ROLLBACK: answered with their tag, nothing else happens.
    Tx(&'static str),
}

impl Command {
    /// Whether stats_users may run it.
    pub fn read_only(&self) -> bool {
        matches!(
            self,
            Command::Empty
                | Command::Show(_)
                | Command::Param(_)
                | Command::SetIgnored { .. }
                | Command::Tx(_)
        )
    }

    /// The command's name, for messages.
    pub fn name(&self) -> String {
        match self {
            Command::Empty => String::new(),
            Command::Show(n) => format!("SHOW {n}"),
            Command::Param(n) => format!("SHOW {n}"),
            Command::Set { key, .. } => format!("SET {key}"),
            Command::SetIgnored { .. } => "SET".into(),
            Command::Pause(_) => "PAUSE".into(),
            Command::Resume(_) => "RESUME".into(),
            Command::Suspend => "SUSPEND".into(),
            Command::Disable(_) => "DISABLE".into(),
            Command::Enable(_) => "ENABLE".into(),
            Command::Reconnect(_) => "RECONNECT".into(),
            Command::Kill(_) => "KILL".into(),
            Command::KillClient(_) => "KILL_CLIENT".into(),
            Command::WaitClose(_) => "WAIT_CLOSE".into(),
            Command::Shutdown(_) => "SHUTDOWN".into(),
            Command::Reload => "RELOAD".into(),
            Command::Tx(t) => (*t).into(),
        }
    }
}

/// A statement that is not a console command, with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: &'static str,
    pub message: String,
}

/// What the parser needs to know about names defined elsewhere (SHOW listings, fake
/// parameters, pooler settings); passed in so the grammar is testable alone.
pub struct Names {
    pub show: fn(&str) -> Option<&'static str>,
    pub param: fn(&str) -> Option<&'static str>,
    pub setting: fn(&str) -> bool,
}

/// Splits a query string into statements on ';' outside quotes. Empty pieces are dropped;
/// an unterminated quote ends the last piece (the parser reports it).
pub fn split(query: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, ch) in query.char_indices() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None if ch == '\'' || ch == '"' => quote = Some(ch),
            None if ch == ';' => {
                out.push(&query[start..i]);
                start = i + 1;
            }
            None => {}
        }
    }
    out.push(&query[start..]);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word (as typed) or a "quoted identifier" (unquoted).
    Word(String, bool),
    /// A 'string literal' (unquoted).
    Str(String),
    Sym(char),
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':' | '*' | '$' | '+')
}

fn tokenize(stmt: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut chars = stmt.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string".into()),
                    // A doubled quote stands for one quote character.
                    Some(x) if x == c && chars.next_if_eq(&c).is_some() => s.push(c),
                    Some(x) if x == c => break,
                    Some(x) => s.push(x),
                }
            }
            toks.push(if c == '"' {
                Tok::Word(s, true)
            } else {
                Tok::Str(s)
            });
        } else if is_word_char(c) {
            let mut s = String::new();
            while let Some(x) = chars.next_if(|&x| is_word_char(x)) {
                s.push(x);
            }
            toks.push(Tok::Word(s, false));
        } else {
            chars.next();
            toks.push(Tok::Sym(c));
        }
    }
    Ok(toks)
}

/// At most this much of a statement is quoted back in error messages.
const QUOTE_MAX: usize = 200;

fn quoted(stmt: &str) -> String {
    let s = stmt.trim();
    match s.char_indices().nth(QUOTE_MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn unknown(stmt: &str) -> ParseError {
    ParseError {
        code: sqlstate::SYNTAX_ERROR,
        message: format!(
            "unknown command \"{}\"; SHOW HELP lists the commands",
            quoted(stmt)
        ),
    }
}

fn syntax(stmt: &str, why: &str) -> ParseError {
    ParseError {
        code: sqlstate::SYNTAX_ERROR,
        message: format!(
            "syntax error in \"{}\": {why}; SHOW HELP lists the commands",
            quoted(stmt)
        ),
    }
}

/// The word of a token that can name something (a bare word or a quoted identifier).
fn word(t: &Tok) -> Option<&str> {
    match t {
        Tok::Word(w, _) => Some(w),
        _ => None,
    }
}

/// Parses one statement (as returned by [`split`]).
pub fn parse(stmt: &str, names: &Names) -> Result<Command, ParseError> {
    let toks = tokenize(stmt).map_err(|why| syntax(stmt, &why))?;
    let Some(first) = toks.first() else {
        return Ok(Command::Empty);
    };
    let keyword = match first {
        Tok::Word(w, false) => w.to_ascii_uppercase(),
        _ => return Err(unknown(stmt)),
    };
    let args = &toks[1..];
    // Optional database argument: none, or one name.
    let opt_db = |cmd: &str| -> Result<Option<String>, ParseError> {
        match args {
            [] => Ok(None),
            [t] => word(t)
                .map(|w| Some(w.to_string()))
                .ok_or_else(|| syntax(stmt, &format!("{cmd} takes a database name"))),
            _ => Err(syntax(
                stmt,
                &format!("{cmd} takes at most one database name"),
            )),
        }
    };
    let db = |cmd: &str| -> Result<String, ParseError> {
        match opt_db(cmd)? {
            Some(d) => Ok(d),
            None => Err(syntax(stmt, &format!("{cmd} needs a database name"))),
        }
    };
    let no_args = |cmd: Command| -> Result<Command, ParseError> {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(syntax(stmt, &format!("{} takes no argument", cmd.name())))
        }
    };
    match keyword.as_str() {
        "SHOW" => parse_show(stmt, args, names),
        "SET" => Ok(parse_set(stmt, args, names)?),
        "PAUSE" => opt_db("PAUSE").map(Command::Pause),
        "RESUME" => opt_db("RESUME").map(Command::Resume),
        "RECONNECT" => opt_db("RECONNECT").map(Command::Reconnect),
        "KILL" => opt_db("KILL").map(Command::Kill),
        "WAIT_CLOSE" => opt_db("WAIT_CLOSE").map(Command::WaitClose),
        "DISABLE" => db("DISABLE").map(Command::Disable),
        "ENABLE" => db("ENABLE").map(Command::Enable),
        "KILL_CLIENT" => match args {
            [Tok::Word(w, false)] => {
                w.parse::<u64>()
                    .map(Command::KillClient)
                    .map_err(|_| ParseError {
                        code: "22P02",
                        message: format!("invalid client id \"{w}\": SHOW CLIENTS lists the ids"),
                    })
            }
            _ => Err(syntax(stmt, "KILL_CLIENT needs one client id")),
        },
        "SUSPEND" => no_args(Command::Suspend),
        "RELOAD" => no_args(Command::Reload),
        "SHUTDOWN" => match args {
            [] => Ok(Command::Shutdown(ShutdownMode::Now)),
            [Tok::Word(w, false)] if w.eq_ignore_ascii_case("WAIT_FOR_SERVERS") => {
                Ok(Command::Shutdown(ShutdownMode::WaitForServers))
            }
            [Tok::Word(w, false)] if w.eq_ignore_ascii_case("WAIT_FOR_CLIENTS") => {
                Ok(Command::Shutdown(ShutdownMode::WaitForClients))
            }
            _ => Err(syntax(
                stmt,
                "SHUTDOWN takes WAIT_FOR_SERVERS, WAIT_FOR_CLIENTS or nothing",
            )),
        },
        "BEGIN" | "START" => Ok(Command::Tx("BEGIN")),
        "COMMIT" | "END" => Ok(Command::Tx("COMMIT")),
        "ROLLBACK" | "ABORT" => Ok(Command::Tx("ROLLBACK")),
        _ => Err(unknown(stmt)),
    }
}

fn parse_show(stmt: &str, args: &[Tok], names: &Names) -> Result<Command, ParseError> {
    if let [Tok::Word(w, _)] = args
        && let Some(n) = (names.show)(w)
    {
        return Ok(Command::Show(n));
    }
    // Parameters, including multi-word ones ("SHOW TRANSACTION ISOLATION LEVEL").
    let words: Option<Vec<&str>> = args.iter().map(word).collect();
    if let Some(words) = words
        && !words.is_empty()
        && let Some(p) = (names.param)(&words.join(" "))
    {
        return Ok(Command::Param(p));
    }
    Err(unknown(stmt))
}

fn parse_set(stmt: &str, args: &[Tok], names: &Names) -> Result<Command, ParseError> {
    let mut rest = args;
    if let [Tok::Word(w, false), tail @ ..] = rest
        && (w.eq_ignore_ascii_case("SESSION") || w.eq_ignore_ascii_case("LOCAL"))
    {
        rest = tail;
    }
    let (key, value) = match rest {
        [Tok::Word(k, _), Tok::Sym('='), value @ ..] => (k, value),
        [Tok::Word(k, _), Tok::Word(to, false), value @ ..] if to.eq_ignore_ascii_case("TO") => {
            (k, value)
        }
        // SET TIME ZONE ..., SET SESSION CHARACTERISTICS ...: driver noise.
        _ => {
            return Ok(Command::SetIgnored {
                application_name: None,
            });
        }
    };
    let single = match value {
        [Tok::Word(v, _)] | [Tok::Str(v)] => Some(v.clone()),
        _ => None,
    };
    let key_lc = key.to_ascii_lowercase();
    if (names.setting)(&key_lc) {
        return match single {
            Some(value) => Ok(Command::Set { key: key_lc, value }),
            None => Err(syntax(stmt, "SET key = value takes exactly one value")),
        };
    }
    Ok(Command::SetIgnored {
        application_name: single.filter(|_| key_lc == "application_name"),
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
