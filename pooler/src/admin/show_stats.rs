//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS (per-database traffic, as PgBouncer
//! reports it: every counter numeric) and our SHOW CLIENT_STATS (per client connection).

use std::collections::BTreeMap;

use super::{result::row, snapshot::Snapshot};
use crate::stats::TrafficValues;

/// Totals and averages per database, as stats::periodic computes them.
pub struct Stats {
    pub totals: BTreeMap<String, TrafficValues>,
    pub averages: BTreeMap<String, TrafficValues>,
}

impl Stats {
    fn avg(&self, db: &str) -> TrafficValues {
        self.averages.get(db).copied().unwrap_or_default()
    }
}

row! {
    pub struct StatsRow {
        database: Text,
        total_server_assignment_count: Numeric,
        total_xact_count: Numeric,
        total_query_count: Numeric,
        total_received: Numeric,
        total_sent: Numeric,
        total_xact_time: Numeric,
        total_query_time: Numeric,
        total_wait_time: Numeric,
        total_client_parse_count: Numeric,
        total_server_parse_count: Numeric,
        total_bind_count: Numeric,
        avg_server_assignment_count: Numeric,
        avg_xact_count: Numeric,
        avg_query_count: Numeric,
        avg_recv: Numeric,
        avg_sent: Numeric,
        avg_xact_time: Numeric,
        avg_query_time: Numeric,
        avg_wait_time: Numeric,
        avg_client_parse_count: Numeric,
        avg_server_parse_count: Numeric,
        avg_bind_count: Numeric,
    }
}

row! {
    pub struct TotalsRow {
        database: Text,
        server_assignment_count: Numeric,
        xact_count: Numeric,
        query_count: Numeric,
        bytes_received: Numeric,
        bytes_sent: Numeric,
        xact_time: Numeric,
        query_time: Numeric,
        wait_time: Numeric,
        client_parse_count: Numeric,
        server_parse_count: Numeric,
        bind_count: Numeric,
    }
}

row! {
    pub struct AveragesRow {
        database: Text,
        server_assignment_count: Numeric,
        xact_count: Numeric,
        query_count: Numeric,
        bytes_received: Numeric,
        bytes_sent: Numeric,
        xact_time: Numeric,
        query_time: Numeric,
        wait_time: Numeric,
        avg_client_parse_count: Numeric,
        avg_server_parse_count: Numeric,
        avg_bind_count: Numeric,
    }
}

row! {
    pub struct NameValueRow {
        name: Text,
        value: Numeric,
    }
}

row! {
    /// Ours: the counters of each client connection (times in µs).
    pub struct ClientStatsRow {
        id: Int8,
        user: Text,
        database: Text,
        application_name: Text,
        addr: Text,
        port: Int4,
        connect_time: Time,
        xact_count: Numeric,
        query_count: Numeric,
        bytes_received: Numeric,
        bytes_sent: Numeric,
        total_wait_time: Numeric,
        total_query_time: Numeric,
        total_xact_time: Numeric,
    }
}

pub fn stats(s: &Stats) -> Vec<StatsRow> {
    s.totals
        .iter()
        .map(|(db, t)| {
            let a = s.avg(db);
            StatsRow {
                database: db.clone(),
                total_server_assignment_count: t.server_assignments,
                total_xact_count: t.xacts,
                total_query_count: t.queries,
                total_received: t.received,
                total_sent: t.sent,
                total_xact_time: t.xact_time,
                total_query_time: t.query_time,
                total_wait_time: t.wait_time,
                total_client_parse_count: t.client_parses,
                total_server_parse_count: t.server_parses,
                total_bind_count: t.binds,
                avg_server_assignment_count: a.server_assignments,
                avg_xact_count: a.xacts,
                avg_query_count: a.queries,
                avg_recv: a.received,
                avg_sent: a.sent,
                avg_xact_time: a.xact_time,
                avg_query_time: a.query_time,
                avg_wait_time: a.wait_time,
                avg_client_parse_count: a.client_parses,
                avg_server_parse_count: a.server_parses,
                avg_bind_count: a.binds,
            }
        })
        .collect()
}

pub fn stats_totals(s: &Stats) -> Vec<TotalsRow> {
    s.totals
        .iter()
        .map(|(db, t)| TotalsRow {
            database: db.clone(),
            server_assignment_count: t.server_assignments,
            xact_count: t.xacts,
            query_count: t.queries,
            bytes_received: t.received,
            bytes_sent: t.sent,
            xact_time: t.xact_time,
            query_time: t.query_time,
            wait_time: t.wait_time,
            client_parse_count: t.client_parses,
            server_parse_count: t.server_parses,
            bind_count: t.binds,
        })
        .collect()
}

pub fn stats_averages(s: &Stats) -> Vec<AveragesRow> {
    s.totals
        .keys()
        .map(|db| {
            let a = s.avg(db);
            AveragesRow {
                database: db.clone(),
                server_assignment_count: a.server_assignments,
                xact_count: a.xacts,
                query_count: a.queries,
                bytes_received: a.received,
                bytes_sent: a.sent,
                xact_time: a.xact_time,
                query_time: a.query_time,
                wait_time: a.wait_time,
                avg_client_parse_count: a.client_parses,
                avg_server_parse_count: a.server_parses,
                avg_bind_count: a.binds,
            }
        })
        .collect()
}

/// SHOW TOTALS: every database together, PgBouncer's row names (named after its
/// internal counters: client bytes are the received ones).
pub fn totals(s: &Stats) -> Vec<NameValueRow> {
    let sum = |m: &BTreeMap<String, TrafficValues>| {
        m.values()
            .copied()
            .fold(TrafficValues::default(), |a, b| a + b)
    };
    let t = sum(&s.totals);
    // Averages of the sum: rates add up; per-event times are weighted by the events.
    let rows: Vec<TrafficValues> = s.totals.keys().map(|db| s.avg(db)).collect();
    let weighted = |time: fn(&TrafficValues) -> u64, count: fn(&TrafficValues) -> u64| {
        let n: u64 = rows.iter().map(count).sum();
        let total: u64 = rows.iter().map(|r| time(r).saturating_mul(count(r))).sum();
        total.checked_div(n).unwrap_or(0)
    };
    let a = TrafficValues {
        xact_time: weighted(|r| r.xact_time, |r| r.xacts),
        query_time: weighted(|r| r.query_time, |r| r.queries),
        wait_time: weighted(|r| r.wait_time, |r| r.server_assignments),
        ..rows
            .iter()
            .copied()
            .fold(TrafficValues::default(), |a, b| a + b)
    };
    let mut out = Vec::new();
    for (prefix, v) in [("total", t), ("avg", a)] {
        for (name, value) in [
            ("server_assignment_count", v.server_assignments),
            ("xact_count", v.xacts),
            ("query_count", v.queries),
            ("client_bytes", v.received),
            ("server_bytes", v.sent),
            ("xact_time", v.xact_time),
            ("query_time", v.query_time),
            ("wait_time", v.wait_time),
            ("ps_client_parse_count", v.client_parses),
            ("ps_server_parse_count", v.server_parses),
            ("ps_bind_count", v.binds),
        ] {
            out.push(NameValueRow {
                name: format!("{prefix}_{name}"),
                value,
            });
        }
    }
    out
}

pub fn client_stats(snap: &Snapshot) -> Vec<ClientStatsRow> {
    snap.clients
        .iter()
        .map(|c| ClientStatsRow {
            id: c.id as i64,
            user: c.user.clone(),
            database: c.database.clone(),
            application_name: c.application_name.clone(),
            addr: c.addr.clone(),
            port: i64::from(c.port),
            connect_time: c.connect_time,
            xact_count: c.stats.xacts,
            query_count: c.stats.queries,
            bytes_received: c.stats.received,
            bytes_sent: c.stats.sent,
            total_wait_time: c.stats.wait_time,
            total_query_time: c.stats.query_time,
            total_xact_time: c.stats.xact_time,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::testdata::{client, snapshot};

    fn tv(xacts: u64, xact_time: u64) -> TrafficValues {
        TrafficValues {
            xacts,
            queries: 2 * xacts,
            xact_time,
            received: 100,
            ..Default::default()
        }
    }

    fn sample() -> Stats {
        Stats {
            totals: [
                ("a".to_string(), tv(10, 1000)),
                ("b".to_string(), tv(5, 50)),
            ]
            .into(),
            averages: [("a".to_string(), tv(3, 30)), ("b".to_string(), tv(1, 10))].into(),
        }
    }

    #[test]
    fn per_database_rows() {
        let s = sample();
        let rows = stats(&s);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].database, "a");
        assert_eq!(rows[0].total_xact_count, 10);
        assert_eq!(rows[0].total_query_count, 20);
        assert_eq!(rows[0].avg_xact_count, 3);
        assert_eq!(rows[0].avg_xact_time, 30);
        assert_eq!(stats_totals(&s)[1].xact_time, 50);
        assert_eq!(stats_averages(&s)[1].xact_time, 10);
    }

    #[test]
    fn totals_sum_and_weight() {
        let rows = totals(&sample());
        let get = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.value);
        assert_eq!(rows.len(), 22);
        assert_eq!(get("total_xact_count"), Some(15));
        assert_eq!(get("total_client_bytes"), Some(200));
        assert_eq!(get("avg_xact_count"), Some(4));
        // (3 * 30 + 1 * 10) / 4
        assert_eq!(get("avg_xact_time"), Some(25));
    }

    #[test]
    fn client_stats_rows() {
        let mut snap = snapshot("", "");
        let mut c = client(9, "app", "bob", true);
        c.stats = tv(4, 400);
        c.application_name = "psql".into();
        snap.clients.push(c);
        let rows = client_stats(&snap);
        assert_eq!(rows[0].id, 9);
        assert_eq!(rows[0].xact_count, 4);
        assert_eq!(rows[0].total_xact_time, 400);
        assert_eq!(rows[0].application_name, "psql");
    }
}
