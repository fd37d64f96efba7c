//! Listening sockets: one SO_REUSEPORT TCP socket per worker and address, so the kernel
//! spreads connections across workers, plus the Unix socket shared by all workers.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::General;

/// A bound, listening socket (plain std-level socket: `Send`, handed to a worker).
#[derive(Debug)]
pub enum Listener {
    Tcp(Socket, SocketAddr),
    Unix(Socket, PathBuf),
}

impl Listener {
    pub fn socket(&self) -> &Socket {
        match self {
            Listener::Tcp(s, _) | Listener::Unix(s, _) => s,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(_, a) => a.to_string(),
            Listener::Unix(_, p) => p.display().to_string(),
        }
    }
}

/// Listeners for every worker, by worker index, and the Unix socket path to remove at exit.
#[derive(Debug, Default)]
pub struct Listeners {
    pub per_worker: Vec<Vec<Listener>>,
    pub unix_path: Option<PathBuf>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn addresses(cfg: &General) -> io::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for a in &cfg.listen_addr {
        let a = a.trim();
        if a.is_empty() {
            continue;
        }
        if a == "*" {
            out.push(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                cfg.listen_port,
            ));
            out.push(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                cfg.listen_port,
            ));
            continue;
        }
        let ip = a.trim_matches(|c| c == '[' || c == ']');
        match ip.parse::<IpAddr>() {
            Ok(ip) => out.push(SocketAddr::new(ip, cfg.listen_port)),
            Err(_) => {
                use std::net::ToSocketAddrs;
                let resolved = (a, cfg.listen_port)
                    .to_socket_addrs()
                    .map_err(|e| io::Error::new(e.kind(), format!("listen_addr {a:?}: {e}")))?;
                out.extend(resolved);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn tcp_socket(addr: SocketAddr, reuseport: bool, backlog: i32) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    s.set_reuse_address(true)?;
    if reuseport {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // "*" binds 0.0.0.0 and :: side by side.
        s.set_only_v6(true)?;
    }
    s.bind(&SockAddr::from(addr))?;
    s.listen(backlog)?;
    Ok(s)
}

/// Binds every listener. Without `so_reuseport`, a port already taken by another process
/// is refused even though our own workers share it through SO_REUSEPORT.
pub fn bind_listeners(cfg: &General, workers: usize) -> io::Result<Listeners> {
    let backlog = cfg.listen_backlog.min(i32::MAX as u32) as i32;
    let mut out = Listeners {
        per_worker: (0..workers).map(|_| Vec::new()).collect(),
        unix_path: None,
    };
    for addr in addresses(cfg)? {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("listen on {addr}: {e}"));
        if !cfg.so_reuseport {
            // Probe without SO_REUSEPORT: fails if anyone else holds the port.
            let probe = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
            probe.set_reuse_address(true)?;
            if addr.is_ipv6() {
                probe.set_only_v6(true)?;
            }
            probe.bind(&SockAddr::from(addr)).map_err(ctx)?;
        }
        for w in out.per_worker.iter_mut() {
            let s = tcp_socket(addr, true, backlog).map_err(ctx)?;
            w.push(Listener::Tcp(s, addr));
        }
    }
    if let Some(dir) = &cfg.unix_socket_dir {
        let path = dir.join(format!(".s.PGSQL.{}", cfg.listen_port));
        let s = unix_listener(&path, cfg.unix_socket_mode, backlog)?;
        out.unix_path = Some(path.clone());
        for w in out.per_worker.iter_mut() {
            w.push(Listener::Unix(s.try_clone()?, path.clone()));
        }
    }
    if out.per_worker.iter().all(|w| w.is_empty()) {
        return Err(io::Error::other(
            "nothing to listen on: listen_addr is empty and unix_socket_dir is disabled",
        ));
    }
    Ok(out)
}

fn unix_listener(path: &Path, mode: u32, backlog: i32) -> io::Result<Socket> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if path.exists() {
        // A live socket means another instance; a dead one is a leftover from a crash.
        let probe = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        if probe.connect(&SockAddr::unix(path)?).is_ok() {
            return Err(ctx(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on this socket",
            )));
        }
        std::fs::remove_file(path).map_err(ctx)?;
    }
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    s.bind(&SockAddr::unix(path)?).map_err(ctx)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(ctx)?;
    s.listen(backlog).map_err(ctx)?;
    Ok(s)
}
