//! Timeouts as deadlines: one timer, armed for the nearest deadline of the current state;
//! when it fires, the state says which timeout it was. Reads are never dropped for it.

use super::*;

impl Session {
    /// The nearest deadline that applies in the current state, if any.
    fn next_deadline(&self) -> Option<Instant> {
        let g = &self.cfg.pooler;
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        match self.state {
            ClientState::Gone => {
                if self.server.is_some()
                    && let Some(d) = self.cleanup.deadline
                {
                    consider(d);
                }
            }
            ClientState::Closing => {}
            ClientState::Alive => {
                // A queued client needs no timer: the pool's janitor enforces
                // query_wait_timeout and reserve_pool_timeout for its whole queue.
                if matches!(self.phase, Phase::Waiting { .. }) {
                    return None;
                }
                if let Some(check) = self.checking {
                    consider(check);
                }
                if let Some(s) = &self.server {
                    if s.tracker.awaiting_replies() {
                        if !g.query_timeout.is_zero()
                            && let Some(q) = self.query_start
                        {
                            consider(q + g.query_timeout);
                        }
                    } else if s.tracker.status() != b'I' {
                        if !g.idle_transaction_timeout.is_zero() {
                            consider(self.idle_since + g.idle_transaction_timeout);
                        }
                    } else if !g.client_idle_timeout.is_zero() {
                        consider(self.idle_since + g.client_idle_timeout);
                    }
                } else if matches!(self.phase, Phase::Idle) && !g.client_idle_timeout.is_zero() {
                    consider(self.idle_since + g.client_idle_timeout);
                }
            }
        }
        next
    }

    /// The server being checked before reuse did not answer in time: drop it; the client
    /// waits for another unless query_wait_timeout is already spent.
    fn check_timed_out(&mut self) {
        let g = &self.cfg.pooler;
        let limit = g.server_connect_timeout;
        let qwt = g.query_wait_timeout;
        tracing::warn!(
            client = self.shared.id,
            server = self.server.as_ref().map_or(0, |s| s.info.id),
            "server did not answer server_check_query; closing it"
        );
        self.checking = None;
        self.drop_server();
        if !qwt.is_zero() && qwt <= limit {
            let secs = qwt.as_secs_f64();
            self.fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "query_wait_timeout",
                Some(&format!(
                    "no working server connection became available within {secs} s \
                     (the idle one checked by server_check_query did not answer)"
                )),
            );
        } else {
            self.start_acquire();
        }
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

    /// Arms the timer for the current state and polls it.
    pub(super) fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let at = self.next_deadline();
        self.set_timer(at);
        let Some((_, t)) = &mut self.timer else {
            return false;
        };
        if t.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.on_timer(Instant::now());
        true
    }

    fn on_timer(&mut self, now: Instant) {
        let g = self.cfg.pooler.clone();
        let secs = |d: Duration| d.as_secs_f64();
        match self.state {
            ClientState::Gone => {
                if self.cleanup.deadline.is_some_and(|d| now >= d) && self.server.is_some() {
                    tracing::warn!(
                        client = self.shared.id,
                        "server did not become clean within {CLEANUP_TIMEOUT:?} after its client left; closing it"
                    );
                    self.drop_server();
                }
            }
            ClientState::Closing => {}
            ClientState::Alive => {
                if let Some(check) = self.checking
                    && now >= check
                {
                    self.check_timed_out();
                    return;
                }
                let Some(s) = &self.server else {
                    if !g.client_idle_timeout.is_zero()
                        && now >= self.idle_since + g.client_idle_timeout
                    {
                        self.fatal(sqlstate::IDLE_SESSION_TIMEOUT, "client_idle_timeout", None);
                    }
                    return;
                };
                if s.tracker.awaiting_replies() {
                    if self
                        .query_start
                        .is_some_and(|q| !g.query_timeout.is_zero() && now >= q + g.query_timeout)
                    {
                        // The session cleanup cancels the query and rolls back.
                        self.fatal(
                            sqlstate::QUERY_CANCELED,
                            "query_timeout",
                            Some(&format!(
                                "the query ran longer than {} s",
                                secs(g.query_timeout)
                            )),
                        );
                    }
                } else if s.tracker.status() != b'I' {
                    if !g.idle_transaction_timeout.is_zero()
                        && now >= self.idle_since + g.idle_transaction_timeout
                    {
                        self.fatal(
                            sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                            "idle_transaction_timeout",
                            Some(&format!(
                                "the transaction was idle longer than {} s and was rolled back",
                                secs(g.idle_transaction_timeout)
                            )),
                        );
                    }
                } else if !g.client_idle_timeout.is_zero()
                    && now >= self.idle_since + g.client_idle_timeout
                {
                    self.fatal(sqlstate::IDLE_SESSION_TIMEOUT, "client_idle_timeout", None);
                }
            }
        }
    }
}
