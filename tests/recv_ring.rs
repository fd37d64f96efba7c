//! Receives from the provided-buffer ring (io_uring): a quiet client's pending receive takes
//! a 1 kB buffer from its worker's ring only when data arrives. Checked here: bytes are
//! intact across buffer boundaries and the switch to the client's own buffers and back;
//! a ring too small for the load falls back to own buffers without failing anything (and
//! says so on /metrics); `recv_ring_buffers = 0` turns it off.

mod common;
use common::*;

use md5::{Digest, Md5};

#[path = "metrics_support.rs"]
mod metrics_support;
use metrics_support::*;

const FALLBACKS: &str = "pooler_recv_ring_fallbacks_total";

fn start(ring_buffers: u32) -> (Pooler, u16) {
    let mport = free_port();
    let cfg = config(mport, "").replace(
        "[pooler]\n",
        &format!("[pooler]\nio_backend = \"io_uring\"\nrecv_ring_buffers = {ring_buffers}\n"),
    );
    (Pooler::start(&cfg), mport)
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `SELECT md5(literal)` with a literal of `n` bytes: the answer proves every byte arrived.
fn check_md5(client: &mut RawClient, n: usize) {
    let text: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let rows = data_rows(&client.query(&format!("SELECT md5('{text}')")));
    assert_eq!(
        rows,
        vec![vec![Some(md5_hex(text.as_bytes()))]],
        "literal of {n} bytes"
    );
}

#[test]
fn messages_of_every_size_arrive_intact() {
    let (pooler, _) = start(512);
    let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, "postgres");
    // Around the ring's 1 kB buffers (a Query message adds 5 bytes and the SQL 14), far
    // above them (own buffers), and small again (back to the ring).
    for n in [1, 1000, 1004, 1005, 1006, 1024, 2048, 100_000, 3, 1005, 7] {
        check_md5(&mut c, n);
    }
    // 400 queries in one write: message boundaries fall anywhere within the buffers.
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..400 {
        let s = format!("q{i:03}-").repeat(1 + i % 7);
        batch.extend(fe::query(&format!("SELECT md5('{s}')")));
        expected.push(vec![Some(md5_hex(s.as_bytes()))]);
    }
    c.send(&batch);
    let mut rows = Vec::new();
    for _ in 0..400 {
        rows.extend(data_rows(&c.recv_until_ready()));
    }
    assert_eq!(rows, expected);
}

/// 64 clients, 200 transactions each, through `pooler`; every one must succeed.
fn load(pooler: &Pooler) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("q.sql");
    std::fs::write(&script, "SELECT repeat('x', 100), 1;\n").unwrap();
    let script = script.display().to_string();
    let r = pooler.pgbench(
        TRUST_USER,
        "postgres",
        &["-n", "-f", &script, "-c", "64", "-j", "4", "-t", "200"],
    );
    assert!(
        r.ok && r.failed == 0 && r.aborted == 0,
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.transactions, 64 * 200, "{}", r.stdout);
}

#[test]
fn a_ring_too_small_falls_back_without_failing() {
    // One buffer per worker for 64 clients in flight: receives completing together find it
    // taken and must use buffers of their own.
    let (pooler, mport) = start(1);
    load(&pooler);
    assert!(
        scrape(mport).sum(FALLBACKS) > 0.0,
        "64 clients on a one-buffer ring never found it empty: the fallback is untested"
    );
}

#[test]
fn zero_turns_the_ring_off() {
    // The same load as above finds no ring to run short of.
    let (pooler, mport) = start(0);
    load(&pooler);
    let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, "postgres");
    check_md5(&mut c, 5000);
    check_md5(&mut c, 10);
    assert_eq!(scrape(mport).sum(FALLBACKS), 0.0);
}
