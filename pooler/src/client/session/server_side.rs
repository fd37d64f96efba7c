//! The linked server: reading its replies, losing it, cleaning it after its client left,
//! and giving it back to the pool.

use super::*;

impl Session {
    /// Whether the linked server should have a receive in flight.
    pub(super) fn want_server_recv(&self) -> bool {
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

    pub(super) fn poll_server_recv(&mut self, cx: &mut Context<'_>) -> bool {
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

    pub(super) fn pump_server(&mut self) -> bool {
        let tracks = self.tracks_statements();
        let cfg = &*self.cfg;
        let tracked = move |n: &str| crate::client::startup::tracked_name(&cfg.pooler, n);
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
            &mut self.flow.copy_in,
            self.mode == PoolMode::Statement,
            tracks.then_some(&mut self.statements),
            cfg.pooler.max_prepared_statements as usize,
        );
        let moved = s.conn.rbuf.len() != before;
        if self.checking.is_some() && !s.tracker.has_internal() {
            self.checking = None;
        }
        if self.state == ClientState::Alive {
            let sent = self.client.wbuf.len().saturating_sub(client_before);
            self.shared.stats.sent.add(sent as u64);
        }
        if scan.client_ready > 0 {
            self.count_replies(&scan);
        }
        if tracks {
            self.publish_statement_counts();
        }
        if scan.stale_plans {
            self.pool.bump_statements_epoch();
            if let Some(s) = self.server.as_mut() {
                s.info.prepared.epoch = self.pool.statements_epoch();
            }
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
    pub(super) fn count_replies(&mut self, scan: &forward::ServerScan) {
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
        if !self
            .server
            .as_ref()
            .is_some_and(|s| s.tracker.awaiting_replies())
        {
            self.idle_since = now;
        }
        if scan.last_status == b'I' {
            st.xacts.add(1);
            if let Some(x) = self.xact_start.take() {
                st.xact_time.add(now.duration_since(x).as_micros() as u64);
            }
        }
    }

    /// The linked server died: tell the client (08006) and close it; free the slot.
    pub(super) fn server_lost(&mut self, why: &str, fatal: Option<ErrorFields>) {
        if self.checking.is_some() && self.state == ClientState::Alive {
            // Nothing of the client's reached it: replace it silently.
            tracing::info!(
                client = self.shared.id,
                "server failed its check ({why}); replacing it"
            );
            self.checking = None;
            self.drop_server();
            self.start_acquire();
            return;
        }
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

    pub(super) fn drop_server(&mut self) {
        self.shared
            .server
            .store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.server.take() {
            self.shared.clear_linked();
            self.published = false;
            drop(s);
            self.pool.server_closed();
        }
        self.flow.pass = 0;
        self.cleanup = Cleanup::default();
    }

    /// Brings a server whose client left back to a clean state, step by step: stop the
    /// running query, end an open COPY or extended exchange, roll back, reset.
    pub(super) fn step_cleanup(&mut self) -> bool {
        if self.state != ClientState::Gone {
            return false;
        }
        let Some(s) = self.server.as_mut() else {
            return false;
        };
        if self.flow.pass > 0 || s.conn.is_eof() {
            // Half a message reached the server: its stream cannot be resumed.
            self.drop_server();
            return true;
        }
        let s = self.server.as_mut().expect("checked");
        let c = &mut self.cleanup;
        if self.flow.copy_in && !c.copy_failed {
            c.copy_failed = true;
            let mut b = bytes::BytesMut::new();
            let _ = postgres_protocol::message::frontend::copy_fail("client disconnected", &mut b);
            s.conn.wbuf.extend_from_slice(&b);
            return true;
        }
        if s.tracker.awaiting_replies() {
            if !c.cancel_sent && !s.tracker.has_internal() {
                c.cancel_sent = true;
                crate::client::cancel::spawn_server_cancel(
                    self.pool.clone(),
                    self.shared.clone(),
                    s.info.pid,
                    s.info.secret,
                );
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
                // The pooler's own Sync: its ReadyForQuery is consumed, and nothing
                // mistakes it for a client request still running (to be cancelled).
                s.tracker.push(crate::proto::tracker::Slot::new(
                    crate::proto::tracker::Request::Sync,
                    crate::proto::tracker::Owner::Internal(Internal::Rollback),
                ));
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
    pub(super) fn client_has_message(&self) -> bool {
        self.client.rbuf.len() >= crate::proto::frame::HEADER_LEN
    }

    /// Gives the server back to the pool when the mode allows and it is clean.
    pub(super) fn maybe_release(&mut self) -> bool {
        let Some(s) = &self.server else {
            return false;
        };
        let clean = s.tracker.releasable()
            && !s.conn.recv_in_flight()
            && s.conn.send_idle()
            && s.conn.rbuf.is_empty()
            && s.pass_remaining == 0
            && self.flow.pass == 0;
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
        match (*s).into_idle() {
            Some(idle) => self.pool.release(idle),
            None => self.pool.server_closed(),
        }
        true
    }
}
