//! The prepared statements one server connection holds, under the pooler's names, with
//! least-recently-used eviction (bounded by max_prepared_statements).

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct ServerStatements {
    /// Name -> last use (a tick of this server's own clock).
    names: HashMap<String, u64>,
    tick: u64,
    /// A schema change made the server's plans stale ("cached plan must not change result
    /// type"): close and prepare again before the next use.
    stale: bool,
    /// The pool's statement epoch this cache was last checked against.
    pub epoch: u64,
}

impl ServerStatements {
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// If marked stale: forgets every statement and returns their names, to be closed on
    /// the server before anything is prepared again.
    pub fn take_stale(&mut self) -> Vec<String> {
        if !std::mem::take(&mut self.stale) {
            return Vec::new();
        }
        self.names.drain().map(|(n, _)| n).collect()
    }

    /// Whether the server has `name`; marks it used.
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.names.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// Records `name` as prepared. If that makes more than `cap`, returns the least
    /// recently used other statement, already forgotten: the caller closes it on the server.
    pub fn insert(&mut self, name: &str, cap: usize) -> Option<String> {
        self.tick += 1;
        self.names.insert(name.to_string(), self.tick);
        if self.names.len() <= cap.max(1) {
            return None;
        }
        let victim = self
            .names
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .min_by_key(|(_, t)| **t)
            .map(|(n, _)| n.clone())?;
        self.names.remove(&victim);
        Some(victim)
    }

    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }

    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::ServerStatements;

    #[test]
    fn evicts_least_recently_used() {
        let mut s = ServerStatements::default();
        assert_eq!(s.insert("a", 2), None);
        assert_eq!(s.insert("b", 2), None);
        assert!(s.touch("a"));
        assert_eq!(
            s.insert("c", 2),
            Some("b".into()),
            "b is the least recently used"
        );
        assert!(s.contains("a") && s.contains("c") && !s.contains("b"));
        assert!(!s.touch("b"));
        s.remove("a");
        assert_eq!(s.len(), 1);
        s.clear();
        assert!(s.is_empty());
    }
}
