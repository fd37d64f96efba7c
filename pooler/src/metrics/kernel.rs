//! `pooler_kernel_*` families: the figures of SHOW KERNEL_STATS and SHOW KERNEL_LATENCY
//! (global counters and both latency histograms) for Prometheus. Per-connection rows
//! (SHOW KERNEL_CLIENTS / KERNEL_SERVERS) stay in the console: one series per connection
//! would make a label of every client port.

use super::prometheus::{Out, number};
use crate::{
    app::App,
    kernel::{Hist, StatsRow},
};
use pooler_ebpf::HIST_BUCKETS;

const SIDES: [&str; 2] = ["client", "server"];

pub(super) fn families(out: &mut Out, app: &App) {
    let stats = app.kernel.stats();
    out.family(
        "pooler_kernel_active",
        "1 when the eBPF socket programs are attached (SHOW KERNEL_STATS says why not)",
        "gauge",
    );
    out.sample(
        "pooler_kernel_active",
        &[],
        f64::from(u8::from(stats.active)),
    );
    if !stats.active {
        return;
    }
    counters(out, &stats);
    if let Ok(hists) = app.kernel.histograms() {
        latency(out, &hists, &stats);
    }
}

fn counters(out: &mut Out, s: &StatsRow) {
    let per_side: [(&str, &str, [u64; 2]); 3] = [
        (
            "pooler_kernel_connections_established_total",
            "TCP connections established, seen by the kernel: passive (client) and active (server)",
            [s.client_established, s.server_established],
        ),
        (
            "pooler_kernel_connections_closed_total",
            "TCP connections closed, seen by the kernel",
            [s.client_closed, s.server_closed],
        ),
        (
            "pooler_kernel_requests_total",
            "Requests timed at the socket layer (first byte in to first byte of the reply out)",
            [s.client_requests, s.server_requests],
        ),
    ];
    for (name, help, values) in per_side {
        out.family(name, help, "counter");
        for (side, v) in SIDES.iter().zip(values) {
            out.sample(name, &[("side", side)], v as f64);
        }
    }
    let single: [(&str, &str, &str, u64); 9] = [
        (
            "pooler_kernel_connections_tracked",
            "Connections in the kernel's map now",
            "gauge",
            s.tracked,
        ),
        (
            "pooler_kernel_connections_capacity",
            "Capacity of the kernel's connection map",
            "gauge",
            s.capacity,
        ),
        (
            "pooler_kernel_retransmits_total",
            "TCP retransmissions on the pooler's sockets",
            "counter",
            s.retransmits,
        ),
        (
            "pooler_kernel_rtt_samples_total",
            "RTT samples taken (0 with ebpf_rtt_samples = false)",
            "counter",
            s.rtt_samples,
        ),
        (
            "pooler_kernel_duplicate_requests_total",
            "Request payloads seen again (retransmitted) and not timed twice",
            "counter",
            s.dup_requests,
        ),
        (
            "pooler_kernel_map_full_total",
            "Connections the kernel's map had no room for (not tracked)",
            "counter",
            s.map_full,
        ),
        (
            "pooler_kernel_ring_full_total",
            "Close records lost because the ring buffer was full",
            "counter",
            s.ring_full,
        ),
        (
            "pooler_kernel_received_bytes_total",
            "Bytes received on the pooler's sockets (live and closed connections)",
            "counter",
            s.bytes_received,
        ),
        (
            "pooler_kernel_acked_bytes_total",
            "Bytes sent and acknowledged by the peer on the pooler's sockets",
            "counter",
            s.bytes_acked,
        ),
    ];
    for (name, help, kind, v) in single {
        out.family(name, help, kind);
        out.sample(name, &[], v as f64);
    }
}

fn latency(out: &mut Out, hists: &[Hist; 2], s: &StatsRow) {
    let name = "pooler_kernel_request_latency_seconds";
    out.family(
        name,
        "Request latency at the socket layer: client side (the client's wait) and server side \
         (PostgreSQL's answer time as the pooler sees it)",
        "histogram",
    );
    for (side, h) in SIDES.iter().zip(hists) {
        let mut cumulative = 0u64;
        for (b, n) in h.buckets.iter().enumerate().take(HIST_BUCKETS - 1) {
            cumulative += n;
            let le = number(Hist::bounds_us(b).1 as f64 * 1e-6);
            out.sample(
                &format!("{name}_bucket"),
                &[("le", &le), ("side", side)],
                cumulative as f64,
            );
        }
        // The buckets and the count are separate per-CPU counters read one after the other:
        // the bucket total is the one consistent with the buckets.
        cumulative += h.buckets[HIST_BUCKETS - 1];
        let total = cumulative as f64;
        out.sample(
            &format!("{name}_bucket"),
            &[("le", "+Inf"), ("side", side)],
            total,
        );
        out.sample(
            &format!("{name}_sum"),
            &[("side", side)],
            h.sum_ns as f64 * 1e-9,
        );
        out.sample(&format!("{name}_count"), &[("side", side)], total);
    }
    let name = "pooler_kernel_overhead_seconds";
    out.family(
        name,
        "Mean client-side minus mean server-side request latency: what the pooler adds",
        "gauge",
    );
    out.sample(name, &[], s.avg_overhead_us as f64 * 1e-6);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_shows_only_the_active_gauge() {
        let config =
            crate::config::Config::parse_str("[pooler]\nauth_type = \"trust\"\n", None).unwrap();
        let app = App::new(config, None, crate::net::Backend::Epoll);
        let mut out = Out(String::new());
        families(&mut out, &app);
        assert!(out.0.ends_with("pooler_kernel_active 0\n"), "{}", out.0);
        assert!(!out.0.contains("pooler_kernel_connections"), "{}", out.0);
    }

    #[test]
    fn histogram_buckets_are_cumulative_seconds() {
        let mut client = Hist::default();
        client.buckets[0] = 1; // [0, 1) µs
        client.buckets[16] = 2; // [32768, 65536) µs
        client.buckets[HIST_BUCKETS - 1] = 1; // open-ended
        client.count = 4;
        client.sum_ns = 100_000_000;
        let stats = StatsRow {
            active: true,
            avg_overhead_us: 250,
            ..StatsRow::default()
        };
        let mut out = Out(String::new());
        latency(&mut out, &[client, Hist::default()], &stats);
        let text = out.0;
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} in {text}"))
                .to_string()
        };
        let b = "pooler_kernel_request_latency_seconds_bucket";
        assert!(line(&format!("{b}{{le=\"0.000001\",side=\"client\"}}")).ends_with(" 1"));
        assert!(line(&format!("{b}{{le=\"0.065536\",side=\"client\"}}")).ends_with(" 3"));
        assert!(line(&format!("{b}{{le=\"+Inf\",side=\"client\"}}")).ends_with(" 4"));
        assert!(line(&format!("{b}{{le=\"+Inf\",side=\"server\"}}")).ends_with(" 0"));
        assert!(
            line("pooler_kernel_request_latency_seconds_sum{side=\"client\"}").ends_with(" 0.1")
        );
        assert!(line("pooler_kernel_overhead_seconds").ends_with(" 0.00025"));
    }
}
