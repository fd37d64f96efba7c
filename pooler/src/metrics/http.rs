//! A deliberately small HTTP/1.1 server: GET only, one request per connection
//! (Connection: close), bounded request size and time, a thread per connection up to a
//! cap. Whatever arrives, the answer is a status line or a closed socket, never a panic.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::{health, prometheus};
use crate::app::App;

/// Largest request head accepted (request line and headers); scrapers send a few hundred
/// bytes.
const MAX_HEAD: usize = 8192;
/// Time a client has to send its whole request head, so a slow sender cannot hold a
/// connection slot.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed unanswered. Scrapers and probes are few, and
/// the cap bounds the threads a flood can start.
const MAX_CONNECTIONS: usize = 16;

pub(super) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra header lines, each without CRLF.
    pub headers: Vec<String>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }

    fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        for h in &self.headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(self.body.as_bytes())?;
        w.flush()
    }
}

/// Accepts until the process exits.
pub(super) fn serve(listener: TcpListener, app: Arc<App>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let readiness = Arc::new(health::Readiness::default());
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!("metrics listener: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        // Released when the thread ends, even by a panic, or when it cannot start.
        let slot = Slot(in_flight.clone());
        let (app, readiness) = (app.clone(), readiness.clone());
        let spawned = std::thread::Builder::new()
            .name("pooler-http".into())
            .spawn(move || {
                let _slot = slot;
                handle(stream, &app, &readiness);
            });
        if let Err(e) = spawned {
            tracing::warn!("metrics listener: cannot start a thread: {e}");
        }
    }
}

/// One of the MAX_CONNECTIONS places, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn handle(mut stream: TcpStream, app: &App, readiness: &health::Readiness) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let response = match read_head(&mut stream) {
        Ok(head) => route(&head, app, readiness),
        Err(HeadError::TooLarge) => Response::text(431, "request head too large\n"),
        Err(HeadError::Malformed) => Response::text(400, "bad request\n"),
        Err(HeadError::Timeout) => Response::text(408, "request timeout\n"),
        // The peer went away: nobody to answer.
        Err(HeadError::Closed) => return,
    };
    let _ = response.write_to(&mut stream);
    let _ = stream.shutdown(Shutdown::Write);
}

#[derive(Debug, PartialEq)]
enum HeadError {
    TooLarge,
    Malformed,
    Timeout,
    Closed,
}

/// Reads up to the blank line ending the head; a body (GET has none) is never read.
fn read_head(stream: &mut TcpStream) -> Result<String, HeadError> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            if end > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            buf.truncate(end);
            return String::from_utf8(buf).map_err(|_| HeadError::Malformed);
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // The deadline covers the whole head, not each read: a client trickling one byte
        // at a time still runs out of time.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(HeadError::Timeout);
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Malformed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Timeout);
            }
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// Where the head ends (CRLF CRLF, or bare LF LF as lenient servers accept).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// (method, path without the query string) of a well-formed HTTP/1.x request line.
fn request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && matches!(version, "HTTP/1.0" | "HTTP/1.1");
    valid.then(|| (method, target.split('?').next().unwrap_or(target)))
}

fn route(head: &str, app: &App, readiness: &health::Readiness) -> Response {
    let Some((method, path)) = request_line(head) else {
        return Response::text(400, "bad request\n");
    };
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Response::text(404, "not found: try /metrics, /healthz or /readyz\n");
    }
    if method != "GET" {
        let mut r = Response::text(405, "method not allowed: only GET\n");
        r.headers.push("Allow: GET".into());
        return r;
    }
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: prometheus::render(app),
            headers: Vec::new(),
        },
        "/healthz" => health::live(app),
        _ => health::ready(app, readiness),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line("GET /metrics HTTP/1.1\r\nHost: x"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line("GET /readyz?verbose=1 HTTP/1.0"),
            Some(("GET", "/readyz"))
        );
        assert_eq!(request_line("POST /x HTTP/1.1"), Some(("POST", "/x")));
        for bad in [
            "",
            "GET",
            "GET /metrics",
            "GET /metrics HTTP/2.0",
            "GET metrics HTTP/1.1",
            "get /metrics HTTP/1.1",
            "GET  /metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 extra",
            "\u{0}\u{1}\u{2}",
        ] {
            assert_eq!(request_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[test]
    fn responses_are_complete() {
        let mut out = Vec::new();
        let mut r = Response::text(405, "no\n");
        r.headers.push("Allow: GET".into());
        r.write_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("Allow: GET\r\n\r\nno\n"));
    }
}
