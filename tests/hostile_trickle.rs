//! 500 clients trickling their startup packet one byte per second: a normal login stays under 100 ms, and client_login_timeout closes them all.

mod common;
use common::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TRICKLERS: usize = 500;
const DB: &str = "hostile_trickle";

/// One slow client: connects, sends its startup packet a byte a second until the pooler
/// closes the connection. Returns (connected at, closed at).
async fn trickle(
    port: u16,
    packet: Vec<u8>,
    started: Arc<AtomicUsize>,
) -> (Instant, Option<Instant>) {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("trickler connect");
    let connected = Instant::now();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        for (i, b) in packet.into_iter().enumerate() {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            if i == 0 {
                started.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok();
    writer.abort();
    (connected, closed)
}

#[test]
fn trickling_clients_delay_no_login_and_are_closed_by_client_login_timeout() {
    Postgres::shared().create_database(DB);
    let pooler = Pooler::start(&TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5\n",
        "default_pool_size = 5\nclient_login_timeout = 3\nmax_client_conn = 2000\nlisten_backlog = 1024\n",
    ));
    // Warm up: the pool learns the server's parameters.
    let (mut warm, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    warm.query("SELECT 1");
    drop(warm);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let packet = fe::startup(TRUST_USER, DB, &[]);
    let started = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TRICKLERS)
        .map(|_| rt.spawn(trickle(pooler.port, packet.clone(), started.clone())))
        .collect();

    // While they trickle, normal clients log in quickly.
    let all_started = wait_until(Duration::from_secs(10), || {
        started.load(Ordering::SeqCst) == TRICKLERS
    });
    assert!(
        all_started,
        "only {} tricklers started",
        started.load(Ordering::SeqCst)
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
        slowest = slowest.max(started.elapsed());
        assert_eq!(data_rows(&c.query("SELECT 1")), [[Some("1".to_string())]]);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slowest < Duration::from_millis(100),
        "a normal login took {slowest:?} while {TRICKLERS} clients trickled"
    );

    let results: Vec<_> = rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let lifetimes: Vec<Duration> = results
        .iter()
        .map(|(connected, closed)| closed.expect("a trickler was never closed") - *connected)
        .collect();
    let shortest = lifetimes.iter().min().unwrap();
    let longest = lifetimes.iter().max().unwrap();
    assert!(
        *shortest >= Duration::from_millis(2900),
        "a trickler was closed after {shortest:?}, before client_login_timeout (3 s)"
    );
    assert!(
        *longest <= Duration::from_millis(4500),
        "a trickler was closed only after {longest:?} (client_login_timeout 3 s)"
    );
    // Nothing left behind, nothing spinning.
    assert_eq!(
        admin_number(&pooler, "SHOW LISTS", "list", "login_clients", "items"),
        0
    );
    let t0 = cpu_ticks(pooler.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pooler.pid()) - t0;
    assert!(used < 5, "{used} ticks of CPU in the second after");
    assert_eq!(
        pooler.psql(TRUST_USER, DB, None, "SELECT 42").as_deref(),
        Ok("42")
    );
}
