//! Counters written on the data path with plain single-writer stores and read by the
//! admin console and exporters. Nothing on the hot path waits for a reader: a client's
//! counters are written only by the worker running that client; a pool's totals absorb a
//! client's counters once, when the client leaves.

pub mod periodic;

use std::{
    sync::atomic::{AtomicU8, AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Microseconds since the Unix epoch (for connect_time / request_time columns).
pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn now_micros() -> u64 {
    unix_micros(SystemTime::now())
}

/// One counter with a single writer: `add` is a load and a store (no locked
/// read-modify-write), readers see a recent value.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    /// For counters with several writers (pool totals).
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Traffic counters, kept per client and totalled per pool. Times are microseconds.
#[derive(Debug, Default)]
pub struct Traffic {
    pub server_assignments: Counter,
    pub xacts: Counter,
    pub queries: Counter,
    pub received: Counter,
    pub sent: Counter,
    pub xact_time: Counter,
    pub query_time: Counter,
    pub wait_time: Counter,
    pub client_parses: Counter,
    pub server_parses: Counter,
    pub binds: Counter,
}

/// A plain copy of [`Traffic`], for arithmetic in reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrafficValues {
    pub server_assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

macro_rules! traffic_fields {
    ($m:ident) => {
        $m!(server_assignments);
        $m!(xacts);
        $m!(queries);
        $m!(received);
        $m!(sent);
        $m!(xact_time);
        $m!(query_time);
        $m!(wait_time);
        $m!(client_parses);
        $m!(server_parses);
        $m!(binds);
    };
}

impl Traffic {
    pub fn values(&self) -> TrafficValues {
        let mut v = TrafficValues::default();
        macro_rules! read {
            ($f:ident) => {
                v.$f = self.$f.get();
            };
        }
        traffic_fields!(read);
        v
    }

    /// Adds a finished client's counters (several writers: atomic adds).
    pub fn absorb(&self, v: &TrafficValues) {
        macro_rules! add {
            ($f:ident) => {
                self.$f.add_shared(v.$f);
            };
        }
        traffic_fields!(add);
    }
}

impl std::ops::Add for TrafficValues {
    type Output = TrafficValues;
    fn add(mut self, o: TrafficValues) -> TrafficValues {
        macro_rules! add {
            ($f:ident) => {
                self.$f = self.$f.wrapping_add(o.$f);
            };
        }
        traffic_fields!(add);
        self
    }
}

impl TrafficValues {
    /// Per-second rates (counts) and per-event averages (times) between two snapshots
    /// `period_secs` apart, as PgBouncer's avg_* columns define them.
    pub fn averages(&self, earlier: &TrafficValues, period_secs: f64) -> TrafficValues {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let per_sec = |n: u64| {
            if period_secs > 0.0 {
                (n as f64 / period_secs).round() as u64
            } else {
                0
            }
        };
        let per = |t: u64, n: u64| t.checked_div(n).unwrap_or(0);
        let xacts = d(self.xacts, earlier.xacts);
        let queries = d(self.queries, earlier.queries);
        let assignments = d(self.server_assignments, earlier.server_assignments);
        TrafficValues {
            server_assignments: per_sec(assignments),
            xacts: per_sec(xacts),
            queries: per_sec(queries),
            received: per_sec(d(self.received, earlier.received)),
            sent: per_sec(d(self.sent, earlier.sent)),
            xact_time: per(d(self.xact_time, earlier.xact_time), xacts),
            query_time: per(d(self.query_time, earlier.query_time), queries),
            wait_time: per(d(self.wait_time, earlier.wait_time), assignments),
            client_parses: per_sec(d(self.client_parses, earlier.client_parses)),
            server_parses: per_sec(d(self.server_parses, earlier.server_parses)),
            binds: per_sec(d(self.binds, earlier.binds)),
        }
    }
}

/// State of a client as SHOW CLIENTS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logged in; linked to a server or idle between transactions.
    Active = 0,
    /// Queued for a server.
    Waiting = 1,
    /// Still logging in.
    Login = 2,
}

/// State of a server connection as SHOW SERVERS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Login = 0,
    Active = 1,
    Idle = 2,
    /// Being cleaned up after its client left (rollback, reset).
    Used = 3,
}

/// A state cell for one of the enums above.
#[derive(Debug, Default)]
pub struct StateCell(AtomicU8);

impl StateCell {
    pub fn set_client(&self, s: ClientState) {
        self.0.store(s as u8, Ordering::Relaxed);
    }
    pub fn client(&self) -> ClientState {
        match self.0.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Login,
            _ => ClientState::Active,
        }
    }
    pub fn set_server(&self, s: ServerState) {
        self.0.store(s as u8, Ordering::Relaxed);
    }
    pub fn server(&self) -> ServerState {
        match self.0.load(Ordering::Relaxed) {
            0 => ServerState::Login,
            1 => ServerState::Active,
            3 => ServerState::Used,
            _ => ServerState::Idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_follow_pgbouncer_definitions() {
        let a = TrafficValues {
            xacts: 100,
            queries: 200,
            xact_time: 1000,
            query_time: 4000,
            server_assignments: 10,
            wait_time: 50,
            received: 600,
            ..Default::default()
        };
        let b = TrafficValues {
            xacts: 400,
            queries: 800,
            xact_time: 4000,
            query_time: 10_000,
            server_assignments: 20,
            wait_time: 150,
            received: 1200,
            ..Default::default()
        };
        let avg = b.averages(&a, 60.0);
        assert_eq!(avg.xacts, 5);
        assert_eq!(avg.queries, 10);
        assert_eq!(avg.xact_time, 10, "µs per transaction");
        assert_eq!(avg.query_time, 10, "µs per query");
        assert_eq!(avg.wait_time, 10, "µs per assignment");
        assert_eq!(avg.received, 10);
        assert_eq!(b.averages(&b, 60.0), TrafficValues::default());
    }

    #[test]
    fn counters_absorb_and_add() {
        let t = Traffic::default();
        t.xacts.add(3);
        t.absorb(&TrafficValues {
            xacts: 2,
            ..Default::default()
        });
        assert_eq!(t.values().xacts, 5);
        let s = t.values() + t.values();
        assert_eq!(s.xacts, 10);
    }
}
