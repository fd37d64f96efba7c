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

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

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

/// Serves one accepted client connection until it ends. `guard` counts it for /metrics
/// for as long as it lives, login and session alike.
pub fn serve(
    app: Arc<App>,
    socket: Socket,
    peer: String,
    guard: crate::metrics::SessionGuard,
) -> impl Future<Output = ()> {
    // Counted from the accept (not from the task's first poll, which a graceful shutdown
    // could miss) until the login ends; a logged-in client is registered with its pool
    // before the count drops.
    let arriving = Arriving::new(app.clone());
    serve_counted(app, socket, peer, arriving, guard)
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

/// The login runs in the accept's task; a logged-in client's session then runs in a task
/// of its own, on the same worker, and the login's task ends. The session's task holds
/// the session and little else (memory per idle client): none of the login's state, and
/// no second allocation around it.
async fn serve_counted(
    app: Arc<App>,
    socket: Socket,
    peer: String,
    arriving: Arriving,
    guard: crate::metrics::SessionGuard,
) {
    let started = Instant::now();
    // Boxed: the login's state is large and needed only for a moment.
    let Some(ready) = Box::pin(start(&app, socket, &peer, arriving)).await else {
        return;
    };
    let Ready {
        session,
        admission,
        log,
    } = ready;
    let task = SessionTask {
        shared: session.shared.clone(),
        run: session.run(),
        started,
        log,
        _admission: admission,
        _guard: guard,
    };
    compio::runtime::spawn(task).detach();
}

/// A logged-in client's task: its session, and the disconnection log line at the end.
/// The admission (max_client_conn) and the /metrics count are released when it is dropped.
struct SessionTask<F> {
    run: F,
    shared: Arc<registry::ClientShared>,
    started: Instant,
    /// log_disconnections.
    log: bool,
    _admission: registry::Admission,
    _guard: crate::metrics::SessionGuard,
}

impl<F: Future<Output = session::End> + Unpin> Future for SessionTask<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let end = std::task::ready!(Pin::new(&mut self.run).poll(cx));
        if self.log {
            let info = &self.shared.info;
            tracing::info!(
                client = self.shared.id,
                peer = %info.peer(),
                db = %info.database,
                user = %info.user,
                "closing because: {} (age={:.3}s)",
                end.0,
                self.started.elapsed().as_secs_f64()
            );
        }
        Poll::Ready(())
    }
}

/// A client through its login, with its session ready to run.
struct Ready {
    session: session::Session,
    admission: registry::Admission,
    /// log_disconnections.
    log: bool,
}

/// Startup, authentication and login; admin-console clients are served here to the end.
async fn start(app: &Arc<App>, socket: Socket, peer: &str, arriving: Arriving) -> Option<Ready> {
    let cfg = app.config();
    // Small while the client is quiet (idle clients pin little memory), growing to
    // 64 kB under bulk traffic such as COPY.
    let max_read = (cfg.pooler.pkt_buf as usize).max(64 * 1024);
    let mut conn = Conn::lean(socket, 512, max_read);
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
        log: cfg.pooler.log_disconnections,
    })
}
