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

mod acquire;
mod deadlines;
mod server_side;

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
    /// Queued: the pool's janitor enforces query_wait_timeout and reserve_pool_timeout.
    Waiting { handle: WaitHandle },
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
    flow: forward::ClientFlow,
    /// This client's named prepared statements (transaction and statement mode).
    statements: super::prepared::ClientStatements,
    /// Boxed: an idle client (most of them, most of the time) then pays a pointer for
    /// it, not the ~480 bytes of a linked server's state.
    server: Option<Box<ServerConn>>,
    published: bool,
    phase: Phase,
    state: ClientState,
    end: Option<String>,
    timer: Option<(Instant, Timer)>,
    cleanup: Cleanup,
    /// When the request being answered / the transaction in progress / the wait began.
    query_start: Option<Instant>,
    xact_start: Option<Instant>,
    wait_start: Option<Instant>,
    /// Since when the client has had nothing in flight (client_idle_timeout,
    /// idle_transaction_timeout).
    idle_since: Instant,
    /// The linked server is being checked (server_check_query) until it answers or this
    /// deadline passes: hold the client's requests meanwhile.
    checking: Option<Instant>,
    cfg_generation: u64,
    /// Client messages being dropped after a cancel answered them (see Discard).
    discard: Option<forward::Discard>,
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
        let cfg_generation = app.config_generation();
        let mut s = Session {
            app,
            cfg,
            shared,
            pool,
            mode,
            client,
            params,
            creds,
            flow: forward::ClientFlow::default(),
            statements: Default::default(),
            server: None,
            published: false,
            phase: Phase::Idle,
            state: ClientState::Alive,
            end: None,
            timer: None,
            cleanup: Cleanup::default(),
            query_start: None,
            xact_start: None,
            wait_start: None,
            idle_since: Instant::now(),
            checking: None,
            cfg_generation,
            discard: None,
        };
        if let Some(sv) = server {
            s.link(sv);
        }
        s
    }

    /// The session's future: the session itself and nothing else (no async-fn frame
    /// around it), so an idle client costs what its state costs.
    pub fn run(mut self) -> impl Future<Output = End> {
        poll_fn(move |cx| {
            let r = self.poll(cx);
            if r.is_ready() {
                self.finish();
            }
            r
        })
    }

    fn max_packet(&self) -> u32 {
        self.cfg.pooler.max_packet_size
    }

    fn server_read_size(&self) -> usize {
        (self.cfg.pooler.pkt_buf as usize).max(16 * 1024)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        self.shared.register(cx);
        self.client.unpark();
        if let Some(s) = self.server.as_mut() {
            s.conn.unpark();
        }
        if self.app.config_generation() != self.cfg_generation {
            // RELOAD/SET: timeouts, limits and the pool mode take effect at once.
            self.cfg_generation = self.app.config_generation();
            self.cfg = self.app.config();
            self.mode = self.pool.mode();
        }
        if let Some(reason) = self.shared.take_killed() {
            // The server may be mid-transaction: close it rather than clean it.
            self.drop_server();
            self.phase = Phase::Idle;
            self.fatal(sqlstate::ADMIN_SHUTDOWN, &reason, None);
        }
        if self.app.is_suspended() {
            return self.poll_suspended(cx);
        }
        loop {
            let mut progress = false;
            progress |= self.poll_client_recv(cx);
            progress |= self.pump_client();
            progress |= self.poll_phase(cx);
            progress |= self.poll_server_recv(cx);
            progress |= self.poll_flush(cx, true);
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

    /// Under SUSPEND: send what is already owed to the client and the server, read
    /// nothing, then report the session parked; RESUME wakes it.
    fn poll_suspended(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        while self.poll_flush(cx, false) {
            if let Some(end) = self.finished() {
                return Poll::Ready(End(end));
            }
        }
        if let Some(end) = self.finished() {
            return Poll::Ready(End(end));
        }
        let client_flushed = self.state == ClientState::Gone || self.client.send_backlog() == 0;
        let server_flushed = self
            .server
            .as_ref()
            .is_none_or(|s| s.conn.send_backlog() == 0);
        let parked = client_flushed && server_flushed;
        if !parked && self.app.suspend_expired() {
            // suspend_timeout: PgBouncer drops a connection that cannot be flushed. Its
            // server cannot be cleaned up while suspended, so it is closed too.
            self.client_gone("suspend_timeout: pending output could not be sent");
            self.drop_server();
            return Poll::Ready(End(self.end.take().unwrap_or_default()));
        }
        self.shared
            .parked
            .store(parked, std::sync::atomic::Ordering::SeqCst);
        Poll::Pending
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
        if let Some(s) = &self.server {
            s.info
                .shared
                .state
                .set_server(crate::stats::ServerState::Used);
            if self.cleanup.deadline.is_none() {
                self.cleanup.deadline = Some(Instant::now() + CLEANUP_TIMEOUT);
            }
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
    /// Named prepared statements are the pooler's business in transaction and statement
    /// mode (in session mode they live on the client's own server).
    /// SHOW CLIENTS / SHOW SERVERS prepared_statements (two plain stores).
    pub(super) fn publish_statement_counts(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared
            .prepared
            .store(self.statements.len() as u64, Relaxed);
        if let Some(s) = &self.server {
            s.info
                .shared
                .prepared
                .store(s.info.prepared.len() as u64, Relaxed);
        }
    }

    pub(super) fn tracks_statements(&self) -> bool {
        self.mode != PoolMode::Session && self.cfg.pooler.max_prepared_statements > 0
    }

    fn pump_client(&mut self) -> bool {
        if self.state != ClientState::Alive
            || self.client.rbuf.is_empty()
            || self.checking.is_some()
        {
            return false;
        }
        if self.server.is_some() && !self.published {
            self.publish();
        }
        let max = self.max_packet();
        if let Some(d) = self.discard.as_mut() {
            let before = self.client.rbuf.len();
            match d.advance(&mut self.client.rbuf, max) {
                None => return self.client.rbuf.len() != before,
                Some(owed) => {
                    if owed {
                        backend::ready_for_query(&mut self.client.wbuf, b'I');
                    }
                    self.discard = None;
                }
            }
        }
        let before = self.client.rbuf.len();
        let tracks = self.tracks_statements();
        let prepared = tracks.then(|| forward::Prepared {
            statements: &mut self.statements,
            server_cap: self.cfg.pooler.max_prepared_statements as usize,
            client_cap: self.cfg.pooler.max_client_prepared_statements as usize,
            stats: &self.shared.stats,
        });
        let scan = forward::client_to_server(
            &mut self.client.rbuf,
            &mut self.flow,
            self.server.as_deref_mut(),
            max,
            HIGH_WATER,
            prepared,
        );
        if let Some(s) = self.server.as_mut() {
            // Replies the pooler made up with nothing owed before them go out now.
            forward::emit_fakes(s, Some(&mut self.client.wbuf));
            if tracks {
                self.publish_statement_counts();
            }
        }
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

    /// Takes a server into use: first the SET statements that give it this client's
    /// parameters (pipelined ahead of the client's request, no extra round trip).
    fn link(&mut self, mut sv: ServerConn) {
        let st = &self.shared.stats;
        st.server_assignments.add(1);
        if let Some(t) = self.wait_start.take() {
            let waited = t.elapsed().as_micros() as u64;
            st.wait_time.add(waited);
            self.pool.record_wait(waited);
        }
        self.shared
            .state
            .set_client(crate::stats::ClientState::Active);
        self.shared
            .server
            .store(sv.info.id, std::sync::atomic::Ordering::Relaxed);
        sv.info.shared.set_client(self.shared.id);
        let epoch = self.pool.statements_epoch();
        if sv.info.prepared.epoch != epoch {
            // Another server met a schema change since this one last prepared anything.
            sv.info.prepared.mark_stale();
            sv.info.prepared.epoch = epoch;
        }
        if let Some(sql) = self.params.sync(&mut sv.info) {
            sv.send_internal(&sql, Internal::SetParams);
        }
        self.server = Some(Box::new(sv));
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

    /// Sends what is queued both ways. With `lazy` (io_uring), a send whose completion
    /// nothing waits for does not wake the session (see `Conn::poll_flush_lazy`): the
    /// server's, always, since its reply wakes the session; the client's while a server is
    /// linked, since its next request will (once the server goes back, the last reply's
    /// completion is awaited so its buffer is freed).
    fn poll_flush(&mut self, cx: &mut Context<'_>, lazy: bool) -> bool {
        let lazy = lazy && self.app.backend == crate::net::Backend::IoUring;
        let mut progress = false;
        if self.state != ClientState::Gone {
            let had = self.client.send_backlog();
            let client_lazy = lazy && self.state == ClientState::Alive && self.server.is_some();
            match self.client.poll_flush_lazy(cx, client_lazy) {
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
            match s.conn.poll_flush_lazy(cx, lazy) {
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
}

impl Drop for Session {
    fn drop(&mut self) {
        self.finish();
        // Out of the registry, then into the pool's totals: a SHOW in between misses the
        // client for an instant (the console never reports a total below one it already
        // reported), rather than counting it twice.
        self.app.clients.unregister(&self.shared);
        self.pool.client_left(&self.shared.stats.values());
    }
}
