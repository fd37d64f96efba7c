/* Host program run by build.rs: prints the C layout of common.h so a Rust test can compare. */
#include <stddef.h>
#include <stdio.h>

#include "common.h"

#define FIELD(type, field) \
	printf("    (\"" #type "." #field "\", %zu),\n", offsetof(struct type, field))
#define SIZE(type) printf("    (\"" #type "\", %zu),\n", sizeof(struct type))

int main(void)
{
	printf("/// (name, offset or size) as the C compiler lays out bpf/common.h.\n");
	printf("pub const C_LAYOUT: Option<&[(&str, usize)]> = Some(&[\n");
	SIZE(pooler_conn);
	FIELD(pooler_conn, established_ns);
	FIELD(pooler_conn, closed_ns);
	FIELD(pooler_conn, bytes_received);
	FIELD(pooler_conn, bytes_acked);
	FIELD(pooler_conn, rtt_samples);
	FIELD(pooler_conn, requests);
	FIELD(pooler_conn, latency_sum_ns);
	FIELD(pooler_conn, latency_max_ns);
	FIELD(pooler_conn, request_start_ns);
	FIELD(pooler_conn, remote_ip);
	FIELD(pooler_conn, family);
	FIELD(pooler_conn, side);
	FIELD(pooler_conn, remote_port);
	FIELD(pooler_conn, local_port);
	FIELD(pooler_conn, state);
	FIELD(pooler_conn, srtt_us);
	FIELD(pooler_conn, retransmits);
	FIELD(pooler_conn, segs_in);
	FIELD(pooler_conn, segs_out);
	FIELD(pooler_conn, request_seq_end);
	FIELD(pooler_conn, reply_seq_end);
	FIELD(pooler_conn, seq_flags);
	FIELD(pooler_conn, dup_requests);
	SIZE(pooler_closed);
	FIELD(pooler_closed, cookie);
	FIELD(pooler_closed, conn);
	SIZE(pooler_globals);
	FIELD(pooler_globals, client_established);
	FIELD(pooler_globals, server_established);
	FIELD(pooler_globals, client_closed);
	FIELD(pooler_globals, server_closed);
	FIELD(pooler_globals, retransmits);
	FIELD(pooler_globals, rtt_samples);
	FIELD(pooler_globals, client_requests);
	FIELD(pooler_globals, server_requests);
	FIELD(pooler_globals, dup_requests);
	FIELD(pooler_globals, map_full);
	FIELD(pooler_globals, ring_full);
	SIZE(pooler_latency);
	FIELD(pooler_latency, count);
	FIELD(pooler_latency, sum_ns);
	printf("]);\n");
	return 0;
}
