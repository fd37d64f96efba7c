//! Kernel-side stats (eBPF) against known traffic: N clients give exactly N passive opens
//! and N closes, a 50 ms query shows as ~50 ms on both sides with a small pooler overhead,
//! and dropped packets give the retransmit counts the kernel itself reports (ss); the same
//! figures reach /metrics.

mod common;
use common::*;
mod metrics_support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

type Row = HashMap<String, Option<String>>;

fn config() -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        "default_pool_size = 5\nebpf = \"on\"",
    )
}

/// Column names of a RowDescription ('T').
fn column_names(body: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut pos = 2;
    while let Some(end) = body.get(pos..).and_then(|b| b.iter().position(|&c| c == 0)) {
        names.push(String::from_utf8_lossy(&body[pos..pos + end]).into_owned());
        pos += end + 1 + 18;
        if pos >= body.len() {
            break;
        }
    }
    names
}

/// Rows of a console command, by column name.
fn show(console: &mut RawClient, cmd: &str) -> Vec<Row> {
    let msgs = console.query(cmd);
    assert!(!msgs.iter().any(Msg::is_error), "{cmd}: {msgs:?}");
    let names = msgs
        .iter()
        .find(|m| m.tag == b'T')
        .map(|m| column_names(&m.body))
        .unwrap_or_default();
    data_rows(&msgs)
        .into_iter()
        .map(|values| names.iter().cloned().zip(values).collect())
        .collect()
}

fn num(row: &Row, col: &str) -> u64 {
    row.get(col)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("column {col} of {row:?}"))
}

fn kernel_stats(console: &mut RawClient) -> Row {
    show(console, "SHOW KERNEL_STATS").remove(0)
}

/// Ids of SHOW CLIENTS / SHOW SERVERS rows of database `db`.
fn ids_of(console: &mut RawClient, cmd: &str, db: &str) -> Vec<u64> {
    show(console, cmd)
        .iter()
        .filter(|r| r["database"].as_deref() == Some(db))
        .map(|r| num(r, "id"))
        .collect()
}

/// The KERNEL_CLIENTS / KERNEL_SERVERS row of the connection with this id.
fn kernel_row(console: &mut RawClient, cmd: &str, id: u64) -> Row {
    show(console, cmd)
        .into_iter()
        .find(|r| r["id"].as_deref() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("no {cmd} row with id {id}"))
}

fn login(pooler: &Pooler, db: &str) -> RawClient {
    RawClient::login_trust(pooler.port, TRUST_USER, db).0
}

fn query_ok(client: &mut RawClient, sql: &str) {
    let msgs = client.query(sql);
    assert!(!msgs.iter().any(Msg::is_error), "{sql}: {msgs:?}");
}

#[test]
fn n_clients_give_n_passive_opens_and_n_closes() {
    if !kernel_allows() {
        return;
    }
    let pg = Postgres::shared();
    pg.create_database("ebpf_counts");
    let pooler = Pooler::start(&config());
    let mut console = RawClient::login_trust(pooler.port, "postgres", "pgbouncer").0;
    // The harness's readiness probes were connections too: wait until only ours is open.
    assert!(wait_until(Duration::from_secs(10), || {
        let s = kernel_stats(&mut console);
        num(&s, "client_established") == num(&s, "client_closed") + 1
    }));
    let before = kernel_stats(&mut console);
    assert_eq!(before["active"].as_deref(), Some("yes"));

    const N: u64 = 5;
    let mut clients: Vec<RawClient> = (0..N).map(|_| login(&pooler, "ebpf_counts")).collect();
    for c in &mut clients {
        query_ok(c, "SELECT 1");
    }
    let delta = |s: &Row, col: &str| num(s, col) - num(&before, col);
    assert!(wait_until(Duration::from_secs(5), || {
        delta(&kernel_stats(&mut console), "client_established") >= N
    }));

    // Every client of SHOW CLIENTS has its kernel row, under the same id.
    let ids = ids_of(&mut console, "SHOW CLIENTS", "ebpf_counts");
    assert_eq!(ids.len() as u64, N);
    for id in ids {
        let row = kernel_row(&mut console, "SHOW KERNEL_CLIENTS", id);
        assert_eq!(row["addr"].as_deref(), Some("127.0.0.1"));
        assert_eq!(row["tcp_state"].as_deref(), Some("ESTAB"));
        assert!(num(&row, "requests") >= 2, "login and SELECT 1: {row:?}");
        assert!(num(&row, "bytes_received") > 0, "{row:?}");
    }
    // Same for the servers the pool opened (active opens).
    let servers = ids_of(&mut console, "SHOW SERVERS", "ebpf_counts");
    assert!(!servers.is_empty());
    for id in servers {
        let row = kernel_row(&mut console, "SHOW KERNEL_SERVERS", id);
        assert!(num(&row, "requests") >= 1, "{row:?}");
    }

    drop(clients);
    assert!(wait_until(Duration::from_secs(10), || {
        delta(&kernel_stats(&mut console), "client_closed") >= N
    }));
    let after = kernel_stats(&mut console);
    assert_eq!(delta(&after, "client_established"), N, "{after:?}");
    assert_eq!(delta(&after, "client_closed"), N, "{after:?}");
    assert!(num(&after, "server_established") >= 1);
    assert_eq!(num(&after, "map_full"), 0);
    assert_eq!(num(&after, "ring_full"), 0);
    // Closed connections leave the map: only the console's is tracked among clients.
    assert!(wait_until(Duration::from_secs(5), || {
        show(&mut console, "SHOW KERNEL_CLIENTS").len() == 1
    }));
}

/// (requests, approximate latency sum in µs) of a kernel row.
fn requests_and_sum(row: &Row) -> (i64, i64) {
    let requests = num(row, "requests") as i64;
    (requests, requests * num(row, "avg_latency_us") as i64)
}

/// Runs `SELECT pg_sleep(0.05)` and returns its client-side and server-side latency in µs
/// (from the per-connection sums before and after), with the error bound of those sums.
fn sleep_latency(
    console: &mut RawClient,
    client: &mut RawClient,
    client_id: u64,
    server_id: u64,
) -> (i64, i64, i64) {
    let c0 = requests_and_sum(&kernel_row(console, "SHOW KERNEL_CLIENTS", client_id));
    let s0 = requests_and_sum(&kernel_row(console, "SHOW KERNEL_SERVERS", server_id));
    query_ok(client, "SELECT pg_sleep(0.05)");
    let c1 = requests_and_sum(&kernel_row(console, "SHOW KERNEL_CLIENTS", client_id));
    let s1 = requests_and_sum(&kernel_row(console, "SHOW KERNEL_SERVERS", server_id));
    assert_eq!(c1.0, c0.0 + 1, "one more request on the client socket");
    assert_eq!(s1.0, s0.0 + 1, "one more request on the server socket");
    // Sums rebuilt from integer averages are off by at most one µs per request.
    (c1.1 - c0.1, s1.1 - s0.1, c1.0 + s1.0)
}

#[test]
fn a_50ms_query_shows_as_50ms_on_both_sides_and_a_small_overhead() {
    if !kernel_allows() {
        return;
    }
    let pg = Postgres::shared();
    pg.create_database("ebpf_latency");
    let pooler = Pooler::start(&config());
    let mut console = RawClient::login_trust(pooler.port, "postgres", "pgbouncer").0;
    let mut client = login(&pooler, "ebpf_latency");
    query_ok(&mut client, "SELECT 1");
    let client_id = ids_of(&mut console, "SHOW CLIENTS", "ebpf_latency")[0];
    let server_id = ids_of(&mut console, "SHOW SERVERS", "ebpf_latency")[0];
    // The pooler shares two cores with PostgreSQL and whatever else runs: a stall of its
    // worker is a true overhead but not the steady one, so allow three tries.
    let mut last = (0, 0, 0);
    for _ in 0..3 {
        last = sleep_latency(&mut console, &mut client, client_id, server_id);
        let (client_us, server_us, slack) = last;
        if (50_000 - slack..150_000).contains(&client_us) && client_us - server_us < 20_000 {
            break;
        }
    }
    let (client_us, server_us, slack) = last;
    let overhead = client_us - server_us;
    eprintln!("client {client_us} µs, server {server_us} µs, overhead {overhead} µs");
    for (side, us) in [("client", client_us), ("server", server_us)] {
        assert!(
            (50_000 - slack..150_000).contains(&us),
            "{side}-side latency of pg_sleep(0.05): {us} µs"
        );
    }
    // The client-side span contains the server-side one: the difference is the pooler's.
    assert!(
        (-slack..20_000).contains(&overhead),
        "pooler overhead {overhead} µs"
    );

    // The histograms hold it from the [32768, 65536) µs bucket up, on both sides.
    let latency = show(&mut console, "SHOW KERNEL_LATENCY");
    let slow: Vec<&Row> = latency
        .iter()
        .filter(|r| r["lower_us"].as_deref().and_then(|v| v.parse::<u64>().ok()) >= Some(32768))
        .collect();
    let sum = |col: &str| slow.iter().map(|r| num(r, col)).sum::<u64>();
    assert!(sum("client") >= 1 && sum("server") >= 1, "{latency:?}");
    let avg = latency
        .iter()
        .find(|r| r["bucket"].as_deref() == Some("avg_us"))
        .expect("avg_us row");
    assert!(avg["overhead_us"].is_some(), "{avg:?}");
}

/// Drops a share of the packets sent from the pooler's port, for as long as it lives: an
/// nftables table of its own, matching only that port, so parallel tests on loopback are
/// not disturbed. It drops on input: a packet dropped on output fails the send, which TCP
/// retries as a first transmission rather than a retransmission.
struct PacketDropper {
    table: String,
}

impl PacketDropper {
    fn install(port: u16, percent: u32) -> PacketDropper {
        let table = format!("pooler_ebpf_test_{port}");
        let script = format!(
            "add table inet {table}\n\
             add chain inet {table} drop_in {{ type filter hook input priority 0; policy accept; }}\n\
             add rule inet {table} drop_in tcp sport {port} numgen random mod 100 < {percent} drop\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (nftables) is needed: cargo xtask test installs it");
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, script.as_bytes()).expect("write nft script");
        }
        assert!(
            child.wait().expect("nft").success(),
            "nft refused: {script}"
        );
        PacketDropper { table }
    }
}

impl Drop for PacketDropper {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// The socket's total_retrans as `ss -ti` reports it ("retrans:now/total"; absent = 0).
fn ss_total_retrans(local_port: u16, peer_port: u16) -> Option<u64> {
    let filter = format!("( sport = :{local_port} and dport = :{peer_port} )");
    let out = Command::new("ss")
        .args(["-tinH", "state", "all"])
        .arg(&filter)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return None;
    }
    Some(
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("retrans:"))
            .and_then(|r| r.split('/').nth(1))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    )
}

#[test]
fn dropped_packets_give_the_kernels_retransmit_counts() {
    if !kernel_allows() {
        return;
    }
    let pg = Postgres::shared();
    pg.create_database("ebpf_retrans");
    let pooler = Pooler::start(&config());
    let mut console = RawClient::login_trust(pooler.port, "postgres", "pgbouncer").0;
    let mut client = login(&pooler, "ebpf_retrans");
    query_ok(&mut client, "SELECT 1");
    let id = ids_of(&mut console, "SHOW CLIENTS", "ebpf_retrans")[0];
    let requests_before = num(
        &kernel_row(&mut console, "SHOW KERNEL_CLIENTS", id),
        "requests",
    );
    {
        let _dropper = PacketDropper::install(pooler.port, 20);
        for _ in 0..30 {
            query_ok(&mut client, "SELECT repeat('x', 3000)");
        }
    }
    let row = kernel_row(&mut console, "SHOW KERNEL_CLIENTS", id);
    // Retransmitted segments (requests whose ACK was lost, replies) start no new request.
    assert_eq!(
        num(&row, "requests") - requests_before,
        30,
        "30 queries under 20% loss: {row:?}"
    );
    let peer_port = num(&row, "port") as u16;
    let mut last = (0, None);
    let agree = wait_until(Duration::from_secs(10), || {
        let ours = num(
            &kernel_row(&mut console, "SHOW KERNEL_CLIENTS", id),
            "retransmits",
        );
        let kernel = ss_total_retrans(pooler.port, peer_port);
        last = (ours, kernel);
        kernel == Some(ours)
    });
    assert!(agree, "ours vs ss total_retrans: {last:?}");
    assert!(last.0 > 0, "20% loss over 30 replies retransmitted nothing");
    let stats = kernel_stats(&mut console);
    assert!(num(&stats, "retransmits") >= last.0, "{stats:?}");
    eprintln!(
        "retransmits {} (ss agrees); retransmitted requests not re-timed: {}",
        last.0,
        num(&stats, "dup_requests")
    );
}

#[test]
fn kernel_figures_reach_metrics() {
    if !kernel_allows() {
        return;
    }
    const DB: &str = "ebpf_metrics";
    const N: u64 = 4;
    Postgres::shared().create_database(DB);
    let mport = free_port();
    let pooler = Pooler::start(&metrics_support::config(mport, "").replace(
        "default_pool_size = 5",
        "default_pool_size = 5\nebpf = \"on\"",
    ));
    let scrape = || metrics_support::scrape(mport);
    let side = |s: &str| metrics_support::labels(&[("side", s)]);
    let value = |e: &metrics_support::Exposition, name: &str, s: &str| {
        e.value(name, &side(s))
            .unwrap_or_else(|| panic!("{name}{{side={s}}} missing"))
    };
    let established = "pooler_kernel_connections_established_total";
    let closed = "pooler_kernel_connections_closed_total";
    let count = "pooler_kernel_request_latency_seconds_count";
    // The harness's readiness probes were connections too: start once they are closed.
    let mut before = scrape();
    assert!(wait_until(Duration::from_secs(10), || {
        before = scrape();
        value(&before, established, "client") == value(&before, closed, "client")
    }));
    assert_eq!(
        before.value("pooler_kernel_active", &Default::default()),
        Some(1.0)
    );

    let mut clients: Vec<RawClient> = (0..N).map(|_| login(&pooler, DB)).collect();
    for c in &mut clients {
        query_ok(c, "SELECT 1");
    }
    drop(clients);
    let grew = |e: &metrics_support::Exposition, name: &str, s: &str| {
        value(e, name, s) - value(&before, name, s)
    };
    let mut after = scrape();
    let all_counted = wait_until(Duration::from_secs(10), || {
        after = scrape();
        grew(&after, closed, "client") >= N as f64
    });
    assert!(all_counted, "client closes never reached /metrics");
    // The scrapes themselves are not counted: the programs skip the metrics_addr port.
    assert_eq!(grew(&after, established, "client"), N as f64);
    assert_eq!(grew(&after, closed, "client"), N as f64);
    assert!(value(&after, established, "server") >= 1.0);
    // Login and SELECT 1 at least, per client; the server side saw the SELECTs.
    assert!(grew(&after, "pooler_kernel_requests_total", "client") >= 2.0 * N as f64);
    assert!(grew(&after, count, "client") >= 2.0 * N as f64);
    assert!(grew(&after, count, "server") >= N as f64);
    let sum = value(
        &after,
        "pooler_kernel_request_latency_seconds_sum",
        "client",
    );
    assert!(sum > 0.0 && sum < 60.0, "latency sum {sum} s");
    for name in [
        "pooler_kernel_map_full_total",
        "pooler_kernel_ring_full_total",
    ] {
        assert_eq!(after.value(name, &Default::default()), Some(0.0), "{name}");
    }
    assert!(
        after
            .value("pooler_kernel_overhead_seconds", &Default::default())
            .is_some()
    );
}
