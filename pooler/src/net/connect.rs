//! Outgoing connections to PostgreSQL, over TCP or a Unix socket, through the ring.

use std::{
    io,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use compio::driver::{SharedFd, op::Connect};
use socket2::{Domain, SockAddr, Socket, Type};

/// Where a database entry points, with DNS answers cached for `dns_max_ttl`.
#[derive(Debug)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    dns_ttl: Duration,
    cache: Mutex<Option<(Instant, Vec<SocketAddr>)>>,
}

impl PartialEq for ServerAddr {
    /// Same destination (the DNS cache does not count).
    fn eq(&self, o: &ServerAddr) -> bool {
        self.host == o.host && self.port == o.port && self.dns_ttl == o.dns_ttl
    }
}

impl ServerAddr {
    pub fn new(host: &str, port: u16, dns_ttl: Duration) -> ServerAddr {
        ServerAddr {
            host: host.to_string(),
            port,
            dns_ttl,
            cache: Mutex::new(None),
        }
    }

    /// The cached name lookup: when it was made and what it gave (SHOW DNS_HOSTS).
    pub fn cached(&self) -> Option<(Instant, Vec<SocketAddr>)> {
        self.cache.lock().ok().and_then(|c| c.clone())
    }

    /// A host starting with '/' is the directory of PostgreSQL's Unix socket.
    pub fn unix_path(&self) -> Option<PathBuf> {
        self.host
            .starts_with('/')
            .then(|| PathBuf::from(&self.host).join(format!(".s.PGSQL.{}", self.port)))
    }

    /// Resolves the host, from the cache when it is fresh. Name lookups run on compio's
    /// blocking pool so the worker's ring keeps turning.
    async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        if let Ok(cache) = self.cache.lock()
            && let Some((at, addrs)) = cache.as_ref()
            && at.elapsed() < self.dns_ttl
        {
            return Ok(addrs.clone());
        }
        let host = self.host.clone();
        let port = self.port;
        let addrs = compio::runtime::spawn_blocking(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>())
        })
        .await
        .map_err(|_| io::Error::other("name lookup task failed"))??;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("host {:?} has no addresses", self.host),
            ));
        }
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

fn new_socket(domain: Domain, nonblocking: bool) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::STREAM.cloexec(), None)?;
    if nonblocking {
        socket.set_nonblocking(true)?;
    }
    if domain != Domain::UNIX {
        socket.set_tcp_nodelay(true)?;
        socket.set_keepalive(true)?;
    }
    Ok(socket)
}

async fn connect_one(addr: SockAddr, domain: Domain) -> io::Result<Socket> {
    let nonblocking = compio::runtime::Runtime::with_current(|r| r.driver_type().is_polling());
    let socket = new_socket(domain, nonblocking)?;
    let fd = SharedFd::new(socket);
    let op = Connect::new(fd.clone(), addr);
    let compio::BufResult(res, op) = compio::runtime::submit(op).await;
    drop(op);
    res?;
    fd.try_unwrap()
        .map_err(|_| io::Error::other("socket still shared after connect"))
}

/// Opens a connection to `addr`, trying each resolved address in turn.
pub async fn connect(addr: &ServerAddr) -> io::Result<Socket> {
    if let Some(path) = addr.unix_path() {
        let sa = SockAddr::unix(&path)?;
        return connect_one(sa, Domain::UNIX)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for a in addr.resolve().await? {
        match connect_one(SockAddr::from(a), Domain::for_address(a)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = io::Error::new(e.kind(), format!("{a}: {e}")),
        }
    }
    Err(last)
}
