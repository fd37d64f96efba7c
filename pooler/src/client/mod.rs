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
pub fn serve(app: Arc<App>, socket: Socket, peer: String) -> impl Future<Output = ()> {
    // Counted from the accept (not from the task's first poll, which a graceful shutdown
    // could miss) until the login ends; a logged-in client is registered with its pool
    // before the count drops.
    let arriving = Arriving::new(app.clone());
    serve_counted(app, socket, peer, arriving)
}

/// A connection in its startup and login, counted in [`registry::ClientRegistry::arriving`].
struct Arriving(Arc<App>);

impl Arriving {
    fn new(app: Arc<App>) -> Self {
        app.clients.arrive();
        Arriving(app)
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.clients.arrived();
    }
}

async fn serve_counted(app: Arc<App>, socket: Socket, peer: String, arriving: Arriving) {
    let started = std::time::Instant::now();
    // Boxed, like the session below: the login's state is large and needed only for a
    // moment; inline, every client would carry its size for as long as it stays
    // connected (memory per idle client).
    // The block ends the login's locals before the session runs, so the task does not
    // keep room for them (a moved-from local still takes space until its scope ends).
    let (run, admission, id, db, user, log) = {
        let Some(ready) = Box::pin(start(&app, socket, &peer, arriving)).await else {
            return;
        };
        let Ready {
            session,
            admission,
            id,
            db,
            user,
            log,
        } = ready;
        (Box::pin(session.run()), admission, id, db, user, log)
    };
    let end = run.await;
    drop(admission);
    if log {
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

/// A client through its login, with its session ready to run.
struct Ready<'a> {
    session: session::Session,
    admission: registry::Admission<'a>,
    id: u64,
    db: String,
    user: String,
    /// log_disconnections.
    log: bool,
}

/// Startup, authentication and login; admin-console clients are served here to the end.
async fn start<'a>(
    app: &'a Arc<App>,
    socket: Socket,
    peer: &str,
    arriving: Arriving,
) -> Option<Ready<'a>> {
    let cfg = app.config();
    // Small while the client is quiet (idle clients pin little memory), growing to
    // 64 kB under bulk traffic such as COPY.
    let max_read = (cfg.pooler.pkt_buf as usize).max(64 * 1024);
    let mut conn = Conn::adaptive(socket, 512, max_read);
    let id = app.clients.next_id();
    let timeout = cfg.pooler.client_login_timeout;
    let attempt = login::login(app, &cfg, &mut conn, peer, id);
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
            // Console clients do not hold a graceful shutdown up.
            drop(arriving);
            crate::admin::serve(app.clone(), conn, a.shared.clone(), a.role).await;
            app.clients.unregister(&a.shared);
            drop(a.admission);
            return None;
        }
        Ok(None) => return None,
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
            return None;
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
    Some(Ready {
        session,
        admission: done.admission,
        id,
        db,
        user,
        log: cfg.pooler.log_disconnections,
    })
}
