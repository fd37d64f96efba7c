//! A blocking raw PostgreSQL wire client and frontend message builders, for byte-level tests.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One backend message: type byte and body (without the length).
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// For an ErrorResponse/NoticeResponse: the field with the given code (b'C' = SQLSTATE, b'M' = message).
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    pub fn is_error(&self) -> bool {
        self.tag == b'E'
    }

    /// For an Authentication message ('R'): the request code (0 = ok, 3 = cleartext, 5 = md5, 10 = SASL).
    pub fn auth_code(&self) -> Option<i32> {
        (self.tag == b'R' && self.body.len() >= 4)
            .then(|| i32::from_be_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]))
    }

    /// For a DataRow ('D'): the column values as text (None = NULL).
    pub fn data_row(&self) -> Vec<Option<String>> {
        let mut values = Vec::new();
        if self.tag != b'D' || self.body.len() < 2 {
            return values;
        }
        let count = u16::from_be_bytes([self.body[0], self.body[1]]);
        let mut pos = 2;
        for _ in 0..count {
            let Some(len) = self.body.get(pos..pos + 4) else {
                break;
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            pos += 4;
            if len < 0 {
                values.push(None);
                continue;
            }
            let end = (pos + len as usize).min(self.body.len());
            values.push(Some(
                String::from_utf8_lossy(&self.body[pos..end]).into_owned(),
            ));
            pos = end;
        }
        values
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag {
            b'E' | b'N' => write!(
                f,
                "{}({} {})",
                self.tag as char,
                self.field(b'C').unwrap_or_default(),
                self.field(b'M').unwrap_or_default()
            ),
            _ => write!(
                f,
                "{}({:?})",
                self.tag as char,
                String::from_utf8_lossy(&self.body)
            ),
        }
    }
}

/// The DataRow values of a reply, row by row.
pub fn data_rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::data_row)
        .collect()
}

/// Raw PostgreSQL wire client over std::net::TcpStream (blocking, 10 s read timeout).
pub struct RawClient {
    pub stream: TcpStream,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("RawClient: connect to 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        RawClient { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("RawClient: send");
    }

    /// Sends a StartupMessage v3.0 with user/database (+ extra params); does not read the answer.
    pub fn startup(&mut self, user: &str, db: &str, extra: &[(&str, &str)]) {
        self.send(&fe::startup(user, db, extra));
    }

    /// Reads one message, waiting at most `timeout`: Ok(None) on EOF, Err(TimedOut/WouldBlock)
    /// when nothing came.
    pub fn try_recv(&mut self, timeout: Duration) -> io::Result<Option<Msg>> {
        self.stream.set_read_timeout(Some(timeout))?;
        let result = self.read_msg();
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        result
    }

    fn read_msg(&mut self) -> io::Result<Option<Msg>> {
        let mut header = [0u8; 5];
        match self.stream.read_exact(&mut header[..1]) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        self.stream.read_exact(&mut header[1..])?;
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        if !(4..=(1 << 30)).contains(&len) {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("message {:?} with bad length {len}", header[0] as char),
            ));
        }
        let mut body = vec![0u8; len as usize - 4];
        self.stream.read_exact(&mut body)?;
        Ok(Some(Msg {
            tag: header[0],
            body,
        }))
    }

    /// Reads one backend message; None on EOF; panics on timeout (10 s) or garbage.
    pub fn recv(&mut self) -> Option<Msg> {
        self.read_msg()
            .unwrap_or_else(|e| panic!("RawClient: recv: {e}"))
    }

    /// Reads messages until ReadyForQuery (inclusive) and returns them all; panics on EOF/timeout.
    pub fn recv_until_ready(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        loop {
            match self.recv() {
                Some(m) => {
                    let done = m.tag == b'Z';
                    msgs.push(m);
                    if done {
                        return msgs;
                    }
                }
                None => panic!("RawClient: EOF before ReadyForQuery; got {msgs:?}"),
            }
        }
    }

    /// startup + read through authentication (trust only) until ReadyForQuery.
    pub fn login_trust(port: u16, user: &str, db: &str) -> (RawClient, Vec<Msg>) {
        let mut client = RawClient::connect(port);
        client.startup(user, db, &[]);
        let msgs = client.recv_until_ready();
        assert!(
            msgs.iter().any(|m| m.auth_code() == Some(0)) && !msgs.iter().any(Msg::is_error),
            "trust login as {user} to {db} failed: {msgs:?}"
        );
        (client, msgs)
    }

    /// A simple Query, then everything up to ReadyForQuery.
    pub fn query(&mut self, sql: &str) -> Vec<Msg> {
        self.send(&fe::query(sql));
        self.recv_until_ready()
    }

    /// Everything the pooler sends until it closes the connection; panics if that takes
    /// more than 10 s.
    pub fn until_closed(&mut self) -> Vec<Msg> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut msgs = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "not closed within 10 s; got {msgs:?}");
            match self.try_recv(left) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => return msgs,
                Err(e) => panic!("not closed within 10 s ({e}); got {msgs:?}"),
            }
        }
    }
}

/// The BackendKeyData (pid, secret) of a login reply.
pub fn backend_key(login: &[Msg]) -> (i32, i32) {
    let k = login
        .iter()
        .find(|m| m.tag == b'K')
        .unwrap_or_else(|| panic!("no BackendKeyData in the login reply: {login:?}"));
    assert_eq!(k.body.len(), 8, "BackendKeyData body: {k:?}");
    let b = &k.body;
    (
        i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    )
}

/// Frontend message builders.
pub mod fe {
    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 5);
        out.push(tag);
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn cstr(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(s.as_bytes());
        buf.push(0);
    }

    /// Untagged message: length, then body.
    fn untagged(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32 + 4).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// StartupMessage, protocol 3.0.
    pub fn startup(user: &str, db: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", db)].iter().chain(extra) {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        untagged(&body)
    }

    pub fn ssl_request() -> Vec<u8> {
        untagged(&80877103i32.to_be_bytes())
    }

    pub fn cancel_request(pid: i32, key: i32) -> Vec<u8> {
        let mut body = 80877102i32.to_be_bytes().to_vec();
        body.extend_from_slice(&pid.to_be_bytes());
        body.extend_from_slice(&key.to_be_bytes());
        untagged(&body)
    }

    /// PasswordMessage (cleartext or "md5..." hash).
    pub fn password(password: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, password);
        msg(b'p', &body)
    }

    pub fn query(sql: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        msg(b'Q', &body)
    }

    pub fn parse(name: &str, sql: &str, param_types: &[u32]) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.extend_from_slice(&(param_types.len() as i16).to_be_bytes());
        for oid in param_types {
            body.extend_from_slice(&oid.to_be_bytes());
        }
        msg(b'P', &body)
    }

    /// Bind with all parameters and results in text format.
    pub fn bind(portal: &str, stmt: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        cstr(&mut body, stmt);
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for param in params {
            match param {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        msg(b'B', &body)
    }

    /// kind: b'S' (statement) or b'P' (portal).
    pub fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        cstr(&mut body, name);
        msg(b'D', &body)
    }

    pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        body.extend_from_slice(&max_rows.to_be_bytes());
        msg(b'E', &body)
    }

    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    pub fn flush() -> Vec<u8> {
        msg(b'H', &[])
    }

    /// kind: b'S' (statement) or b'P' (portal).
    pub fn close(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        cstr(&mut body, name);
        msg(b'C', &body)
    }

    pub fn terminate() -> Vec<u8> {
        msg(b'X', &[])
    }

    pub fn copy_data(bytes: &[u8]) -> Vec<u8> {
        msg(b'd', bytes)
    }

    pub fn copy_done() -> Vec<u8> {
        msg(b'c', &[])
    }

    pub fn copy_fail(reason: &str) -> Vec<u8> {
        let mut body = Vec::new();
        cstr(&mut body, reason);
        msg(b'f', &body)
    }
}
