//! cargo xtask demo: a temporary PostgreSQL and the release pooler in front of it, until Ctrl-C.

use std::io::Read;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;

use anyhow::{Context, Result, bail};

use crate::pg::Cluster;
use crate::pooler::PoolerProcess;
use crate::{build_release_pooler, make_temp_dir, tail};

enum Event {
    Signal(u8),
    PoolerExited,
}

/// Write end of the self-pipe the signal handler writes the signal number to.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// SIGINT/SIGTERM/SIGHUP become Event::Signal on `tx`.
fn forward_signals(tx: mpsc::Sender<Event>) -> Result<()> {
    let (mut reader, writer) = UnixStream::pair().context("signal pipe")?;
    SIGNAL_PIPE.store(writer.into_raw_fd(), Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only performs an async-signal-safe write.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                bail!("sigaction({sig}) failed");
            }
        }
    }
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while reader.read_exact(&mut byte).is_ok() {
            if tx.send(Event::Signal(byte[0])).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Event::PoolerExited once the process has exited. waitid(WNOWAIT) leaves it unreaped, so its
/// pid stays ours until the main thread reaps it.
fn watch_exit(pid: u32, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        loop {
            // SAFETY: waitid with a zeroed siginfo_t owned by this frame.
            let rc = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let _ = tx.send(Event::PoolerExited);
    });
}

pub fn run(args: &[String]) -> Result<bool> {
    if !args.is_empty() {
        bail!("xtask demo takes no arguments");
    }
    // What the demo runs, installed from apt when missing (as root).
    let mut missing = Vec::new();
    if !crate::pg::bin_dir().join("initdb").is_file() {
        missing.push("postgresql-15");
    }
    if !crate::in_path("psql") {
        missing.push("postgresql-client-15");
    }
    if !missing.is_empty() {
        crate::apt_install(&missing)?;
    }
    let bin = build_release_pooler()?;
    let (tx, rx) = mpsc::channel();
    forward_signals(tx.clone())?;
    let cluster = Cluster::start(100)?;
    let dir = make_temp_dir("xtask-demo")?;
    let result = serve(&bin, &dir, &cluster, tx, &rx);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    println!("PostgreSQL stopped, temporary directories removed.");
    result
}

fn serve(
    bin: &std::path::Path,
    dir: &std::path::Path,
    cluster: &Cluster,
    tx: mpsc::Sender<Event>,
    rx: &mpsc::Receiver<Event>,
) -> Result<bool> {
    let mut pooler = PoolerProcess::start(bin, dir, Some(6432), cluster.port, true)?;
    watch_exit(pooler.pid(), tx);
    let p = pooler.port;
    println!(
        "\nThe pooler listens on 127.0.0.1:{p} (transaction mode, trust), in front of PostgreSQL 15 on \
         127.0.0.1:{}.\n\n\
         Connect:      psql -h 127.0.0.1 -p {p} -U postgres postgres\n\
         Benchmark:    pgbench -h 127.0.0.1 -p {p} -U postgres -i -s 1 postgres\n              \
         pgbench -h 127.0.0.1 -p {p} -U postgres -c 20 -j 2 -T 10 postgres\n\
         Admin:        psql -h 127.0.0.1 -p {p} -U postgres pgbouncer   (SHOW POOLS;)\n\
         Unix socket:  psql -h {} -p {p} -U postgres postgres\n\
         Pooler log:   {}\n\
         PostgreSQL:   {}\n\n\
         Press Ctrl-C to stop.",
        cluster.port,
        dir.join("sock").display(),
        pooler.log_path.display(),
        cluster.log_path().display(),
    );
    match rx.recv() {
        Ok(Event::Signal(sig)) => {
            println!("\nsignal {sig}: stopping the pooler");
            let status = pooler.stop();
            println!("pooler stopped ({status:?})");
            Ok(true)
        }
        Ok(Event::PoolerExited) | Err(_) => {
            let status = pooler.try_wait();
            eprintln!(
                "\nthe pooler exited ({status:?}); its log:\n{}",
                tail(&pooler.log_path, 200)
            );
            Ok(false)
        }
    }
}
