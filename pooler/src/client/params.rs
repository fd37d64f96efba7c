//! Per-client values of the tracked parameters, and the SET statements that bring a
//! server in line with them before the client's first query on it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use crate::pool::ServerInfo;

/// Names and values are shared between clients (nearly all clients carry the same few
/// values: "UTF8", "ISO, MDY", the server's TimeZone...), so an idle client holds
/// pointers rather than copies. At most this many distinct strings, of at most
/// SHARED_LEN bytes, are shared; any other is the client's own, so clients sending ever
/// new or long values cannot grow the shared set past a few hundred kB.
const SHARED_STRINGS: usize = 4096;
const SHARED_LEN: usize = 64;

fn shared(s: &str) -> Arc<str> {
    if s.len() > SHARED_LEN {
        return Arc::from(s);
    }
    static SET: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);
    let mut guard = SET.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(found) = set.get(s) {
        return found.clone();
    }
    let new: Arc<str> = Arc::from(s);
    if set.len() < SHARED_STRINGS {
        set.insert(new.clone());
    }
    new
}

/// At most this many distinct parameter sets are shared between clients.
const SHARED_SETS: usize = 1024;

type Values = Vec<(Arc<str>, Arc<str>)>;

/// The same for whole sets: clients of one application usually log in with identical
/// parameters, and then share one list (copied on a client's first SET).
fn shared_set(values: Arc<Values>, fingerprint: u64) -> Arc<Values> {
    static SETS: Mutex<Option<std::collections::HashMap<u64, Arc<Values>>>> = Mutex::new(None);
    let mut guard = SETS.lock().unwrap_or_else(|e| e.into_inner());
    let sets = guard.get_or_insert_with(Default::default);
    match sets.get(&fingerprint) {
        Some(found) if **found == *values => found.clone(),
        Some(_) => values,
        None => {
            if sets.len() < SHARED_SETS {
                sets.insert(fingerprint, values.clone());
            }
            values
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// Canonical name, value; shared with other clients holding the same set.
    values: Arc<Values>,
    /// Hash of `values`, never 0; recomputed when a value changes (rare), compared with
    /// the server's `synced` at every link (often).
    fingerprint: u64,
}

impl ClientParams {
    /// The client starts with what the server greeted it with (for tracked names), then
    /// its own startup values on top.
    pub fn new(
        welcome: &[(String, String)],
        startup: &[(String, String)],
        tracked: impl Fn(&str) -> Option<String>,
    ) -> ClientParams {
        let mut p = ClientParams::default();
        for (n, v) in welcome {
            if let Some(canon) = tracked(n) {
                p.set(&canon, v);
            }
        }
        for (n, v) in startup {
            p.set(n, v);
        }
        Arc::make_mut(&mut p.values).shrink_to_fit();
        p.values = shared_set(p.values, p.fingerprint);
        p
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        let at = self
            .values
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name));
        if let Some(i) = at
            && &*self.values[i].1 == value
        {
            return;
        }
        let values = Arc::make_mut(&mut self.values);
        match at {
            Some(i) => values[i].1 = shared(value),
            None => values.push((shared(name), shared(value))),
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.values.hash(&mut h);
        self.fingerprint = h.finish().max(1);
    }

    /// The greeting for this client: the server's parameters with the client's own values
    /// in place of the server's.
    pub fn greeting(&self, welcome: &[(String, String)]) -> Vec<(String, String)> {
        welcome
            .iter()
            .map(|(n, v)| (n.clone(), self.get(n).unwrap_or(v).to_string()))
            .collect()
    }

    /// `SET` statements for every tracked value the server does not have, or None when
    /// the server already matches. Applies the values to `server` (they take effect with
    /// the statements, which run before anything of the client's).
    pub fn sync(&self, server: &mut ServerInfo) -> Option<String> {
        if self.fingerprint != 0 && server.synced == self.fingerprint {
            return None;
        }
        let mut sql = String::new();
        for (name, value) in self.values.iter() {
            if server.param(name) == Some(&**value) {
                continue;
            }
            sql.push_str("SET ");
            sql.push_str(&quote_ident(name));
            sql.push_str(" TO ");
            sql.push_str(&quote_literal(value));
            sql.push(';');
            server.set_param(name, value);
        }
        server.synced = self.fingerprint;
        (!sql.is_empty()).then_some(sql)
    }
}

/// A double-quoted identifier (GUC names are matched case-insensitively either way).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\0', "").replace('"', "\"\""))
}

/// A string literal that reads the same whatever standard_conforming_strings is.
pub fn quote_literal(s: &str) -> String {
    let s = s.replace('\0', "");
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn short_strings_are_shared_long_ones_are_not() {
        let (a, b) = (shared("ISO, MDY"), shared("ISO, MDY"));
        assert!(Arc::ptr_eq(&a, &b));
        let long = "x".repeat(SHARED_LEN + 1);
        assert!(!Arc::ptr_eq(&shared(&long), &shared(&long)));
        assert_eq!(&*shared(&long), long.as_str());
    }

    use super::*;

    fn server(params: &[(&str, &str)]) -> ServerInfo {
        let mut info = ServerInfo::new("test".into());
        info.params = params
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        info
    }

    fn tracked(n: &str) -> Option<String> {
        ["TimeZone", "DateStyle", "application_name", "search_path"]
            .iter()
            .find(|t| t.eq_ignore_ascii_case(n))
            .map(|t| t.to_string())
    }

    #[test]
    fn identical_sets_are_shared_until_one_changes() {
        let welcome = vec![("TimeZone".to_string(), "UTC".to_string())];
        let startup = [(
            "application_name".to_string(),
            "shared-set-test".to_string(),
        )];
        let a = ClientParams::new(&welcome, &startup, tracked);
        let mut b = ClientParams::new(&welcome, &startup, tracked);
        assert!(
            Arc::ptr_eq(&a.values, &b.values),
            "one list for both clients"
        );
        b.set("TimeZone", "Asia/Tokyo");
        assert!(!Arc::ptr_eq(&a.values, &b.values));
        assert_eq!(
            a.get("TimeZone"),
            Some("UTC"),
            "the other client's copy is untouched"
        );
        assert_eq!(b.get("TimeZone"), Some("Asia/Tokyo"));
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn startup_values_override_welcome() {
        let welcome = vec![
            ("TimeZone".to_string(), "UTC".to_string()),
            ("server_version".to_string(), "15".to_string()),
        ];
        let p = ClientParams::new(
            &welcome,
            &[("TimeZone".into(), "Asia/Tokyo".into())],
            tracked,
        );
        assert_eq!(p.get("timezone"), Some("Asia/Tokyo"));
        assert_eq!(p.get("server_version"), None, "not tracked");
        assert_eq!(
            p.greeting(&welcome),
            vec![
                ("TimeZone".into(), "Asia/Tokyo".into()),
                ("server_version".into(), "15".into())
            ]
        );
    }

    #[test]
    fn sync_sets_only_differences() {
        let mut p = ClientParams::default();
        p.set("TimeZone", "Asia/Tokyo");
        p.set("DateStyle", "ISO, MDY");
        p.set("application_name", "it's");
        let mut s = server(&[
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO, MDY"),
            ("application_name", ""),
        ]);
        let sql = p.sync(&mut s).unwrap();
        assert_eq!(
            sql,
            "SET \"TimeZone\" TO 'Asia/Tokyo';SET \"application_name\" TO 'it''s';"
        );
        assert_eq!(s.param("TimeZone"), Some("Asia/Tokyo"));
        assert_eq!(p.sync(&mut s), None, "in line after the first sync");
    }

    #[test]
    fn literal_quoting() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
