//! Named prepared statements in transaction and statement mode. A client's statements live
//! in the pooler; on a server they carry names of the pooler's own, derived from their
//! text, so identical statements of different clients share one server-side statement. A
//! statement is prepared on a server the first time that server needs it, in the same
//! round trip as the request using it, and servers keep at most max_prepared_statements
//! (least recently used ones are closed).

use std::{collections::HashMap, sync::Arc};

use sha2::{Digest, Sha256};

/// How a statement is prepared on a server.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepare {
    /// Protocol level: the Parse body after the name (query text, parameter types).
    Parse(Vec<u8>),
    /// SQL level: what follows the name in `PREPARE name ...` (types and `AS statement`).
    Sql(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    /// Its name on every server.
    pub server_name: String,
    pub how: Prepare,
}

impl Statement {
    pub fn new(how: Prepare) -> Arc<Statement> {
        let mut h = Sha256::new();
        match &how {
            Prepare::Parse(body) => {
                h.update(b"P");
                h.update(body);
            }
            Prepare::Sql(text) => {
                h.update(b"S");
                h.update(text.as_bytes());
            }
        }
        let digest = h.finalize();
        let mut name = String::from("_pooler_");
        for b in &digest[..12] {
            name.push_str(&format!("{b:02x}"));
        }
        Arc::new(Statement {
            server_name: name,
            how,
        })
    }
}

/// One client's statements by the client's names, bounded so a client that prepares
/// without end cannot grow the pooler without limit.
#[derive(Debug, Default)]
pub struct ClientStatements {
    map: HashMap<String, Arc<Statement>>,
}

impl ClientStatements {
    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.map.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn insert(&mut self, name: &str, s: Arc<Statement>) {
        self.map.insert(name.to_string(), s);
    }

    /// Removes `name` if it still stands for the statement named `server_name` on servers
    /// (a Parse the server refused).
    pub fn undo(&mut self, name: &str, server_name: &str) {
        if self
            .map
            .get(name)
            .is_some_and(|s| s.server_name == server_name)
        {
            self.map.remove(name);
        }
    }

    /// The client's name for the statement `server_name` (for error messages).
    pub fn client_name_of(&self, server_name: &str) -> Option<&str> {
        self.map
            .iter()
            .find(|(_, s)| s.server_name == server_name)
            .map(|(n, _)| n.as_str())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// A batch kept for one retry: after a schema change, a server's cached plan of a shared
/// statement fails with "cached plan must not change result type". When the batch began
/// with a Bind of that statement, outside a transaction block and with nothing else in
/// flight, nothing of it has happened yet when the error comes: the pooler prepares the
/// statement again and sends the batch once more, and the client never sees the error.
#[derive(Debug)]
pub struct Replay {
    /// The statement whose Bind starts the batch.
    pub stmt: Arc<Statement>,
    /// Everything written to the server from that Bind on, up to the batch's Sync.
    pub bytes: bytes::BytesMut,
    /// The tracker slots of those bytes.
    pub slots: Vec<crate::proto::tracker::Slot>,
    /// Where the batch starts in the server's send queue, within the current call.
    pub from: Option<usize>,
    /// The Sync is in: the batch is whole.
    pub complete: bool,
}

/// Batches larger than this are not kept for a retry.
pub const REPLAY_MAX: usize = 64 * 1024;

/// A simple query the pooler handles itself or rewrites.
#[derive(Debug, PartialEq, Eq)]
pub enum SqlCommand {
    /// `PREPARE name rest`.
    Prepare { name: String, rest: String },
    /// `EXECUTE name rest`, after `prefix`: empty, or the `EXPLAIN ...` it is the
    /// statement of.
    Execute {
        prefix: String,
        name: String,
        rest: String,
    },
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate(String),
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
}

/// Recognises PREPARE / EXECUTE / DEALLOCATE when they are the whole query (one
/// statement, optionally ending in semicolons). Anything else is None and goes through.
pub fn sql_command(text: &str) -> Option<SqlCommand> {
    let text = text
        .trim()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let (kw, rest) = keyword(text)?;
    match kw.as_str() {
        "prepare" | "execute" => {
            let (name, rest) = identifier(rest)?;
            let rest = rest.trim_start();
            if has_top_level_semicolon(rest) {
                return None;
            }
            if kw == "prepare" {
                // What follows must be `(types) AS ...` or `AS ...`.
                let lower = rest.to_ascii_lowercase();
                if !(lower.starts_with('(') || lower.starts_with("as")) {
                    return None;
                }
                Some(SqlCommand::Prepare {
                    name,
                    rest: rest.to_string(),
                })
            } else {
                if !(rest.is_empty() || rest.starts_with('(')) {
                    return None;
                }
                Some(SqlCommand::Execute {
                    prefix: String::new(),
                    name,
                    rest: rest.to_string(),
                })
            }
        }
        "explain" => {
            // EXPLAIN [ ( option [, ...] ) ] EXECUTE ..., or the old EXPLAIN [ ANALYZE ]
            // [ VERBOSE ] EXECUTE ...: the statement is rewritten, the options kept.
            let inner = explain_options(rest)?;
            let prefix = &text[..text.len() - inner.len()];
            match sql_command(inner)? {
                SqlCommand::Execute {
                    prefix: p,
                    name,
                    rest,
                } if p.is_empty() => Some(SqlCommand::Execute {
                    prefix: prefix.to_string(),
                    name,
                    rest,
                }),
                _ => None,
            }
        }
        "deallocate" => {
            let rest = rest.trim_start();
            let rest = match keyword(rest) {
                Some((k, r)) if k == "prepare" => r.trim_start(),
                _ => rest,
            };
            if let Some((k, r)) = keyword(rest)
                && k == "all"
                && r.trim().is_empty()
            {
                return Some(SqlCommand::DeallocateAll);
            }
            let (name, r) = identifier(rest)?;
            r.trim().is_empty().then_some(SqlCommand::Deallocate(name))
        }
        _ => None,
    }
}

/// What follows EXPLAIN's options: a parenthesised list (quotes respected), or any of
/// the bare ANALYZE / ANALYSE / VERBOSE.
fn explain_options(s: &str) -> Option<&str> {
    let s = s.trim_start();
    if let Some(list) = s.strip_prefix('(') {
        let mut quote: Option<char> = None;
        for (i, c) in list.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c == '(' => return None,
                None if c == ')' => return Some(list[i + 1..].trim_start()),
                None => {}
            }
        }
        return None;
    }
    let mut rest = s;
    while let Some((kw, after)) = keyword(rest)
        && matches!(kw.as_str(), "analyze" | "analyse" | "verbose")
    {
        rest = after.trim_start();
    }
    Some(rest)
}

/// A leading keyword, lowercased, and what follows it.
fn keyword(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some((s[..end].to_ascii_lowercase(), &s[end..]))
}

/// An SQL identifier as PostgreSQL reads it: quoted (with "" for a quote) kept as is,
/// unquoted folded to lower case.
fn identifier(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(q) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if q[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return (!name.is_empty()).then(|| (name, &q[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    if end == 0 || s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((s[..end].to_lowercase(), &s[end..]))
}

/// Whether `s` holds a `;` outside quotes (a second statement we do not take apart).
fn has_top_level_semicolon(s: &str) -> bool {
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ';' => return true,
            None => {}
        }
    }
    false
}

/// A double-quoted identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_server_name() {
        let a = Statement::new(Prepare::Parse(b"select 1\0\0\0".to_vec()));
        let b = Statement::new(Prepare::Parse(b"select 1\0\0\0".to_vec()));
        let c = Statement::new(Prepare::Parse(b"select 2\0\0\0".to_vec()));
        let d = Statement::new(Prepare::Sql("AS select 1".into()));
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_ne!(a.server_name, d.server_name);
        assert!(a.server_name.len() < 64, "fits NAMEDATALEN");
    }

    #[test]
    fn sql_commands() {
        assert_eq!(
            sql_command("PREPARE foo(int) AS select $1;"),
            Some(SqlCommand::Prepare {
                name: "foo".into(),
                rest: "(int) AS select $1".into()
            })
        );
        assert_eq!(
            sql_command(" prepare \"Foo\"\"x\" as select 1"),
            Some(SqlCommand::Prepare {
                name: "Foo\"x".into(),
                rest: "as select 1".into()
            })
        );
        assert_eq!(
            sql_command("EXECUTE Foo (1, 'a;b')"),
            Some(SqlCommand::Execute {
                prefix: String::new(),
                name: "foo".into(),
                rest: "(1, 'a;b')".into()
            })
        );
        assert_eq!(
            sql_command("execute foo"),
            Some(SqlCommand::Execute {
                prefix: String::new(),
                name: "foo".into(),
                rest: String::new()
            })
        );
        for (q, prefix) in [
            ("explain execute foo(1)", "explain "),
            (
                "EXPLAIN ANALYZE VERBOSE EXECUTE foo(1);",
                "EXPLAIN ANALYZE VERBOSE ",
            ),
            (
                "EXPLAIN (ANALYZE, FORMAT 'json', COSTS OFF) execute Foo(1)",
                "EXPLAIN (ANALYZE, FORMAT 'json', COSTS OFF) ",
            ),
            ("explain(costs off)execute foo(1)", "explain(costs off)"),
        ] {
            assert_eq!(
                sql_command(q),
                Some(SqlCommand::Execute {
                    prefix: prefix.into(),
                    name: "foo".into(),
                    rest: "(1)".into()
                }),
                "{q}"
            );
        }
        assert_eq!(
            sql_command("DEALLOCATE PREPARE foo"),
            Some(SqlCommand::Deallocate("foo".into()))
        );
        assert_eq!(
            sql_command("deallocate all;"),
            Some(SqlCommand::DeallocateAll)
        );
        assert_eq!(
            sql_command("DEALLOCATE \"all\""),
            Some(SqlCommand::Deallocate("all".into()))
        );
        // Not ours: passed through.
        for q in [
            "select 1",
            "PREPARE foo AS select 1; select 2",
            "EXECUTE foo; EXECUTE bar",
            "explain select 1",
            "explain prepare foo as select 1",
            "explain explain execute foo",
            "explain (costs off execute foo",
            "explain (format ')') select 1",
            "explain analyze execute foo; select 1",
            "PREPARE 1x AS select 1",
            "PREPARE foo select 1",
            "DEALLOCATE",
            "prepare \"unterminated as select 1",
            "",
            ";",
        ] {
            assert_eq!(sql_command(q), None, "{q}");
        }
    }

    #[test]
    fn client_map_undo_only_matching() {
        let mut m = ClientStatements::default();
        let s = Statement::new(Prepare::Sql("AS select 1".into()));
        m.insert("a", s.clone());
        m.undo("a", "other");
        assert!(m.contains("a"));
        m.undo("a", &s.server_name);
        assert_eq!(m.len(), 0);
    }
}
