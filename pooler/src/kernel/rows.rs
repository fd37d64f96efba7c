//! What SHOW KERNEL_* print, computed from plain kernel figures so it can be tested
//! without a kernel.

use pooler_ebpf::{Conn, Globals, HIST_BUCKETS, Hist, types};

use crate::stats::now_micros;

/// The two clocks at one instant, to turn the kernel's monotonic timestamps into wall time.
pub(super) struct Clock {
    mono_ns: u64,
    epoch_us: u64,
}

impl Clock {
    pub(super) fn now() -> Clock {
        Clock {
            mono_ns: pooler_ebpf::monotonic_ns(),
            epoch_us: now_micros(),
        }
    }

    /// µs since the epoch of a bpf_ktime_get_ns() value.
    fn wall_us(&self, mono_ns: u64) -> u64 {
        self.epoch_us
            .saturating_sub(self.mono_ns.saturating_sub(mono_ns) / 1000)
    }
}

/// One row of SHOW KERNEL_CLIENTS / KERNEL_SERVERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRow {
    /// Matches SHOW CLIENTS / SHOW SERVERS; None for a connection not logged in (yet).
    pub id: Option<u64>,
    pub cookie: u64,
    pub addr: String,
    pub port: u16,
    pub local_port: u16,
    /// µs since the epoch.
    pub connect_time: u64,
    pub state: &'static str,
    pub srtt_us: u64,
    pub rtt_samples: u64,
    pub retransmits: u64,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub segs_in: u64,
    pub segs_out: u64,
    pub requests: u64,
    pub avg_latency_us: u64,
    pub max_latency_us: u64,
}

pub(super) fn conn_row(cookie: u64, c: &Conn, id: Option<u64>, clock: &Clock) -> ConnRow {
    ConnRow {
        id,
        cookie,
        addr: c.remote_addr().to_string(),
        port: c.remote_port,
        local_port: c.local_port,
        connect_time: clock.wall_us(c.established_ns),
        state: types::tcp_state_name(c.state),
        srtt_us: c.srtt_us.into(),
        rtt_samples: c.rtt_samples,
        retransmits: c.retransmits.into(),
        bytes_received: c.bytes_received,
        bytes_acked: c.bytes_acked,
        segs_in: c.segs_in.into(),
        segs_out: c.segs_out.into(),
        requests: c.requests,
        avg_latency_us: c.latency_sum_ns.checked_div(c.requests).unwrap_or(0) / 1000,
        max_latency_us: c.latency_max_ns / 1000,
    }
}

/// The one row of SHOW KERNEL_STATS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsRow {
    pub active: bool,
    /// Why eBPF is off ("" when active).
    pub reason: String,
    /// The cgroup v2 path the programs are attached to.
    pub cgroup: String,
    pub rtt_sampling: bool,
    /// Passive opens (clients) and active opens (servers) seen since start.
    pub client_established: u64,
    pub server_established: u64,
    pub client_closed: u64,
    pub server_closed: u64,
    /// Connections in the map now, and its capacity.
    pub tracked: u64,
    pub capacity: u64,
    pub retransmits: u64,
    pub rtt_samples: u64,
    pub client_requests: u64,
    pub server_requests: u64,
    /// Request payload seen again (a retransmission) and not timed twice.
    pub dup_requests: u64,
    /// Connections the map had no room for.
    pub map_full: u64,
    /// Close records lost because the pooler had not drained the ring in time.
    pub ring_full: u64,
    /// Close records folded into the totals.
    pub harvested: u64,
    /// Over every connection, live and closed.
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub avg_client_latency_us: u64,
    pub avg_server_latency_us: u64,
    /// Client-side minus server-side mean: what the pooler adds per request.
    pub avg_overhead_us: i64,
}

impl StatsRow {
    pub(super) fn off(reason: &str) -> StatsRow {
        StatsRow {
            reason: reason.to_string(),
            ..Default::default()
        }
    }
}

fn mean_us(h: &Hist) -> u64 {
    h.sum_ns.checked_div(h.count).unwrap_or(0) / 1000
}

fn signed_diff(a: u64, b: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn stats_row(
    cgroup: &str,
    rtt_sampling: bool,
    capacity: u32,
    g: &Globals,
    hists: &[Hist; 2],
    harvested: u64,
    closed_bytes_received: u64,
    closed_bytes_acked: u64,
    live: &[(u64, Conn)],
) -> StatsRow {
    let [client, server] = hists;
    let (client_us, server_us) = (mean_us(client), mean_us(server));
    StatsRow {
        active: true,
        reason: String::new(),
        cgroup: cgroup.to_string(),
        rtt_sampling,
        client_established: g.client_established,
        server_established: g.server_established,
        client_closed: g.client_closed,
        server_closed: g.server_closed,
        tracked: live.len() as u64,
        capacity: capacity.into(),
        retransmits: g.retransmits,
        rtt_samples: g.rtt_samples,
        client_requests: g.client_requests,
        server_requests: g.server_requests,
        dup_requests: g.dup_requests,
        map_full: g.map_full,
        ring_full: g.ring_full,
        harvested,
        bytes_received: closed_bytes_received
            + live.iter().map(|(_, c)| c.bytes_received).sum::<u64>(),
        bytes_acked: closed_bytes_acked + live.iter().map(|(_, c)| c.bytes_acked).sum::<u64>(),
        avg_client_latency_us: client_us,
        avg_server_latency_us: server_us,
        avg_overhead_us: signed_diff(client_us, server_us),
    }
}

/// One row of SHOW KERNEL_LATENCY: a histogram bucket, or a summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyRow {
    /// "[lower, upper) us" for a bucket; "requests", "avg_us", "p50_us"... for summaries.
    pub bucket: String,
    /// Bucket bounds in µs; None on summary rows (and `upper` on the open-ended last one).
    pub lower_us: Option<u64>,
    pub upper_us: Option<u64>,
    /// Request counts on bucket rows and "requests"; µs on the other summary rows.
    pub client: u64,
    pub server: u64,
    /// client - server on the µs summary rows, None elsewhere.
    pub overhead_us: Option<i64>,
}

/// The value below which `q` of the requests fall, interpolated linearly inside its
/// log2 bucket (so accurate to within that bucket).
fn percentile_us(h: &Hist, q: f64) -> u64 {
    if h.count == 0 {
        return 0;
    }
    let target = (h.count as f64 * q).ceil().max(1.0);
    let mut seen = 0.0;
    for (b, &n) in h.buckets.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let n = n as f64;
        if seen + n >= target {
            let (lower, upper) = Hist::bounds_us(b);
            // The open last bucket has no upper bound: report its lower one.
            if upper == u64::MAX {
                return lower;
            }
            let within = (target - seen) / n;
            return lower + ((upper - lower) as f64 * within) as u64;
        }
        seen += n;
    }
    0
}

pub(super) fn latency_rows(client: &Hist, server: &Hist) -> Vec<LatencyRow> {
    let used = |b: &usize| client.buckets[*b] + server.buckets[*b] > 0;
    let first = (0..HIST_BUCKETS).find(used);
    let last = (0..HIST_BUCKETS).rev().find(used);
    let mut out = Vec::new();
    if let (Some(first), Some(last)) = (first, last) {
        // Every bucket between the first and the last used one, so the shape reads right.
        for b in first..=last {
            let (lower, upper) = Hist::bounds_us(b);
            let upper = (upper != u64::MAX).then_some(upper);
            out.push(LatencyRow {
                bucket: match upper {
                    Some(u) => format!("[{lower}, {u}) us"),
                    None => format!("[{lower}, inf) us"),
                },
                lower_us: Some(lower),
                upper_us: upper,
                client: client.buckets[b],
                server: server.buckets[b],
                overhead_us: None,
            });
        }
    }
    out.push(LatencyRow {
        bucket: "requests".into(),
        lower_us: None,
        upper_us: None,
        client: client.count,
        server: server.count,
        overhead_us: None,
    });
    let summary = |name: &str, c: u64, s: u64| LatencyRow {
        bucket: name.into(),
        lower_us: None,
        upper_us: None,
        client: c,
        server: s,
        overhead_us: Some(signed_diff(c, s)),
    };
    out.push(summary("avg_us", mean_us(client), mean_us(server)));
    for (name, q) in [("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99)] {
        out.push(summary(
            name,
            percentile_us(client, q),
            percentile_us(server, q),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(samples_us: &[u64]) -> Hist {
        let mut h = Hist::default();
        for &us in samples_us {
            let b = if us == 0 {
                0
            } else {
                (64 - us.leading_zeros() as usize).min(HIST_BUCKETS - 1)
            };
            h.buckets[b] += 1;
            h.count += 1;
            h.sum_ns += us * 1000;
        }
        h
    }

    #[test]
    fn latency_rows_span_used_buckets_and_summarise() {
        // 50 ms on the client side, 49.5 ms on the server side: 500 µs of overhead.
        let client = hist(&[50_000, 50_000, 3]);
        let server = hist(&[49_500, 49_500]);
        let rows = latency_rows(&client, &server);
        let first = &rows[0];
        assert_eq!(first.bucket, "[2, 4) us");
        assert_eq!((first.client, first.server), (1, 0));
        let b50 = rows
            .iter()
            .find(|r| r.lower_us == Some(32768))
            .expect("the 50 ms bucket");
        assert_eq!((b50.client, b50.server), (2, 2));
        assert_eq!(b50.upper_us, Some(65536));
        let get = |name: &str| rows.iter().find(|r| r.bucket == name).expect(name).clone();
        assert_eq!((get("requests").client, get("requests").server), (3, 2));
        let avg = get("avg_us");
        assert_eq!(avg.client, 100_003 / 3);
        assert_eq!(avg.server, 49_500);
        assert_eq!(avg.overhead_us, Some(100_003 / 3 - 49_500));
        // p99 of the server side lies in the 32768..65536 µs bucket (its top included).
        let p99 = get("p99_us");
        assert!((32768..=65536).contains(&p99.server), "{p99:?}");
    }

    #[test]
    fn empty_histograms_still_answer() {
        let rows = latency_rows(&Hist::default(), &Hist::default());
        assert_eq!(rows.len(), 5);
        assert!(rows.iter().all(|r| r.client == 0 && r.server == 0));
    }

    #[test]
    fn conn_rows_convert_units_and_clock() {
        let clock = Clock {
            mono_ns: 10_000_000_000,
            epoch_us: 1_700_000_000_000_000,
        };
        let mut c = Conn {
            established_ns: 9_000_000_000,
            family: libc::AF_INET as u32,
            side: types::SIDE_CLIENT,
            remote_port: 40000,
            local_port: 6432,
            state: 1,
            srtt_us: 25,
            requests: 4,
            latency_sum_ns: 4_000_000,
            latency_max_ns: 2_500_000,
            ..Default::default()
        };
        c.remote_ip[0] = u32::from_ne_bytes([127, 0, 0, 1]);
        let row = conn_row(7, &c, Some(3), &clock);
        assert_eq!(row.connect_time, 1_700_000_000_000_000 - 1_000_000);
        assert_eq!((row.addr.as_str(), row.port), ("127.0.0.1", 40000));
        assert_eq!((row.avg_latency_us, row.max_latency_us), (1000, 2500));
        assert_eq!(row.state, "ESTAB");
        assert_eq!(row.id, Some(3));
    }

    #[test]
    fn stats_overhead_is_client_minus_server() {
        let g = Globals {
            client_established: 2,
            ..Default::default()
        };
        let row = stats_row(
            "/x",
            false,
            100,
            &g,
            &[hist(&[1000]), hist(&[1200])],
            0,
            5,
            6,
            &[],
        );
        assert!(row.active);
        assert_eq!(row.avg_overhead_us, -200);
        assert_eq!((row.bytes_received, row.bytes_acked), (5, 6));
        assert_eq!(StatsRow::off("why").reason, "why");
    }
}
