//! Cancel requests: a client's CancelRequest names one of *our* keys; it is forwarded with
//! the key of the server currently serving that client, and only while it serves it.

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;

use crate::{app::App, client::registry::ClientShared, net, pool::Pool};

/// How long delivering a cancel to PostgreSQL may take (PgBouncer's cancel_wait_timeout).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles a CancelRequest received on a new connection.
pub async fn handle(app: &App, pid: i32, secret: i32) {
    let Some(client) = app.clients.find(pid, secret) else {
        tracing::debug!("cancel request with an unknown key ignored");
        return;
    };
    let Some((spid, ssecret)) = client.begin_cancel() else {
        // Not on a server: if it is queued for one, that wait is what gets cancelled.
        client.cancel_wait();
        return;
    };
    let pool = client.pool.get().cloned();
    if let Some(pool) = pool
        && let Err(e) = send(&pool, spid, ssecret).await
    {
        tracing::warn!(client = client.id, "could not deliver cancel request: {e}");
    }
    client.cancel_done();
}

/// Sends a CancelRequest for a server and waits until PostgreSQL has processed it (it
/// closes the connection after signalling the backend).
pub async fn send(pool: &Pool, pid: i32, secret: i32) -> std::io::Result<()> {
    let fut = async {
        let socket = net::connect(&pool.target().addr).await?;
        let mut conn = net::Conn::new(socket, 64);
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::cancel_request(pid, secret, &mut b);
        conn.wbuf.extend_from_slice(&b);
        conn.flush().await?;
        while conn.recv().await? != 0 {
            conn.rbuf.clear();
        }
        Ok(())
    };
    compio::time::timeout(CANCEL_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "cancel timed out",
            ))
        })
}

/// Cancels whatever a server is running, in the background (used when its client left).
/// Counted as a cancel in flight for `client`, so its server is not given to anyone else
/// before the cancel has landed (it would hit the next client's query otherwise).
pub fn spawn_server_cancel(pool: Arc<Pool>, client: Arc<ClientShared>, pid: i32, secret: i32) {
    client.cancel_started();
    compio::runtime::spawn(async move {
        if let Err(e) = send(&pool, pid, secret).await {
            tracing::debug!("cancel for an abandoned query failed: {e}");
        }
        client.cancel_done();
    })
    .detach();
}
