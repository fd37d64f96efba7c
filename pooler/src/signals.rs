//! Signals with PgBouncer's meaning, handled on a dedicated thread (every other thread
//! has them blocked): SIGHUP reload; SIGTERM stop accepting and exit when the last client
//! leaves (a second SIGTERM: exit now); SIGINT stop accepting, exit once every server is
//! released; SIGQUIT exit now; SIGUSR1 PAUSE; SIGUSR2 RESUME (after PAUSE or SUSPEND).

use std::sync::Arc;

use crate::{app::App, control::ShutdownMode};

/// Blocks the handled signals in the calling thread (and the threads it starts later).
pub fn block() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Starts the thread that waits for the signals in `set` and acts on them.
pub fn spawn(app: Arc<App>, set: libc::sigset_t) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pooler-signals".into())
        .spawn(move || {
            let mut terms = 0;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: sigwait on a set blocked in every thread.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let mode = match sig {
                    libc::SIGHUP => {
                        match app.reload() {
                            Ok(notices) => {
                                tracing::info!("SIGHUP: configuration reloaded");
                                for n in notices {
                                    tracing::info!("reload: {n}");
                                }
                            }
                            Err(e) => tracing::error!(
                                "SIGHUP: reload failed, keeping the running configuration: {e}"
                            ),
                        }
                        continue;
                    }
                    libc::SIGUSR1 => {
                        match app.pause(None) {
                            Ok(()) => tracing::info!("SIGUSR1: paused"),
                            Err(e) => tracing::error!("SIGUSR1: pause failed: {e}"),
                        }
                        continue;
                    }
                    libc::SIGUSR2 => {
                        app.unsuspend();
                        match app.resume(None) {
                            Ok(()) => tracing::info!("SIGUSR2: resumed"),
                            Err(e) => tracing::error!("SIGUSR2: resume failed: {e}"),
                        }
                        continue;
                    }
                    libc::SIGTERM => {
                        terms += 1;
                        if terms == 1 {
                            ShutdownMode::WaitForClients
                        } else {
                            ShutdownMode::Now
                        }
                    }
                    libc::SIGINT => ShutdownMode::WaitForServers,
                    _ => ShutdownMode::Now,
                };
                tracing::info!("signal {sig}: shutting down ({mode:?})");
                if let Err(e) = app.shutdown(mode) {
                    tracing::error!("shutdown: {e}; exiting now");
                    app.shutdown.raise();
                }
                if mode == ShutdownMode::Now {
                    return;
                }
            }
        })
        .map(|_| ())
}
