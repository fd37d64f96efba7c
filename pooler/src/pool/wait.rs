//! The two tickets a client can hold while it has no server yet: a place in a pool's
//! queue, and permission to open a new server connection. Both give back what they hold
//! when dropped, so a client that vanishes never leaks a slot or a server.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_channel::oneshot;
use futures_util::FutureExt;

use super::{Grant, Pool};

/// A place in a pool's FIFO queue.
pub struct WaitHandle {
    pool: Arc<Pool>,
    id: u64,
    rx: oneshot::Receiver<Grant>,
    done: bool,
}

impl WaitHandle {
    pub(super) fn new(pool: Arc<Pool>, id: u64, rx: oneshot::Receiver<Grant>) -> Self {
        WaitHandle {
            pool,
            id,
            rx,
            done: false,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Ready when a server or a permit is handed over (possibly from another thread).
    pub fn poll_grant(&mut self, cx: &mut Context<'_>) -> Poll<Grant> {
        match self.rx.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.done = true;
                Poll::Ready(r.unwrap_or_else(|_| {
                    Grant::Failed(Arc::new(crate::server::ServerError::Pooler(
                        "the pool was closed".into(),
                    )))
                }))
            }
        }
    }

    /// Gives up the place in the queue now and returns whatever was granted meanwhile.
    pub fn leave(mut self) -> Option<Grant> {
        self.done = true;
        if self.pool.dequeue(self.id) {
            return None;
        }
        // Not in the queue any more: a grant was sent (or is being sent) to us.
        self.rx.close();
        self.rx.try_recv().ok().flatten()
    }
}

impl Drop for WaitHandle {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.pool.dequeue(self.id) {
            return;
        }
        self.rx.close();
        if let Ok(Some(grant)) = self.rx.try_recv() {
            give_back(&self.pool, grant);
        }
    }
}

/// Returns an unused grant to its pool.
pub fn give_back(pool: &Arc<Pool>, grant: Grant) {
    match grant {
        Grant::Server(s) => pool.release(s),
        Grant::Connect(permit) => drop(permit),
        Grant::Failed(_) | Grant::TimedOut => {}
    }
}

/// Permission to open one server connection; the slot is counted as connecting until
/// `connected` or `failed` (or drop, which counts as failed without an error).
pub struct ConnectPermit {
    pool: Option<Arc<Pool>>,
}

impl ConnectPermit {
    pub(super) fn new(pool: Arc<Pool>) -> Self {
        ConnectPermit { pool: Some(pool) }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        self.pool.as_ref().expect("permit used after consumption")
    }

    /// The connection is up: the slot now counts as an active server.
    pub fn connected(mut self, info: &mut super::ServerInfo) {
        if let Some(p) = self.pool.take() {
            p.add_server(info);
            p.permit_used(info);
        }
    }

    /// The connection failed; `error` (a login error from PostgreSQL) makes new clients
    /// fail fast for `server_login_retry` instead of piling up.
    pub fn failed(mut self, error: Option<Arc<crate::server::ServerError>>) {
        if let Some(p) = self.pool.take() {
            p.permit_failed(error);
        }
    }

    /// Drops the permit without touching the pool (the caller already undid the count).
    pub(super) fn forget(mut self) {
        self.pool = None;
    }
}

impl Drop for ConnectPermit {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.permit_failed(None);
        }
    }
}
