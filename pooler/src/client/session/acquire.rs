//! Getting a server: from the pool at once, after a wait in its queue, or by opening a
//! new connection (polled in place while the client keeps being read).

use super::*;

/// Servers idle at least this long are checked for having been closed by PostgreSQL.
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(5);

impl Session {
    pub(super) fn start_acquire(&mut self) {
        let _ = self.shared.take_wait_cancelled();
        match self.pool.acquire(self.shared.id) {
            crate::pool::Acquire::Now(g) => self.on_grant(g),
            crate::pool::Acquire::Wait(handle) => {
                let since = Instant::now();
                self.wait_start = Some(since);
                self.shared
                    .state
                    .set_client(crate::stats::ClientState::Waiting);
                self.shared.wait_since.store(
                    crate::stats::now_micros(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.phase = Phase::Waiting { handle };
            }
        }
    }

    pub(super) fn on_grant(&mut self, grant: Grant) {
        match grant {
            Grant::Server(idle) => {
                self.phase = Phase::Idle;
                // A server handed over straight from its last client cannot have died
                // unnoticed; one that sat in the idle list is checked (one syscall).
                let idle_for = idle.info.last_used.elapsed();
                let sat_idle = idle_for >= IDLE_CHECK_AFTER;
                if sat_idle && !crate::net::is_alive(&idle.socket) {
                    // Died while idle (terminated, restarted): replace it silently.
                    tracing::info!(
                        server = idle.info.id,
                        "idle server connection was closed by the server; replacing it"
                    );
                    drop(idle);
                    self.pool.server_closed();
                    self.start_acquire();
                    return;
                }
                let delay = self.cfg.pooler.server_check_delay;
                let stale = !delay.is_zero() && idle_for >= delay;
                let sv = ServerConn::from_idle(idle, self.server_read_size());
                self.link(sv);
                if stale && let Some(s) = self.server.as_mut() {
                    // Idle past server_check_delay: prove it works before the client's
                    // request goes to it; a broken one is replaced without the client
                    // seeing anything.
                    let q = self.cfg.pooler.server_check_query.trim();
                    let q = if q.is_empty() || q == "<empty>" {
                        ";"
                    } else {
                        q
                    };
                    s.send_internal(q, Internal::Check);
                    // A server that hangs instead of answering must not hold the client
                    // longer than it may wait for a server at all.
                    let g = &self.cfg.pooler;
                    let mut limit = g.server_connect_timeout;
                    if !g.query_wait_timeout.is_zero() {
                        limit = limit.min(g.query_wait_timeout);
                    }
                    self.checking = Some(Instant::now() + limit);
                }
            }
            Grant::Connect(permit) => {
                let target = permit.pool().target();
                let creds = self.creds.clone();
                let read_size = self.server_read_size();
                let fut: Connecting =
                    Box::pin(async move { server::open(&target, &creds, read_size).await });
                self.phase = Phase::Connecting {
                    fut,
                    permit: Some(permit),
                };
            }
            Grant::Failed(err) => {
                self.phase = Phase::Idle;
                self.fatal(err.sqlstate(), &err.to_string(), err.detail());
            }
            Grant::TimedOut => {
                self.phase = Phase::Idle;
                let secs = self.cfg.pooler.query_wait_timeout.as_secs_f64();
                self.fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "query_wait_timeout",
                    Some(&format!(
                        "no server connection became available within {secs} s"
                    )),
                );
            }
        }
    }

    pub(super) fn poll_phase(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.phase {
            Phase::Idle => false,
            Phase::Waiting { handle, .. } => {
                if let Poll::Ready(g) = handle.poll_grant(cx) {
                    self.phase = Phase::Idle;
                    self.timer = None;
                    self.on_grant(g);
                    return true;
                }
                if self.shared.take_wait_cancelled() {
                    // Cancelled while queued: leave the queue and answer the request as
                    // PostgreSQL answers a cancelled one; the client carries on.
                    self.phase = Phase::Idle;
                    self.wait_start = None;
                    self.shared
                        .state
                        .set_client(crate::stats::ClientState::Active);
                    backend::error_response(
                        &mut self.client.wbuf,
                        Severity::Error,
                        sqlstate::QUERY_CANCELED,
                        "canceling statement due to user request",
                        None,
                    );
                    self.discard = Some(forward::Discard::start(
                        &self.client.rbuf,
                        self.max_packet(),
                    ));
                    return true;
                }
                false
            }
            Phase::Connecting { fut, permit } => {
                let Poll::Ready(res) = fut.as_mut().poll(cx) else {
                    return false;
                };
                let permit = permit.take();
                self.phase = Phase::Idle;
                match res {
                    Ok((conn, mut info)) => {
                        if let Some(p) = permit {
                            p.connected(&mut info);
                        }
                        self.pool.set_welcome(&info.params);
                        tracing::debug!(server = info.id, pool = ?self.pool.key, "new server connection");
                        self.link(ServerConn::new(conn, info));
                    }
                    Err(e) => {
                        tracing::warn!(pool = ?self.pool.key, "server login failed: {e}");
                        let e = Arc::new(e);
                        if let Some(p) = permit {
                            p.failed(e.is_login_failure().then(|| e.clone()));
                        }
                        self.fatal(e.sqlstate(), &e.to_string(), e.detail());
                    }
                }
                true
            }
        }
    }
}
