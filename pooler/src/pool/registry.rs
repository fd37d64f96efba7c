//! The set of pools, created on first use, and the limit groups they share.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use super::{Pool, PoolSettings, PoolState, limits::LimitGroup, lock};
use crate::server::Target;

/// Pools are per (client-facing database name, client user name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub db: String,
    pub user: String,
}

#[derive(Default)]
pub(crate) struct PoolsInner {
    map: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    db_groups: Mutex<HashMap<String, Arc<LimitGroup>>>,
    user_groups: Mutex<HashMap<String, Arc<LimitGroup>>>,
}

impl PoolsInner {
    pub(crate) fn all(&self) -> Vec<Arc<Pool>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[derive(Clone, Default)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

fn group(map: &Mutex<HashMap<String, Arc<LimitGroup>>>, name: &str, limit: u32) -> Arc<LimitGroup> {
    let mut m = lock(map);
    let g = m
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(LimitGroup::new(limit)));
    g.set_limit(limit);
    g.clone()
}

impl Pools {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.inner
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// The pool for `key`, created with `make()` if it does not exist yet.
    /// `db_limit`/`user_limit` are max_db_connections / max_user_connections (0 = none).
    pub fn get_or_create(
        &self,
        key: &PoolKey,
        db_limit: u32,
        user_limit: u32,
        make: impl FnOnce() -> (Arc<Target>, PoolSettings),
    ) -> Arc<Pool> {
        if let Some(p) = self.get(key) {
            return p;
        }
        let mut map = self.inner.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(key) {
            return p.clone();
        }
        let (target, settings) = make();
        let pool = Arc::new(Pool {
            key: key.clone(),
            target: Mutex::new(target),
            db_group: group(&self.inner.db_groups, &key.db, db_limit),
            user_group: group(&self.inner.user_groups, &key.user, user_limit),
            state: Mutex::new(PoolState {
                settings,
                idle: Vec::new(),
                waiters: Default::default(),
                active: 0,
                connecting: 0,
                login_error: None,
                paused: false,
                generation: 0,
            }),
            welcome: Mutex::new(None),
            scram_keys: Mutex::new(None),
            pools: Arc::downgrade(&self.inner),
            servers: Mutex::new(Vec::new()),
            totals: Default::default(),
            clients: Default::default(),
            statements_epoch: Default::default(),
            wait_hist: Default::default(),
            last_connect_ok: Default::default(),
        });
        map.insert(key.clone(), pool.clone());
        pool
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v = self.inner.all();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }
}
