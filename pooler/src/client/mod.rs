//! Client connections: startup, authentication, login to a pool, then the session loop.

mod auth;
mod cancel;
mod forward;
mod login;
mod params;
mod prepared;
pub use prepared::Replay;
pub mod registry;
mod session;
mod startup;

use std::sync::Arc;

use socket2::Socket;

use crate::{
    app::App,
    net::Conn,
    proto::{
        backend::{self, Severity},
        sqlstate,
    },
};

/// An error that ends a client's login or session: sent as a FATAL ErrorResponse unless
/// the client is already gone.
#[derive(Debug, Clone)]
pub struct Fatal {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    /// The client is gone: nothing to send, nothing worth logging as an error.
    pub quiet: bool,
}

impl Fatal {
    pub fn new(code: &str, message: impl Into<String>) -> Fatal {
        Fatal {
            code: code.to_string(),
            message: message.into(),
            detail: None,
            quiet: false,
        }
    }

    pub fn with_detail(mut self, detail: Option<&str>) -> Fatal {
        self.detail = detail.map(str::to_string);
        self
    }

    pub fn gone() -> Fatal {
        Fatal::new(sqlstate::CONNECTION_FAILURE, "client went away").quiet()
    }

    pub fn quiet(mut self) -> Fatal {
        self.quiet = true;
        self
    }
}

/// Serves one accepted client connection until it ends.
pub async fn serve(app: Arc<App>, socket: Socket, peer: String) {
    let cfg = app.config();
    let read_size = (cfg.pooler.pkt_buf as usize).max(8 * 1024);
    let mut conn = Conn::new(socket, read_size);
    let id = app.clients.next_id();
    let started = std::time::Instant::now();

    let timeout = cfg.pooler.client_login_timeout;
    let attempt = login::login(&app, &cfg, &mut conn, &peer, id);
    let outcome = if timeout.is_zero() {
        attempt.await
    } else {
        match compio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                "client_login_timeout",
            )),
        }
    };
    let done = match outcome {
        Ok(Some(login::Login::Session(s))) => s,
        Ok(Some(login::Login::Admin(a))) => {
            crate::admin::serve(app.clone(), conn, a.shared.clone(), a.role).await;
            app.clients.unregister(&a.shared);
            drop(a.admission);
            return;
        }
        Ok(None) => return,
        Err(f) => {
            if !f.quiet {
                if cfg.pooler.log_pooler_errors {
                    tracing::info!(client = id, %peer, "login refused: {} ({})", f.message, f.code);
                }
                backend::error_response(
                    &mut conn.wbuf,
                    Severity::Fatal,
                    &f.code,
                    &f.message,
                    f.detail.as_deref(),
                );
                let _ =
                    compio::time::timeout(std::time::Duration::from_secs(5), conn.flush()).await;
            }
            return;
        }
    };
    let db = done.pool.key.db.clone();
    let user = done.pool.key.user.clone();
    let session = session::Session::new(
        app.clone(),
        cfg.clone(),
        done.shared,
        done.pool,
        conn,
        done.params,
        done.creds,
        None,
    );
    let end = session.run().await;
    drop(done.admission);
    if cfg.pooler.log_disconnections {
        tracing::info!(
            client = id,
            %peer,
            db = %db,
            user = %user,
            "closing because: {} (age={:.3}s)",
            end.0,
            started.elapsed().as_secs_f64()
        );
    }
}
