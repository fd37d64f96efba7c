/* Kernel side of the pooler's socket statistics: a sockops program tracking each connection
 * of the pooler's cgroup, and a cgroup_skb ingress/egress pair timing requests. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define E2BIG 7
#define ENOMEM 12

/* Set by the loader (EbpfLoader::override_global). Being const, the verifier prunes the
 * RTT branch away when sampling is off. */
const volatile __u8 rtt_sampling = 0;
/* Local port of a listener in the pooler's cgroup that is not a client listener (the
 * monitoring HTTP listener): connections accepted there are not tracked. 0 = none. */
const volatile __u16 ignored_port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* the loader sizes it from max_client_conn */
	__type(key, __u64);
	__type(value, struct pooler_conn);
} pooler_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pooler_globals);
} pooler_globals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pooler_latency);
} pooler_latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * POOLER_HIST_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} pooler_buckets SEC(".maps");

/* Final figures of closed connections, drained by the pooler once a second: the entry
 * itself is deleted at close, so pooler_conns only ever holds live connections. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} pooler_closed_ring SEC(".maps");

/* Per-side counters are bumped as `a += cond; b += !cond` rather than in an if/else: clang
 * turns the branches into one store at a computed offset, pointer arithmetic the verifier
 * refuses without CAP_PERFMON ("from different paths"), and the pooler should run with
 * CAP_BPF + CAP_NET_ADMIN alone. */
static __always_inline struct pooler_globals *globals(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pooler_globals, &zero);
}

/* Retransmits reach the socket's total_retrans either before or after the RETRANS
 * callback depending on the kernel, so take whichever count is ahead. */
static __always_inline void sync_retransmits(struct pooler_conn *c, __u32 total,
					     struct pooler_globals *g)
{
	if (total > c->retransmits) {
		if (g)
			g->retransmits += total - c->retransmits;
		c->retransmits = total;
	}
}

static __always_inline void on_established(struct bpf_sock_ops *skops, __u32 side)
{
	struct pooler_globals *g = globals();
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct pooler_conn c = {};
	long err;

	c.established_ns = bpf_ktime_get_ns();
	c.side = side;
	c.family = skops->family;
	c.state = skops->state;
	/* remote_port holds the network-order port in its upper 16 bits. */
	c.remote_port = (__u16)bpf_ntohl(skops->remote_port);
	c.local_port = (__u16)skops->local_port;
	if (skops->family == AF_INET) {
		c.remote_ip[0] = skops->remote_ip4;
	} else {
		c.remote_ip[0] = skops->remote_ip6[0];
		c.remote_ip[1] = skops->remote_ip6[1];
		c.remote_ip[2] = skops->remote_ip6[2];
		c.remote_ip[3] = skops->remote_ip6[3];
	}
	c.srtt_us = skops->srtt_us >> 3;
	/* SYN or SYN-ACK retransmits happened before we could watch. */
	sync_retransmits(&c, skops->total_retrans, g);

	if (g) {
		g->client_established += side == POOLER_SIDE_CLIENT;
		g->server_established += side != POOLER_SIDE_CLIENT;
	}
	err = bpf_map_update_elem(&pooler_conns, &cookie, &c, BPF_NOEXIST);
	if (err == -E2BIG || err == -ENOMEM) {
		if (g)
			g->map_full++;
		return;
	}
	bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG |
					 BPF_SOCK_OPS_RETRANS_CB_FLAG |
					 (rtt_sampling ? BPF_SOCK_OPS_RTT_CB_FLAG : 0));
}

static __always_inline void refresh_from_skops(struct pooler_conn *c, struct bpf_sock_ops *skops)
{
	c->srtt_us = skops->srtt_us >> 3;
	c->bytes_received = skops->bytes_received;
	c->bytes_acked = skops->bytes_acked;
	c->segs_in = skops->segs_in;
	c->segs_out = skops->segs_out;
}

static __always_inline void on_closed(struct bpf_sock_ops *skops, struct pooler_conn *c,
				      __u64 cookie, __u32 old_state)
{
	struct pooler_globals *g = globals();
	struct pooler_closed *rec;

	refresh_from_skops(c, skops);
	sync_retransmits(c, skops->total_retrans, g);
	c->state = old_state;
	c->closed_ns = bpf_ktime_get_ns();
	if (g) {
		g->client_closed += c->side == POOLER_SIDE_CLIENT;
		g->server_closed += c->side != POOLER_SIDE_CLIENT;
	}
	rec = bpf_ringbuf_reserve(&pooler_closed_ring, sizeof(*rec), 0);
	if (rec) {
		rec->cookie = cookie;
		__builtin_memcpy(&rec->conn, c, sizeof(*c));
		bpf_ringbuf_submit(rec, 0);
	} else if (g) {
		g->ring_full++;
	}
	bpf_map_delete_elem(&pooler_conns, &cookie);
}

SEC("sockops")
int pooler_sockops(struct bpf_sock_ops *skops)
{
	struct pooler_conn *c;
	__u64 cookie;

	switch (skops->op) {
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (ignored_port && skops->local_port == ignored_port)
			return 1;
		on_established(skops, POOLER_SIDE_CLIENT);
		return 1;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_established(skops, POOLER_SIDE_SERVER);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
	case BPF_SOCK_OPS_RETRANS_CB:
	case BPF_SOCK_OPS_RTT_CB:
		break;
	default:
		return 1;
	}

	cookie = bpf_get_socket_cookie(skops);
	c = bpf_map_lookup_elem(&pooler_conns, &cookie);
	if (!c)
		return 1;

	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		/* args[0]: old state, args[1]: new state. */
		if (skops->args[1] == BPF_TCP_CLOSE)
			on_closed(skops, c, cookie, skops->args[0]);
		else
			c->state = skops->args[1];
	} else if (skops->op == BPF_SOCK_OPS_RETRANS_CB) {
		/* args[1]: segments, args[2]: 0 when the retransmission went out. */
		__u32 counted = c->retransmits + (skops->args[2] == 0 ? skops->args[1] : 0);
		__u32 total = skops->total_retrans;

		sync_retransmits(c, counted > total ? counted : total, globals());
	} else if (rtt_sampling) {
		struct pooler_globals *g = globals();

		c->rtt_samples++;
		refresh_from_skops(c, skops);
		if (g)
			g->rtt_samples++;
	}
	return 1;
}

/* floor(log2(us)) + 1, 0 for 0, capped to the last bucket. */
static __always_inline __u32 bucket_of(__u64 us)
{
	__u32 b = 0;

	if (us >= (1ULL << 32)) {
		us >>= 32;
		b += 32;
	}
	if (us >= (1ULL << 16)) {
		us >>= 16;
		b += 16;
	}
	if (us >= (1ULL << 8)) {
		us >>= 8;
		b += 8;
	}
	if (us >= (1ULL << 4)) {
		us >>= 4;
		b += 4;
	}
	if (us >= (1ULL << 2)) {
		us >>= 2;
		b += 2;
	}
	if (us >= 2) {
		us >>= 1;
		b += 1;
	}
	b += us; /* us is now 0 or 1 */
	return b < POOLER_HIST_BUCKETS ? b : POOLER_HIST_BUCKETS - 1;
}

static __always_inline void record_latency(struct pooler_conn *c, __u64 ns)
{
	__u32 index = c->side == POOLER_SIDE_CLIENT ? 0 : 1;
	struct pooler_latency *l = bpf_map_lookup_elem(&pooler_latency, &index);
	__u32 key = index * POOLER_HIST_BUCKETS + bucket_of(ns / 1000);
	__u64 *bucket = bpf_map_lookup_elem(&pooler_buckets, &key);
	struct pooler_globals *g = globals();

	__sync_fetch_and_add(&c->requests, 1);
	__sync_fetch_and_add(&c->latency_sum_ns, ns);
	if (ns > c->latency_max_ns)
		c->latency_max_ns = ns;
	if (l) {
		l->count++;
		l->sum_ns += ns;
	}
	if (bucket)
		(*bucket)++;
	if (g) {
		g->client_requests += c->side == POOLER_SIDE_CLIENT;
		g->server_requests += c->side != POOLER_SIDE_CLIENT;
	}
}

/* Payload length and first sequence number of a TCP packet; skb data starts at the
 * network header in cgroup_skb programs. Returns 0 when it is not TCP or carries no
 * payload. The headers are read straight from the packet when they sit at the usual
 * offsets in its linear part (no helper call: this runs for every packet of the pooler;
 * and constant offsets, since packet pointer arithmetic needs CAP_PERFMON), else copied
 * out through the helper. */
static __always_inline __u32 tcp_payload(struct __sk_buff *skb, __u32 *seq)
{
	__u8 *data = (__u8 *)(long)skb->data;
	__u8 *data_end = (__u8 *)(long)skb->data_end;
	__u32 l4, len = skb->len;
	__u8 b[20];
	__u8 *tcp;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (data + 40 <= data_end && (data[0] & 0x0f) == 5) {
			if (data[9] != IPPROTO_TCP)
				return 0;
			l4 = 20;
			tcp = data + 20;
		} else {
			if (bpf_skb_load_bytes(skb, 0, b, 20) || b[9] != IPPROTO_TCP)
				return 0;
			l4 = (b[0] & 0x0f) * 4;
			if (bpf_skb_load_bytes(skb, l4, b, 20))
				return 0;
			tcp = b;
		}
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		/* Extension headers are not walked: the pooler's traffic has none. */
		l4 = 40;
		if (data + 60 <= data_end) {
			if (data[6] != IPPROTO_TCP)
				return 0;
			tcp = data + 40;
		} else {
			if (bpf_skb_load_bytes(skb, 0, b, 8) || b[6] != IPPROTO_TCP)
				return 0;
			if (bpf_skb_load_bytes(skb, l4, b, 20))
				return 0;
			tcp = b;
		}
	} else {
		return 0;
	}
	l4 += (tcp[12] >> 4) * 4;
	if (len <= l4)
		return 0;
	*seq = ((__u32)tcp[4] << 24) | ((__u32)tcp[5] << 16) | ((__u32)tcp[6] << 8) | tcp[7];
	return len - l4;
}

/* A request starts with the first new payload byte in the request direction (ingress on
 * client sockets, egress on server sockets) and ends with the first new payload byte in
 * the other direction. "New" means beyond the highest sequence number seen so far, so a
 * retransmitted request or reply is never timed twice. */
static __always_inline int on_packet(struct __sk_buff *skb, int ingress)
{
	struct pooler_conn *c;
	struct bpf_sock *sk;
	struct bpf_tcp_sock *tp;
	__u32 seq = 0, len, end;
	__u64 cookie;
	int request_dir;

	/* Pure ACKs are about half the packets: drop them before the map lookup. */
	len = tcp_payload(skb, &seq);
	if (!len)
		return 1;
	cookie = bpf_get_socket_cookie(skb);
	c = bpf_map_lookup_elem(&pooler_conns, &cookie);
	if (!c)
		return 1;
	end = seq + len;
	request_dir = (c->side == POOLER_SIDE_CLIENT) == !!ingress;
	if (request_dir) {
		if ((c->seq_flags & POOLER_SEQ_REQUEST_VALID) &&
		    (__s32)(end - c->request_seq_end) <= 0) {
			struct pooler_globals *g = globals();

			c->dup_requests++;
			if (g)
				g->dup_requests++;
			return 1;
		}
		c->request_seq_end = end;
		c->seq_flags |= POOLER_SEQ_REQUEST_VALID;
		if (!c->request_start_ns)
			c->request_start_ns = bpf_ktime_get_ns();
	} else {
		__u64 start;

		if ((c->seq_flags & POOLER_SEQ_REPLY_VALID) &&
		    (__s32)(end - c->reply_seq_end) <= 0)
			return 1;
		c->reply_seq_end = end;
		c->seq_flags |= POOLER_SEQ_REPLY_VALID;
		start = c->request_start_ns;
		if (start) {
			c->request_start_ns = 0;
			record_latency(c, bpf_ktime_get_ns() - start);
		}
	}
	if (request_dir)
		return 1;

	/* Keep the live figures current without RTT callbacks: once per reply is enough. */
	sk = skb->sk;
	if (sk) {
		sk = bpf_sk_fullsock(sk);
		if (sk) {
			tp = bpf_tcp_sock(sk);
			if (tp) {
				c->srtt_us = tp->srtt_us >> 3;
				c->bytes_received = tp->bytes_received;
				c->bytes_acked = tp->bytes_acked;
				c->segs_in = tp->segs_in;
				c->segs_out = tp->segs_out;
			}
		}
	}
	return 1;
}

SEC("cgroup_skb/ingress")
int pooler_ingress(struct __sk_buff *skb)
{
	return on_packet(skb, 1);
}

SEC("cgroup_skb/egress")
int pooler_egress(struct __sk_buff *skb)
{
	return on_packet(skb, 0);
}

char LICENSE[] SEC("license") = "GPL";
