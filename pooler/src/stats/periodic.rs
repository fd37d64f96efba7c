//! Per-database traffic totals for SHOW STATS, and the two snapshots `stats_period` apart
//! that its avg_* columns are computed from.
//!
//! A database's totals are its pools' totals (clients that left) plus its live clients'
//! counters. A leaving client is unregistered a moment before its counters move into the
//! pool's totals, so a reading can briefly miss it; totals are therefore reported
//! monotonically (never below what was reported before), since monitoring treats these
//! columns as counters and a dip would look like a reset.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{Traffic, TrafficValues};
use crate::app::App;

/// The console's database name in SHOW STATS.
pub const CONSOLE_DB: &str = "pgbouncer";

struct Snap {
    at: Instant,
    values: BTreeMap<String, TrafficValues>,
}

struct Inner {
    older: Snap,
    newer: Snap,
    /// The highest totals reported so far, per database.
    reported: BTreeMap<String, TrafficValues>,
}

pub struct Periodic {
    inner: Mutex<Inner>,
    /// Counters of console sessions that have ended (they belong to no pool).
    console: Traffic,
}

impl Default for Periodic {
    fn default() -> Self {
        let now = Instant::now();
        Periodic {
            inner: Mutex::new(Inner {
                older: Snap {
                    at: now,
                    values: BTreeMap::new(),
                },
                newer: Snap {
                    at: now,
                    values: BTreeMap::new(),
                },
                reported: BTreeMap::new(),
            }),
            console: Traffic::default(),
        }
    }
}

/// Field-wise maximum.
pub fn max_values(a: &TrafficValues, b: &TrafficValues) -> TrafficValues {
    TrafficValues {
        server_assignments: a.server_assignments.max(b.server_assignments),
        xacts: a.xacts.max(b.xacts),
        queries: a.queries.max(b.queries),
        received: a.received.max(b.received),
        sent: a.sent.max(b.sent),
        xact_time: a.xact_time.max(b.xact_time),
        query_time: a.query_time.max(b.query_time),
        wait_time: a.wait_time.max(b.wait_time),
        client_parses: a.client_parses.max(b.client_parses),
        server_parses: a.server_parses.max(b.server_parses),
        binds: a.binds.max(b.binds),
    }
}

impl Periodic {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A console session ended: keep its counters in the console's totals.
    pub fn console_left(&self, v: &TrafficValues) {
        self.console.absorb(v);
    }

    /// Current totals per database, straight from pools and clients.
    pub fn collect(&self, app: &App) -> BTreeMap<String, TrafficValues> {
        let mut out: BTreeMap<String, TrafficValues> = BTreeMap::new();
        for p in app.pools.all() {
            let e = out.entry(p.key.db.clone()).or_default();
            *e = *e + p.totals.values();
        }
        let mut console = self.console.values();
        for c in app.clients.all() {
            match c.pool.get() {
                Some(p) => {
                    let e = out.entry(p.key.db.clone()).or_default();
                    *e = *e + c.stats.values();
                }
                None if c.info.database == "pgbouncer" || c.info.database == "pooler" => {
                    console = console + c.stats.values();
                }
                // Still logging in: nothing counted yet.
                None => {}
            }
        }
        out.insert(CONSOLE_DB.to_string(), console);
        out
    }

    /// Totals per database as SHOW STATS reports them (monotonic, see the module doc).
    pub fn totals(&self, app: &App) -> BTreeMap<String, TrafficValues> {
        let current = self.collect(app);
        let mut inner = self.lock();
        Self::clamp(&mut inner.reported, current)
    }

    fn clamp(
        reported: &mut BTreeMap<String, TrafficValues>,
        current: BTreeMap<String, TrafficValues>,
    ) -> BTreeMap<String, TrafficValues> {
        let mut out = BTreeMap::new();
        for (db, v) in current {
            let r = reported.entry(db.clone()).or_default();
            *r = max_values(r, &v);
            out.insert(db, *r);
        }
        out
    }

    /// Takes a snapshot now: the newer one becomes the older one.
    pub fn tick(&self, app: &App) {
        let values = self.totals(app);
        let mut inner = self.lock();
        let newer = std::mem::replace(
            &mut inner.newer,
            Snap {
                at: Instant::now(),
                values,
            },
        );
        inner.older = newer;
    }

    /// Called every second or so: takes a snapshot when `stats_period` has passed since
    /// the last one.
    pub fn maybe_tick(&self, app: &App) {
        let period = app.config().pooler.stats_period.max(Duration::from_secs(1));
        let due = self.lock().newer.at.elapsed() >= period;
        if due {
            self.tick(app);
        }
    }

    /// avg_* values per database over the last completed period (zeros before the first).
    pub fn averages(&self) -> BTreeMap<String, TrafficValues> {
        let inner = self.lock();
        let secs = inner
            .newer
            .at
            .saturating_duration_since(inner.older.at)
            .as_secs_f64();
        inner
            .newer
            .values
            .iter()
            .map(|(db, v)| {
                let earlier = inner.older.values.get(db).copied().unwrap_or_default();
                (db.clone(), v.averages(&earlier, secs))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_never_go_down() {
        let mut reported = BTreeMap::new();
        let v = |x| TrafficValues {
            xacts: x,
            queries: 2 * x,
            ..Default::default()
        };
        let first = Periodic::clamp(&mut reported, [("a".to_string(), v(5))].into());
        assert_eq!(first["a"].xacts, 5);
        // A leaving client briefly missing from the sum:
        let dip = Periodic::clamp(&mut reported, [("a".to_string(), v(3))].into());
        assert_eq!(dip["a"].xacts, 5);
        let later = Periodic::clamp(&mut reported, [("a".to_string(), v(7))].into());
        assert_eq!(later["a"].queries, 14);
    }

    #[test]
    fn averages_span_the_two_snapshots() {
        let p = Periodic::default();
        {
            let mut inner = p.lock();
            let t0 = Instant::now();
            inner.older = Snap {
                at: t0,
                values: [(
                    "a".to_string(),
                    TrafficValues {
                        xacts: 10,
                        ..Default::default()
                    },
                )]
                .into(),
            };
            inner.newer = Snap {
                at: t0 + Duration::from_secs(10),
                values: [(
                    "a".to_string(),
                    TrafficValues {
                        xacts: 110,
                        xact_time: 500,
                        ..Default::default()
                    },
                )]
                .into(),
            };
        }
        let avg = p.averages();
        assert_eq!(avg["a"].xacts, 10, "per second");
        assert_eq!(avg["a"].xact_time, 5, "µs per transaction");
        assert!(Periodic::default().averages().is_empty());
    }
}
