/* Types shared by the kernel programs and the pooler (mirrored in src/types.rs; keep in step). */
#ifndef POOLER_EBPF_COMMON_H
#define POOLER_EBPF_COMMON_H

#include <linux/types.h>

/* Log2 latency buckets in microseconds: bucket 0 holds < 1 us, bucket b (b >= 1) holds
 * [2^(b-1), 2^b) us; the last bucket also takes everything longer. */
#define POOLER_HIST_BUCKETS 32

/* Which end of the pooler a socket is: clients connect to us (passive open), we connect
 * to servers (active open). */
#define POOLER_SIDE_CLIENT 1
#define POOLER_SIDE_SERVER 2

/* seq_flags bits: whether request_seq_end / reply_seq_end hold a sequence number yet. */
#define POOLER_SEQ_REQUEST_VALID 1
#define POOLER_SEQ_REPLY_VALID 2

/* One live TCP connection of the pooler, keyed by socket cookie in pooler_conns.
 * 64-bit fields first so the layout has no hidden padding. */
struct pooler_conn {
	__u64 established_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) at establishment */
	__u64 closed_ns;        /* 0 while open; set in the record sent at close */
	__u64 bytes_received;   /* tcp_sock counters, refreshed on each payload packet */
	__u64 bytes_acked;
	__u64 rtt_samples;      /* RTT callbacks seen (only with rtt sampling on) */
	__u64 requests;         /* request -> first reply byte pairs measured */
	__u64 latency_sum_ns;
	__u64 latency_max_ns;
	__u64 request_start_ns; /* first byte of the outstanding request; 0 = none */
	__u32 remote_ip[4];     /* network order; IPv4 in remote_ip[0] */
	__u32 family;           /* AF_INET or AF_INET6 */
	__u32 side;             /* POOLER_SIDE_* */
	__u16 remote_port;      /* host order */
	__u16 local_port;       /* host order */
	__u32 state;            /* current TCP state (BPF_TCP_*); at close: the state it left */
	__u32 srtt_us;          /* smoothed RTT, already divided by 8 */
	__u32 retransmits;      /* segments retransmitted, as the socket's total_retrans */
	__u32 segs_in;
	__u32 segs_out;
	__u32 request_seq_end;  /* highest sequence number + 1 seen in the request direction */
	__u32 reply_seq_end;    /* same in the reply direction */
	__u32 seq_flags;        /* POOLER_SEQ_* */
	__u32 dup_requests;     /* request payload seen again (retransmitted), not re-timed */
};

/* What the sockops program sends to the pooler when a connection closes. */
struct pooler_closed {
	__u64 cookie;
	struct pooler_conn conn;
};

/* Global counters, one copy per CPU in pooler_globals (summed by the reader). */
struct pooler_globals {
	__u64 client_established; /* passive opens */
	__u64 server_established; /* active opens */
	__u64 client_closed;
	__u64 server_closed;
	__u64 retransmits;        /* segments, over every tracked connection */
	__u64 rtt_samples;
	__u64 client_requests;
	__u64 server_requests;
	__u64 dup_requests;       /* retransmitted request payload not timed twice */
	__u64 map_full;           /* establishments not tracked: pooler_conns was full */
	__u64 ring_full;          /* close records lost: pooler_closed_ring was full */
};

/* Count and sum of one side's latencies (per CPU); index 0 of pooler_latency is the client
 * side, 1 the server side. The histogram buckets are the u64 entries of pooler_buckets at
 * index side * POOLER_HIST_BUCKETS + bucket: a map key, because indexing an array inside
 * a map value by a computed bucket is pointer arithmetic the verifier only allows with
 * CAP_PERFMON. */
struct pooler_latency {
	__u64 count;
	__u64 sum_ns;
};

#endif
