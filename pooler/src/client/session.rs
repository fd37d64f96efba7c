//! A logged-in client's event loop: one task per client that polls, in place, the
//! client's receive, the linked server's receive, both send queues, the wait for a server
//! and a deadline timer. Nothing is selected-and-dropped, so no read is lost (net/mod.rs).

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::{
    app::App,
    config::{Config, PoolMode},
    net::Conn,
    pool::{ConnectPermit, Grant, Pool, ServerInfo, WaitHandle},
    proto::{
        backend::{self, Severity},
        frame::ErrorFields,
        sqlstate,
        tracker::Internal,
    },
    server::{self, Credentials, ServerConn, ServerError},
};

use super::{
    forward::{self, ClientScan},
    params::ClientParams,
    registry::ClientShared,
};

/// Stop reading from one side while this much is queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// How long cleaning up after a vanished client may take before the server is closed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

type Connecting = Pin<Box<dyn Future<Output = Result<(Conn, ServerInfo), ServerError>>>>;
type Timer = Pin<Box<dyn Future<Output = ()>>>;

enum Phase {
    /// No server and none asked for.
    Idle,
    Waiting {
        handle: WaitHandle,
        since: Instant,
    },
    Connecting {
        fut: Connecting,
        permit: Option<ConnectPermit>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Alive,
    /// An error is queued; flush it, then the client is gone.
    Closing,
    Gone,
}

/// Why a session ended, for the disconnection log line.
#[derive(Debug, Clone)]
pub struct End(pub String);

pub struct Session {
    pub(super) app: Arc<App>,
    pub(super) cfg: Arc<Config>,
    pub(super) shared: Arc<ClientShared>,
    pub(super) pool: Arc<Pool>,
    pub(super) mode: PoolMode,
    pub(super) client: Conn,
    pub(super) params: ClientParams,
    pub(super) creds: Credentials,
    client_pass: u32,
    server: Option<ServerConn>,
    published: bool,
    phase: Phase,
    state: ClientState,
    end: Option<String>,
    copy_in: bool,
    timer: Option<(Instant, Timer)>,
    cleanup: Cleanup,
    /// When the request being answered / the transaction in progress / the wait began.
    query_start: Option<Instant>,
    xact_start: Option<Instant>,
    wait_start: Option<Instant>,
}

#[derive(Default)]
struct Cleanup {
    deadline: Option<Instant>,
    cancel_sent: bool,
    sync_sent: bool,
    copy_failed: bool,
    rollback_sent: bool,
    reset_sent: bool,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: Arc<App>,
        cfg: Arc<Config>,
        shared: Arc<ClientShared>,
        pool: Arc<Pool>,
        client: Conn,
        params: ClientParams,
        creds: Credentials,
        server: Option<ServerConn>,
    ) -> Session {
        let mode = pool.mode();
        let mut s = Session {
            app,
            cfg,
            shared,
            pool,
            mode,
            client,
            params,
            creds,
            client_pass: 0,
            server: None,
            published: false,
            phase: Phase::Idle,
            state: ClientState::Alive,
            end: None,
            copy_in: false,
            timer: None,
            cleanup: Cleanup::default(),
            query_start: None,
            xact_start: None,
            wait_start: None,
        };
        if let Some(sv) = server {
            s.link(sv);
        }
        s
    }

    pub async fn run(mut self) -> End {
        let end = poll_fn(|cx| self.poll(cx)).await;
        self.finish();
        end
    }

    fn max_packet(&self) -> u32 {
        self.cfg.pooler.max_packet_size
    }

    fn server_read_size(&self) -> usize {
        (self.cfg.pooler.pkt_buf as usize).max(16 * 1024)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        self.shared.register(cx);
        if let Some(reason) = self.shared.take_killed() {
            // The server may be mid-transaction: close it rather than clean it.
            self.drop_server();
            self.phase = Phase::Idle;
            self.fatal(sqlstate::ADMIN_SHUTDOWN, &reason, None);
        }
        loop {
            let mut progress = false;
            progress |= self.poll_client_recv(cx);
            progress |= self.pump_client();
            progress |= self.poll_phase(cx);
            progress |= self.poll_server_recv(cx);
            progress |= self.poll_flush(cx);
            progress |= self.step_cleanup();
            progress |= self.maybe_release();
            progress |= self.poll_timer(cx);
            if let Some(end) = self.finished() {
                return Poll::Ready(End(end));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// The session is over when the client is gone and no server remains to clean up.
    fn finished(&mut self) -> Option<String> {
        if self.state != ClientState::Gone || self.server.is_some() {
            return None;
        }
        Some(self.end.take().unwrap_or_else(|| "client gone".into()))
    }

    fn finish(&mut self) {
        if let Some(s) = self.server.take() {
            drop(s);
            self.pool.server_closed();
        }
        self.phase = Phase::Idle;
    }

    fn set_end(&mut self, why: impl Into<String>) {
        if self.end.is_none() {
            self.end = Some(why.into());
        }
    }

    /// Queues a FATAL error for the client and closes it after the error is sent.
    fn fatal(&mut self, code: &str, msg: &str, detail: Option<&str>) {
        if self.state != ClientState::Alive {
            return;
        }
        self.set_end(msg.to_string());
        self.client.rbuf.clear();
        backend::error_response(&mut self.client.wbuf, Severity::Fatal, code, msg, detail);
        self.state = ClientState::Closing;
    }

    fn client_gone(&mut self, why: &str) {
        self.set_end(why.to_string());
        self.state = ClientState::Gone;
        self.client.rbuf.clear();
        self.client.wbuf.clear();
        // Giving up the place in the queue or the connection attempt returns the slot.
        self.phase = Phase::Idle;
        self.timer = None;
        if self.server.is_some() && self.cleanup.deadline.is_none() {
            self.cleanup.deadline = Some(Instant::now() + CLEANUP_TIMEOUT);
        }
    }

    fn poll_client_recv(&mut self, cx: &mut Context<'_>) -> bool {
        if self.state != ClientState::Alive || self.client.rbuf.len() > HIGH_WATER {
            return false;
        }
        if let Some(s) = &self.server
            && s.conn.send_backlog() > HIGH_WATER
        {
            return false;
        }
        match self.client.poll_recv(cx) {
            Poll::Pending => false,
            Poll::Ready(Ok(0)) => {
                self.client_gone("client unexpected eof");
                true
            }
            Poll::Ready(Ok(_)) => true,
            Poll::Ready(Err(e)) => {
                self.client_gone(&format!("client read error: {e}"));
                true
            }
        }
    }

    /// Forwards what the client sent, or asks for a server when a message is waiting.
    fn pump_client(&mut self) -> bool {
        if self.state != ClientState::Alive || self.client.rbuf.is_empty() {
            return false;
        }
        if self.server.is_some() && !self.published {
            self.publish();
        }
        let before = self.client.rbuf.len();
        let max = self.max_packet();
        let scan = forward::client_to_server(
            &mut self.client.rbuf,
            &mut self.client_pass,
            self.server.as_mut(),
            max,
            HIGH_WATER,
            &mut self.copy_in,
        );
        let moved_bytes = before - self.client.rbuf.len();
        let moved = moved_bytes != 0;
        if moved {
            self.shared.stats.received.add(moved_bytes as u64);
            if self.server.is_some() && self.query_start.is_none() {
                let now = Instant::now();
                self.query_start = Some(now);
                self.xact_start.get_or_insert(now);
                self.shared.request_time.store(
                    crate::stats::now_micros(),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
        match scan {
            ClientScan::Done => moved,
            ClientScan::NeedServer => {
                if matches!(self.phase, Phase::Idle) {
                    self.start_acquire();
                    if self.server.is_some() {
                        // Got one at once: forward now, before anything could release it.
                        self.pump_client();
                    }
                    return true;
                }
                moved
            }
            ClientScan::Terminate => {
                self.client_gone("client close request");
                true
            }
            ClientScan::Violation(msg) => {
                self.fatal(sqlstate::PROTOCOL_VIOLATION, &msg, None);
                true
            }
        }
    }

    fn start_acquire(&mut self) {
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
                self.phase = Phase::Waiting { handle, since };
                self.arm_wait_timer(since);
            }
        }
    }

    /// The next deadline while queued: reserve_pool_timeout (if a reserve exists), then
    /// query_wait_timeout.
    fn arm_wait_timer(&mut self, since: Instant) {
        let g = &self.cfg.pooler;
        let settings = self.pool.settings();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        if settings.reserve > 0 {
            let t = since + settings.reserve_timeout;
            if t > now {
                next = Some(t);
            }
        }
        if !g.query_wait_timeout.is_zero() {
            let t = since + g.query_wait_timeout;
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        self.set_timer(next);
    }

    fn set_timer(&mut self, at: Option<Instant>) {
        match at {
            None => self.timer = None,
            Some(at) => {
                if self.timer.as_ref().is_some_and(|(t, _)| *t == at) {
                    return;
                }
                self.timer = Some((at, Box::pin(compio::time::sleep_until(at))));
            }
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((_, t)) = &mut self.timer else {
            return false;
        };
        if t.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.on_timer();
        true
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(d) = self.cleanup.deadline
            && now >= d
            && self.server.is_some()
        {
            tracing::warn!(
                client = self.shared.id,
                "server did not become clean within {CLEANUP_TIMEOUT:?} after its client left; closing it"
            );
            self.drop_server();
            return;
        }
        if let Phase::Waiting { since, .. } = &self.phase {
            let since = *since;
            let waited = now.duration_since(since);
            let qwt = self.cfg.pooler.query_wait_timeout;
            if !qwt.is_zero() && waited >= qwt {
                self.phase = Phase::Idle;
                self.fatal(sqlstate::PROTOCOL_VIOLATION, "query_wait_timeout", None);
                return;
            }
            let settings = self.pool.settings();
            if settings.reserve > 0
                && waited >= settings.reserve_timeout
                && let Some(permit) = self.pool.try_reserve(self.shared.id)
            {
                tracing::info!(
                    client = self.shared.id,
                    pool = ?self.pool.key,
                    "using the reserve pool after waiting {waited:?}"
                );
                self.phase = Phase::Idle;
                self.on_grant(Grant::Connect(permit));
                return;
            }
            // Reserve full or not due yet: wait for the next deadline.
            let mut next = None;
            if !qwt.is_zero() {
                next = Some(since + qwt);
            }
            self.set_timer(next);
        }
    }

    fn on_grant(&mut self, grant: Grant) {
        match grant {
            Grant::Server(idle) => {
                self.phase = Phase::Idle;
                if !crate::net::is_alive(&idle.socket) {
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
                let sv = ServerConn::from_idle(idle, self.server_read_size());
                self.link(sv);
            }
            Grant::Connect(permit) => {
                let target = permit.pool().target.clone();
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
        }
    }

    fn poll_phase(&mut self, cx: &mut Context<'_>) -> bool {
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
                    self.phase = Phase::Idle;
                    self.timer = None;
                    self.fatal(
                        sqlstate::QUERY_CANCELED,
                        "canceling statement due to user request",
                        None,
                    );
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

    /// Takes a server into use: first the SET statements that give it this client's
    /// parameters (pipelined ahead of the client's request, no extra round trip).
    fn link(&mut self, mut sv: ServerConn) {
        let st = &self.shared.stats;
        st.server_assignments.add(1);
        if let Some(t) = self.wait_start.take() {
            st.wait_time.add(t.elapsed().as_micros() as u64);
        }
        self.shared
            .state
            .set_client(crate::stats::ClientState::Active);
        self.shared
            .server
            .store(sv.info.id, std::sync::atomic::Ordering::Relaxed);
        sv.info.shared.set_client(self.shared.id);
        if let Some(sql) = self.params.sync(&mut sv.info) {
            sv.send_internal(&sql, Internal::SetParams);
        }
        self.server = Some(sv);
        self.publish();
        if self.state != ClientState::Alive && self.cleanup.deadline.is_none() {
            self.cleanup.deadline = Some(Instant::now() + CLEANUP_TIMEOUT);
        }
    }

    fn publish(&mut self) {
        if let Some(s) = &self.server {
            self.shared.set_linked(s.info.pid, s.info.secret);
            self.published = true;
        }
    }

    /// Whether the linked server should have a receive in flight.
    fn want_server_recv(&self) -> bool {
        let Some(s) = &self.server else {
            return false;
        };
        if s.conn.is_eof() {
            return false;
        }
        if !s.tracker.is_idle() {
            return true;
        }
        // In session mode the server stays linked: keep listening so notifications and
        // a server going away are seen at once.
        self.mode == PoolMode::Session && self.state == ClientState::Alive
    }

    fn poll_server_recv(&mut self, cx: &mut Context<'_>) -> bool {
        if self.client.send_backlog() > HIGH_WATER && self.state != ClientState::Gone {
            return false;
        }
        let mut progress = false;
        if self.want_server_recv()
            || self
                .server
                .as_ref()
                .is_some_and(|s| s.conn.recv_in_flight())
        {
            let s = self.server.as_mut().expect("checked");
            match s.conn.poll_recv(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(0)) => {
                    self.server_lost("server closed the connection unexpectedly", None);
                    return true;
                }
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(e)) => {
                    self.server_lost(&format!("server connection error: {e}"), None);
                    return true;
                }
            }
        }
        if self
            .server
            .as_ref()
            .is_some_and(|s| !s.conn.rbuf.is_empty())
        {
            progress |= self.pump_server();
        }
        progress
    }

    fn pump_server(&mut self) -> bool {
        let tracked = {
            let cfg = self.cfg.clone();
            move |n: &str| super::startup::tracked_name(&cfg.pooler, n)
        };
        let Some(s) = self.server.as_mut() else {
            return false;
        };
        let before = s.conn.rbuf.len();
        let client_before = self.client.wbuf.len();
        let out = (self.state == ClientState::Alive).then_some(&mut self.client.wbuf);
        let scan = forward::server_to_client(
            s,
            out,
            &mut self.params,
            &tracked,
            HIGH_WATER,
            &mut self.copy_in,
            self.mode == PoolMode::Statement,
        );
        let moved = s.conn.rbuf.len() != before;
        if self.state == ClientState::Alive {
            let sent = self.client.wbuf.len().saturating_sub(client_before);
            self.shared.stats.sent.add(sent as u64);
        }
        if scan.client_ready > 0 {
            self.count_replies(&scan);
        }
        if let Some(name) = &scan.application_name
            && let Ok(mut a) = self.shared.application_name.lock()
        {
            a.clone_from(name);
        }
        if let Some(v) = scan.violation {
            self.server_lost(&format!("server protocol violation: {v}"), None);
            return true;
        }
        if let Some(f) = scan.fatal {
            self.server_lost("server closed the connection unexpectedly", Some(f));
            return true;
        }
        if scan.began_transaction {
            backend::error_response(
                &mut self.client.wbuf,
                Severity::Error,
                sqlstate::FEATURE_NOT_SUPPORTED,
                "transaction blocks are not allowed in statement pooling mode",
                Some(
                    "pool_mode is \"statement\": every statement runs on its own; the transaction was rolled back",
                ),
            );
            backend::ready_for_query(&mut self.client.wbuf, b'I');
            if let Some(s) = self.server.as_mut() {
                s.send_internal("ROLLBACK", Internal::Rollback);
            }
        }
        moved
    }

    /// Query and transaction counts and times, at the ReadyForQuery that ends them.
    fn count_replies(&mut self, scan: &forward::ServerScan) {
        let now = Instant::now();
        let st = &self.shared.stats;
        st.queries.add(scan.client_ready as u64);
        if let Some(q) = self.query_start.take() {
            st.query_time.add(now.duration_since(q).as_micros() as u64);
        }
        if self
            .server
            .as_ref()
            .is_some_and(|s| s.tracker.awaiting_replies())
        {
            self.query_start = Some(now);
        }
        if scan.last_status == b'I' {
            st.xacts.add(1);
            if let Some(x) = self.xact_start.take() {
                st.xact_time.add(now.duration_since(x).as_micros() as u64);
            }
        }
    }

    /// The linked server died: tell the client (08006) and close it; free the slot.
    fn server_lost(&mut self, why: &str, fatal: Option<ErrorFields>) {
        let detail = fatal
            .as_ref()
            .map(|f| format!("the server said: {} {}: {}", f.severity, f.code, f.message));
        if let Some(s) = &self.server {
            tracing::warn!(
                server = s.info.id,
                client = self.shared.id,
                "{why}{}",
                detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
        self.drop_server();
        self.fatal(sqlstate::CONNECTION_FAILURE, why, detail.as_deref());
    }

    fn drop_server(&mut self) {
        self.shared
            .server
            .store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.server.take() {
            self.shared.clear_linked();
            self.published = false;
            drop(s);
            self.pool.server_closed();
        }
        self.client_pass = 0;
        self.cleanup = Cleanup::default();
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if self.state != ClientState::Gone {
            let had = self.client.send_backlog();
            match self.client.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    progress |= had != 0;
                    if self.state == ClientState::Closing {
                        self.state = ClientState::Gone;
                        if self.server.is_some() && self.cleanup.deadline.is_none() {
                            self.cleanup.deadline = Some(Instant::now() + CLEANUP_TIMEOUT);
                        }
                        progress = true;
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.client_gone(&format!("client write error: {e}"));
                    progress = true;
                }
                Poll::Pending => progress |= had != self.client.send_backlog(),
            }
        }
        if let Some(s) = self.server.as_mut() {
            let had = s.conn.send_backlog();
            match s.conn.poll_flush(cx) {
                Poll::Ready(Ok(())) => progress |= had != 0,
                Poll::Ready(Err(e)) => {
                    self.server_lost(&format!("server write error: {e}"), None);
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        progress
    }

    /// Brings a server whose client left back to a clean state, step by step: stop the
    /// running query, end an open COPY or extended exchange, roll back, reset.
    fn step_cleanup(&mut self) -> bool {
        if self.state != ClientState::Gone {
            return false;
        }
        let Some(s) = self.server.as_mut() else {
            return false;
        };
        if self.client_pass > 0 || s.conn.is_eof() {
            // Half a message reached the server: its stream cannot be resumed.
            self.drop_server();
            return true;
        }
        if let Some(d) = self.cleanup.deadline
            && self.timer.as_ref().is_none_or(|(t, _)| *t != d)
        {
            self.set_timer(Some(d));
        }
        let s = self.server.as_mut().expect("checked");
        let c = &mut self.cleanup;
        if self.copy_in && !c.copy_failed {
            c.copy_failed = true;
            let mut b = bytes::BytesMut::new();
            let _ = postgres_protocol::message::frontend::copy_fail("client disconnected", &mut b);
            s.conn.wbuf.extend_from_slice(&b);
            return true;
        }
        if s.tracker.awaiting_replies() {
            if !c.cancel_sent && !s.tracker.has_internal() {
                c.cancel_sent = true;
                super::cancel::spawn_server_cancel(self.pool.clone(), s.info.pid, s.info.secret);
                return true;
            }
            return false;
        }
        if !s.tracker.is_idle() {
            // Extended messages without their Sync: close the exchange.
            if !c.sync_sent {
                c.sync_sent = true;
                let mut b = bytes::BytesMut::new();
                postgres_protocol::message::frontend::sync(&mut b);
                s.conn.wbuf.extend_from_slice(&b);
                s.tracker.client_message(crate::proto::frontend::tag::SYNC);
                return true;
            }
            return false;
        }
        if s.tracker.status() != b'I' {
            if !c.rollback_sent {
                c.rollback_sent = true;
                s.send_internal("ROLLBACK", Internal::Rollback);
                return true;
            }
            return false;
        }
        let reset = &self.cfg.pooler.server_reset_query;
        let wants_reset =
            self.mode == PoolMode::Session || self.cfg.pooler.server_reset_query_always;
        if wants_reset && !reset.trim().is_empty() && !c.reset_sent {
            c.reset_sent = true;
            let reset = reset.clone();
            s.send_internal(&reset, Internal::Reset);
            return true;
        }
        false
    }

    /// A whole message header from the client is waiting to be forwarded.
    fn client_has_message(&self) -> bool {
        self.client.rbuf.len() >= crate::proto::frame::HEADER_LEN
    }

    /// Gives the server back to the pool when the mode allows and it is clean.
    fn maybe_release(&mut self) -> bool {
        let Some(s) = &self.server else {
            return false;
        };
        let clean = s.tracker.releasable()
            && !s.conn.recv_in_flight()
            && s.conn.send_idle()
            && s.conn.rbuf.is_empty()
            && s.pass_remaining == 0
            && self.client_pass == 0;
        if !clean {
            return false;
        }
        match self.state {
            ClientState::Alive => {
                if self.mode == PoolMode::Session || self.client_has_message() {
                    return false;
                }
                if self.cfg.pooler.server_reset_query_always
                    && !self.cfg.pooler.server_reset_query.trim().is_empty()
                    && !self.cleanup.reset_sent
                {
                    self.cleanup.reset_sent = true;
                    let q = self.cfg.pooler.server_reset_query.clone();
                    if let Some(s) = self.server.as_mut() {
                        s.send_internal(&q, Internal::Reset);
                    }
                    return true;
                }
            }
            ClientState::Closing => return false,
            ClientState::Gone => {
                // step_cleanup decides whether a reset is still due.
                let wants_reset = (self.mode == PoolMode::Session
                    || self.cfg.pooler.server_reset_query_always)
                    && !self.cfg.pooler.server_reset_query.trim().is_empty();
                if wants_reset && !self.cleanup.reset_sent {
                    return false;
                }
            }
        }
        // A cancel being delivered to this server must land before anyone else uses it.
        self.published = false;
        if self.shared.clear_linked() {
            return false;
        }
        let s = self.server.take().expect("checked");
        self.cleanup = Cleanup::default();
        self.shared
            .server
            .store(0, std::sync::atomic::Ordering::Relaxed);
        match s.into_idle() {
            Some(idle) => self.pool.release(idle),
            None => self.pool.server_closed(),
        }
        true
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.finish();
        self.app.clients.unregister(&self.shared);
        self.pool.client_left(&self.shared.stats.values());
    }
}
