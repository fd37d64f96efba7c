//! Worker threads (one compio runtime each), their accept loops, and the janitor that
//! keeps pools at min_pool_size and retires idle servers.

use std::{io, sync::Arc, thread, time::Duration};

use compio::{
    BufResult,
    buf::IntoInner,
    driver::{SharedFd, op::Accept},
};

use crate::{
    app::App,
    net::{self, Listener, Listeners},
    pool::{ConnectPermit, Pool},
    server,
};

/// Runs the pooler on the given listeners until `app.shutdown` is raised.
pub fn run(app: Arc<App>, mut listeners: Listeners) -> io::Result<()> {
    let per_worker = std::mem::take(&mut listeners.per_worker);
    let mut handles = Vec::new();
    for (i, ls) in per_worker.into_iter().enumerate() {
        let app = app.clone();
        handles.push(
            thread::Builder::new()
                .name(format!("pooler-w{i}"))
                .spawn(move || worker_main(i, app, ls))?,
        );
    }
    let mut result = Ok(());
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                app.shutdown.raise();
                result = Err(e);
            }
            Err(_) => {
                app.shutdown.raise();
                result = Err(io::Error::other("a worker thread panicked"));
            }
        }
    }
    drop(listeners);
    result
}

fn worker_main(index: usize, app: Arc<App>, listeners: Vec<Listener>) -> io::Result<()> {
    crate::pool::set_worker(index);
    let ring_buffers = app.config().pooler.recv_ring_buffers;
    let rt = net::build_runtime(app.backend, ring_buffers)?;
    rt.block_on(async {
        if app.backend == net::Backend::IoUring
            && ring_buffers > 0
            && let Err(e) = net::ring::init()
        {
            tracing::warn!("no provided-buffer ring on worker {index} ({e}); idle clients keep a receive buffer each");
        }
        for l in listeners {
            compio::runtime::spawn(accept_loop(app.clone(), l, index)).detach();
        }
        if index == 0 {
            compio::runtime::spawn(janitor(app.clone())).detach();
        }
        app.shutdown.wait().await;
    });
    Ok(())
}

async fn accept_loop(app: Arc<App>, listener: Listener, worker: usize) {
    let what = listener.describe();
    let is_tcp = matches!(listener, Listener::Tcp(..));
    let socket = match listener {
        Listener::Tcp(s, _) | Listener::Unix(s, _) => s,
    };
    if app.backend == net::Backend::Epoll
        && let Err(e) = socket.set_nonblocking(true)
    {
        tracing::error!("listener {what}: {e}");
        return;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let fd = SharedFd::new(socket);
    let mut stopping = false;
    loop {
        // Stopping shuts the listener down rather than dropping the accept in flight: the
        // kernel then either completes that accept with a connection (served like any
        // other) or fails it, and connections still queued move to another listener of
        // an so_reuseport group (net.ipv4.tcp_migrate_req) instead of being reset.
        let accept = std::pin::pin!(compio::runtime::submit(Accept::new(fd.clone())));
        let BufResult(res, op) = if stopping {
            // Bounded, in case a socket type does not wake its accept on shutdown.
            match compio::time::timeout(Duration::from_secs(1), accept).await {
                Ok(r) => r,
                Err(_) => return,
            }
        } else {
            let stop = std::pin::pin!(app.stop_accepting.wait());
            match futures_util::future::select(accept, stop).await {
                futures_util::future::Either::Left((r, _)) => r,
                futures_util::future::Either::Right((_, accept)) => {
                    tracing::debug!("stopped listening on {what}");
                    // SAFETY: shutdown(2) on a descriptor this task owns (through `fd`).
                    unsafe { libc::shutdown(raw, libc::SHUT_RDWR) };
                    stopping = true;
                    match compio::time::timeout(Duration::from_secs(1), accept).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
            }
        };
        if stopping && res.is_err() {
            return;
        }
        if let Err(e) = res {
            // Out of descriptors and similar: back off instead of spinning.
            tracing::warn!("accept on {what}: {e}");
            compio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let (sock, addr) = op.into_inner();
        let peer = if is_tcp {
            addr.as_socket()
                .map_or_else(|| "?".to_string(), |a| a.to_string())
        } else {
            "unix".to_string()
        };
        if is_tcp {
            let _ = sock.set_tcp_nodelay(true);
            let g = &app.config().pooler;
            if g.tcp_keepalive {
                let _ = sock.set_keepalive(true);
            }
        }
        // Counted for /metrics; the guard keeps the worker's session gauge right however
        // the session ends.
        let guard = crate::metrics::SessionGuard::new(&app, worker);
        compio::runtime::spawn(crate::client::serve(app.clone(), sock, peer, guard)).detach();
    }
}

/// Once a second: open connections up to min_pool_size, close idle servers past
/// server_idle_timeout or server_lifetime; fold the kernel's close records into the totals.
async fn janitor(app: Arc<App>) {
    let mut tick: u32 = 0;
    loop {
        // Queue deadlines a few times a second; everything else once a second.
        compio::time::sleep(Duration::from_millis(250)).await;
        let qwt = app.config().pooler.query_wait_timeout;
        for pool in app.pools.all() {
            pool.check_waiters(qwt);
        }
        tick = tick.wrapping_add(1);
        if !tick.is_multiple_of(4) {
            continue;
        }
        app.periodic.maybe_tick(&app);
        app.kernel.harvest();
        let cfg = app.config();
        for pool in app.pools.all() {
            for s in pool.take_expired() {
                tracing::debug!(server = s.info.id, pool = ?pool.key, "closing idle server (idle timeout or lifetime)");
                server::close_idle(s.socket);
            }
            // Up to server_login_concurrency fillers; each opens connections one after
            // the other until the pool holds min_pool_size.
            let read_size = (cfg.pooler.pkt_buf as usize).max(16 * 1024);
            while let Some(permit) = pool.permit_for_min() {
                compio::runtime::spawn(fill_min(app.clone(), pool.clone(), permit, read_size))
                    .detach();
            }
        }
    }
}

/// Opens server connections for `pool` while it is below min_pool_size.
async fn fill_min(app: Arc<App>, pool: Arc<Pool>, first: ConnectPermit, read_size: usize) {
    let mut next = Some(first);
    while let Some(permit) = next.take() {
        let creds = server::credentials(&pool, app.auth_file().as_deref());
        match server::open(&pool.target(), &creds, read_size).await {
            Ok((conn, mut info)) => {
                permit.connected(&mut info);
                pool.set_welcome(&info.params);
                match server::ServerConn::new(conn, info).into_idle() {
                    Some(idle) => pool.release(idle),
                    None => pool.server_closed(),
                }
                next = pool.permit_for_min();
            }
            Err(e) => {
                tracing::warn!(pool = ?pool.key, "min_pool_size connection failed: {e}");
                let e = Arc::new(e);
                permit.failed(e.is_login_failure().then_some(e));
            }
        }
    }
}
