//! `#[repr(C)]` mirrors of bpf/common.h: what the kernel programs write and the pooler reads.

/// Log2 latency buckets (µs): bucket 0 is < 1 µs, bucket b >= 1 is [2^(b-1), 2^b) µs.
pub const HIST_BUCKETS: usize = 32;

/// `side` of a connection accepted by the pooler (passive open).
pub const SIDE_CLIENT: u32 = 1;
/// `side` of a connection the pooler opened to a server (active open).
pub const SIDE_SERVER: u32 = 2;

/// Index of each side's histogram in the latency map.
pub const HIST_CLIENT: u32 = 0;
pub const HIST_SERVER: u32 = 1;

/// struct pooler_conn: one live connection, keyed by socket cookie.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conn {
    pub established_ns: u64,
    pub closed_ns: u64,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub rtt_samples: u64,
    pub requests: u64,
    pub latency_sum_ns: u64,
    pub latency_max_ns: u64,
    pub request_start_ns: u64,
    /// Network order, as the kernel stores it; IPv4 in `[0]`.
    pub remote_ip: [u32; 4],
    pub family: u32,
    pub side: u32,
    pub remote_port: u16,
    pub local_port: u16,
    pub state: u32,
    pub srtt_us: u32,
    pub retransmits: u32,
    pub segs_in: u32,
    pub segs_out: u32,
    pub request_seq_end: u32,
    pub reply_seq_end: u32,
    pub seq_flags: u32,
    pub dup_requests: u32,
}

/// struct pooler_closed: the ring-buffer record of a connection that closed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Closed {
    pub cookie: u64,
    pub conn: Conn,
}

/// struct pooler_globals: counters, one copy per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Globals {
    pub client_established: u64,
    pub server_established: u64,
    pub client_closed: u64,
    pub server_closed: u64,
    pub retransmits: u64,
    pub rtt_samples: u64,
    pub client_requests: u64,
    pub server_requests: u64,
    pub dup_requests: u64,
    pub map_full: u64,
    pub ring_full: u64,
}

/// struct pooler_latency: count and sum of one side's latencies, one copy per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub sum_ns: u64,
}

/// One side's latency histogram as the reader assembles it from `pooler_latency` and the
/// side's entries of `pooler_buckets` (not a kernel type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hist {
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: [u64; HIST_BUCKETS],
}

// SAFETY: plain #[repr(C)] structs of integers with no padding (checked by the layout
// test), so any bit pattern the kernel writes is a valid value.
unsafe impl aya::Pod for Conn {}
unsafe impl aya::Pod for Closed {}
unsafe impl aya::Pod for Globals {}
unsafe impl aya::Pod for Latency {}

impl Globals {
    /// Field-wise sum, to fold the per-CPU copies.
    pub fn add(&mut self, o: &Globals) {
        self.client_established += o.client_established;
        self.server_established += o.server_established;
        self.client_closed += o.client_closed;
        self.server_closed += o.server_closed;
        self.retransmits += o.retransmits;
        self.rtt_samples += o.rtt_samples;
        self.client_requests += o.client_requests;
        self.server_requests += o.server_requests;
        self.dup_requests += o.dup_requests;
        self.map_full += o.map_full;
        self.ring_full += o.ring_full;
    }
}

impl Hist {
    /// [lower, upper) bounds of bucket `b` in µs (upper = u64::MAX for the last one).
    pub fn bounds_us(b: usize) -> (u64, u64) {
        let lower = if b == 0 { 0 } else { 1u64 << (b - 1) };
        let upper = if b + 1 >= HIST_BUCKETS {
            u64::MAX
        } else {
            1u64 << b
        };
        (lower, upper)
    }
}

/// Kernel TCP state names (BPF_TCP_*), as `ss` prints them.
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW-SYN-RECV",
        _ => "UNKNOWN",
    }
}

impl Conn {
    /// The peer's address (IPv4-mapped IPv6 shown as IPv4).
    pub fn remote_addr(&self) -> std::net::IpAddr {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        if self.family == libc::AF_INET as u32 {
            return IpAddr::V4(Ipv4Addr::from(self.remote_ip[0].to_ne_bytes()));
        }
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(self.remote_ip.iter()) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        let v6 = Ipv6Addr::from(octets);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    include!(concat!(env!("OUT_DIR"), "/layout.rs"));

    /// Our view of the layout, in the order layout.c prints it.
    fn rust_layout() -> Vec<(&'static str, usize)> {
        vec![
            ("pooler_conn", size_of::<Conn>()),
            (
                "pooler_conn.established_ns",
                offset_of!(Conn, established_ns),
            ),
            ("pooler_conn.closed_ns", offset_of!(Conn, closed_ns)),
            (
                "pooler_conn.bytes_received",
                offset_of!(Conn, bytes_received),
            ),
            ("pooler_conn.bytes_acked", offset_of!(Conn, bytes_acked)),
            ("pooler_conn.rtt_samples", offset_of!(Conn, rtt_samples)),
            ("pooler_conn.requests", offset_of!(Conn, requests)),
            (
                "pooler_conn.latency_sum_ns",
                offset_of!(Conn, latency_sum_ns),
            ),
            (
                "pooler_conn.latency_max_ns",
                offset_of!(Conn, latency_max_ns),
            ),
            (
                "pooler_conn.request_start_ns",
                offset_of!(Conn, request_start_ns),
            ),
            ("pooler_conn.remote_ip", offset_of!(Conn, remote_ip)),
            ("pooler_conn.family", offset_of!(Conn, family)),
            ("pooler_conn.side", offset_of!(Conn, side)),
            ("pooler_conn.remote_port", offset_of!(Conn, remote_port)),
            ("pooler_conn.local_port", offset_of!(Conn, local_port)),
            ("pooler_conn.state", offset_of!(Conn, state)),
            ("pooler_conn.srtt_us", offset_of!(Conn, srtt_us)),
            ("pooler_conn.retransmits", offset_of!(Conn, retransmits)),
            ("pooler_conn.segs_in", offset_of!(Conn, segs_in)),
            ("pooler_conn.segs_out", offset_of!(Conn, segs_out)),
            (
                "pooler_conn.request_seq_end",
                offset_of!(Conn, request_seq_end),
            ),
            ("pooler_conn.reply_seq_end", offset_of!(Conn, reply_seq_end)),
            ("pooler_conn.seq_flags", offset_of!(Conn, seq_flags)),
            ("pooler_conn.dup_requests", offset_of!(Conn, dup_requests)),
            ("pooler_closed", size_of::<Closed>()),
            ("pooler_closed.cookie", offset_of!(Closed, cookie)),
            ("pooler_closed.conn", offset_of!(Closed, conn)),
            ("pooler_globals", size_of::<Globals>()),
            (
                "pooler_globals.client_established",
                offset_of!(Globals, client_established),
            ),
            (
                "pooler_globals.server_established",
                offset_of!(Globals, server_established),
            ),
            (
                "pooler_globals.client_closed",
                offset_of!(Globals, client_closed),
            ),
            (
                "pooler_globals.server_closed",
                offset_of!(Globals, server_closed),
            ),
            (
                "pooler_globals.retransmits",
                offset_of!(Globals, retransmits),
            ),
            (
                "pooler_globals.rtt_samples",
                offset_of!(Globals, rtt_samples),
            ),
            (
                "pooler_globals.client_requests",
                offset_of!(Globals, client_requests),
            ),
            (
                "pooler_globals.server_requests",
                offset_of!(Globals, server_requests),
            ),
            (
                "pooler_globals.dup_requests",
                offset_of!(Globals, dup_requests),
            ),
            ("pooler_globals.map_full", offset_of!(Globals, map_full)),
            ("pooler_globals.ring_full", offset_of!(Globals, ring_full)),
            ("pooler_latency", size_of::<Latency>()),
            ("pooler_latency.count", offset_of!(Latency, count)),
            ("pooler_latency.sum_ns", offset_of!(Latency, sum_ns)),
        ]
    }

    #[test]
    fn layout_matches_common_h() {
        let ours = rust_layout();
        match C_LAYOUT {
            // The build had a C compiler: compare with what it laid out.
            Some(c) => assert_eq!(ours, c.to_vec()),
            // Without one, hold the sizes the header's comments promise.
            None => {
                assert_eq!(size_of::<Conn>(), 136);
                assert_eq!(size_of::<Closed>(), 144);
                assert_eq!(size_of::<Globals>(), 88);
                assert_eq!(size_of::<Latency>(), 16);
            }
        }
        // No padding anywhere: every byte the kernel writes is a field.
        assert_eq!(size_of::<Conn>(), 9 * 8 + 16 + 2 * 4 + 2 * 2 + 9 * 4);
    }

    #[test]
    fn bucket_bounds() {
        assert_eq!(Hist::bounds_us(0), (0, 1));
        assert_eq!(Hist::bounds_us(1), (1, 2));
        assert_eq!(Hist::bounds_us(16), (32768, 65536));
        assert_eq!(Hist::bounds_us(HIST_BUCKETS - 1).1, u64::MAX);
    }

    #[test]
    fn addresses() {
        let mut c = Conn {
            family: libc::AF_INET as u32,
            ..Default::default()
        };
        c.remote_ip[0] = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(c.remote_addr().to_string(), "127.0.0.1");
        c.family = libc::AF_INET6 as u32;
        c.remote_ip = [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes([10, 1, 2, 3]),
        ];
        assert_eq!(c.remote_addr().to_string(), "10.1.2.3");
    }
}
