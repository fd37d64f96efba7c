//! Moving bytes between a client and its linked server by message header: bodies are
//! copied through untouched, even when a message spans many reads; only ReadyForQuery,
//! ParameterStatus and ErrorResponse from the server are decoded.

use bytes::Buf;

use crate::{
    proto::{
        backend::tag as be,
        frame::{self, ErrorFields},
        frontend::{self, tag as fe},
        tracker::Owner,
    },
    server::ServerConn,
};

use super::params::ClientParams;

/// Largest server message the pooler needs whole (ParameterStatus, ErrorResponse, ...).
const MAX_DECODED: usize = 1 << 20;
/// Server messages stream through without a size limit of ours: PostgreSQL's own is 1 GB.
const MAX_SERVER_MESSAGE: u32 = (1 << 30) + (1 << 20);

/// What scanning the client's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientScan {
    /// Everything complete was forwarded (or there is nothing to do).
    Done,
    /// A message is waiting and no server is linked.
    NeedServer,
    /// The client sent Terminate.
    Terminate,
    /// The client broke the protocol; the message says how.
    Violation(String),
}

/// Forwards complete-or-partial client messages to `server` (if linked) from `rbuf`,
/// recording them in the tracker. `pass` is the body remainder of a message already
/// partly forwarded. Stops when the server's send queue exceeds `high_water`.
pub fn client_to_server(
    rbuf: &mut bytes::BytesMut,
    pass: &mut u32,
    server: Option<&mut ServerConn>,
    max_packet: u32,
    high_water: usize,
    copy_in: &mut bool,
) -> ClientScan {
    let Some(server) = server else {
        if *pass > 0 {
            // Cannot happen: a partly forwarded message keeps its server linked.
            return ClientScan::Violation("message interrupted".into());
        }
        return match frame::header(rbuf, max_packet) {
            Err(e) => ClientScan::Violation(e.to_string()),
            Ok(None) => ClientScan::Done,
            Ok(Some(h)) if h.tag == fe::TERMINATE => ClientScan::Terminate,
            Ok(Some(h)) if !frontend::is_session_message(h.tag) => {
                ClientScan::Violation(format!("invalid frontend message type {}", h.tag))
            }
            Ok(Some(_)) => ClientScan::NeedServer,
        };
    };
    loop {
        if server.conn.send_backlog() > high_water {
            return ClientScan::Done;
        }
        if *pass > 0 {
            let n = (*pass as usize).min(rbuf.len());
            if n == 0 {
                return ClientScan::Done;
            }
            server.conn.wbuf.extend_from_slice(&rbuf[..n]);
            rbuf.advance(n);
            *pass -= n as u32;
            continue;
        }
        let h = match frame::header(rbuf, max_packet) {
            Err(e) => return ClientScan::Violation(e.to_string()),
            Ok(None) => return ClientScan::Done,
            Ok(Some(h)) => h,
        };
        if h.tag == fe::TERMINATE {
            return ClientScan::Terminate;
        }
        if !frontend::is_session_message(h.tag) {
            return ClientScan::Violation(format!("invalid frontend message type {}", h.tag));
        }
        if h.tag == fe::COPY_DONE || h.tag == fe::COPY_FAIL {
            *copy_in = false;
        }
        server.tracker.client_message(h.tag);
        let n = h.total().min(rbuf.len());
        server.conn.wbuf.extend_from_slice(&rbuf[..n]);
        rbuf.advance(n);
        *pass = (h.total() - n) as u32;
    }
}

/// What scanning the server's bytes found.
#[derive(Debug, Default)]
pub struct ServerScan {
    /// A ReadyForQuery was processed.
    pub ready: bool,
    /// The server announced it is terminating the session (FATAL); not forwarded.
    pub fatal: Option<ErrorFields>,
    /// Protocol violation by the server.
    pub violation: Option<String>,
    /// A statement-mode client opened a transaction (its ReadyForQuery was held back).
    pub began_transaction: bool,
    /// ReadyForQuery messages that ended client requests, and the last one's status.
    pub client_ready: u32,
    pub last_status: u8,
    /// The client's application_name changed (ParameterStatus).
    pub application_name: Option<String>,
}

/// Forwards the server's replies to the client (`client_out`, None when the client is
/// gone) and swallows replies to the pooler's own queries. Updates the tracker, the
/// server's parameters and the client's tracked parameters.
pub fn server_to_client(
    server: &mut ServerConn,
    mut client_out: Option<&mut bytes::BytesMut>,
    params: &mut ClientParams,
    tracked: &dyn Fn(&str) -> Option<String>,
    high_water: usize,
    copy_in: &mut bool,
    statement_mode: bool,
) -> ServerScan {
    let mut scan = ServerScan::default();
    let rbuf = &mut server.conn.rbuf;
    loop {
        if let Some(out) = client_out.as_deref()
            && out.len() > high_water
        {
            return scan;
        }
        if server.pass_remaining > 0 {
            let n = (server.pass_remaining as usize).min(rbuf.len());
            if n == 0 {
                return scan;
            }
            if server.pass_forward
                && let Some(out) = client_out.as_deref_mut()
            {
                out.extend_from_slice(&rbuf[..n]);
            }
            rbuf.advance(n);
            server.pass_remaining -= n as u32;
            continue;
        }
        let h = match frame::header(rbuf, MAX_SERVER_MESSAGE) {
            Err(e) => {
                scan.violation = Some(e.to_string());
                return scan;
            }
            Ok(None) => return scan,
            Ok(Some(h)) => h,
        };
        let owner = server.tracker.current();
        let to_client = owner == Owner::Client;
        let decode = matches!(
            h.tag,
            be::READY_FOR_QUERY | be::PARAMETER_STATUS | be::ERROR_RESPONSE
        );
        if !decode {
            if h.tag == be::COPY_IN_RESPONSE && to_client {
                *copy_in = true;
            }
            let n = h.total().min(rbuf.len());
            if to_client && let Some(out) = client_out.as_deref_mut() {
                out.extend_from_slice(&rbuf[..n]);
            }
            rbuf.advance(n);
            server.pass_remaining = (h.total() - n) as u32;
            server.pass_forward = to_client;
            continue;
        }
        if h.total() > MAX_DECODED {
            scan.violation = Some(format!("server message {:?} too long", h.tag as char));
            return scan;
        }
        if rbuf.len() < h.total() {
            return scan;
        }
        let body = &rbuf[frame::HEADER_LEN..h.total()];
        let mut forward = to_client;
        match h.tag {
            be::READY_FOR_QUERY => {
                let status = body.first().copied().unwrap_or(b'I');
                server.tracker.ready_for_query(status);
                *copy_in = false;
                scan.ready = true;
                if to_client {
                    scan.client_ready += 1;
                    scan.last_status = status;
                }
                if forward && status != b'I' && statement_mode {
                    // Refused by the session; this ReadyForQuery is replaced.
                    scan.began_transaction = true;
                    forward = false;
                }
            }
            be::PARAMETER_STATUS => {
                if let Ok((name, value)) = frame::parameter_status(body) {
                    server.info.set_param(&name, &value);
                    if to_client && let Some(canon) = tracked(&name) {
                        params.set(&canon, &value);
                        if canon == "application_name" {
                            scan.application_name = Some(value);
                        }
                    }
                }
            }
            _ => {
                let fields = frame::error_fields(body);
                if fields.severity == "FATAL" || fields.severity == "PANIC" {
                    scan.fatal = Some(fields);
                    forward = false;
                } else if !to_client {
                    tracing::warn!(
                        server = server.info.id,
                        "query of the pooler's own failed: {} {}",
                        fields.code,
                        fields.message
                    );
                }
            }
        }
        if forward && let Some(out) = client_out.as_deref_mut() {
            out.extend_from_slice(&rbuf[..h.total()]);
        }
        let total = h.total();
        rbuf.advance(total);
        if scan.fatal.is_some() || scan.began_transaction {
            return scan;
        }
    }
}

/// Client messages being dropped because the pooler answered them itself (a cancel that
/// reached the client while it was queued): the current message, and for the extended
/// protocol everything up to its Sync, as PostgreSQL skips after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discard {
    /// Bytes of the message being dropped still to come.
    rest: u32,
    /// Keep dropping until a Sync has been dropped.
    until_sync: bool,
}

impl Discard {
    /// Starts dropping the request at the front of `rbuf`.
    pub fn start(rbuf: &[u8], max_packet: u32) -> Discard {
        match frame::header(rbuf, max_packet) {
            Ok(Some(h)) if h.tag == fe::QUERY || h.tag == fe::FUNCTION_CALL => Discard {
                rest: h.total() as u32,
                until_sync: false,
            },
            _ => Discard {
                rest: 0,
                until_sync: true,
            },
        }
    }

    /// Drops what it can. Some(true) when done and the client is owed a ReadyForQuery,
    /// Some(false) when the client sent Terminate instead (left in `rbuf`), None when more
    /// bytes are needed.
    pub fn advance(&mut self, rbuf: &mut bytes::BytesMut, max_packet: u32) -> Option<bool> {
        loop {
            if self.rest > 0 {
                let n = (self.rest as usize).min(rbuf.len());
                rbuf.advance(n);
                self.rest -= n as u32;
                if self.rest > 0 {
                    return None;
                }
                if !self.until_sync {
                    return Some(true);
                }
                continue;
            }
            let h = match frame::header(rbuf, max_packet) {
                Ok(Some(h)) => h,
                // A malformed header is reported by the normal path once we stop.
                Err(_) => return Some(false),
                Ok(None) => return None,
            };
            if h.tag == fe::TERMINATE {
                return Some(false);
            }
            if h.tag == fe::SYNC {
                self.until_sync = false;
            }
            self.rest = h.total() as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::Discard;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.put_i32(4 + body.len() as i32);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn discard_drops_one_query_then_owes_ready() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&msg(b'Q', b"select pg_sleep(10)\0"));
        b.extend_from_slice(&msg(b'Q', b"select 1\0"));
        let mut d = Discard::start(&b, 1 << 20);
        assert_eq!(d.advance(&mut b, 1 << 20), Some(true));
        assert_eq!(
            &b[..],
            &msg(b'Q', b"select 1\0")[..],
            "the next query stays"
        );
    }

    #[test]
    fn discard_extended_until_sync_even_across_reads() {
        let mut all = Vec::new();
        for m in [
            msg(b'P', b"\0select 1\0\0\0"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
            msg(b'Q', b"select 2\0"),
        ] {
            all.extend_from_slice(&m);
        }
        let mut b = BytesMut::from(&all[..3]);
        let mut d = Discard::start(&b, 1 << 20);
        let mut fed = 3;
        let mut done = None;
        while done.is_none() {
            done = d.advance(&mut b, 1 << 20);
            if done.is_none() {
                b.extend_from_slice(&all[fed..fed + 1]);
                fed += 1;
            }
        }
        assert_eq!(done, Some(true));
        b.extend_from_slice(&all[fed..]);
        assert_eq!(&b[..], &msg(b'Q', b"select 2\0")[..]);
    }

    #[test]
    fn discard_stops_at_terminate() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&msg(b'P', b"\0x\0\0\0"));
        b.extend_from_slice(&msg(b'X', b""));
        let mut d = Discard::start(&b, 1 << 20);
        assert_eq!(d.advance(&mut b, 1 << 20), Some(false));
        assert_eq!(b[0], b'X');
    }
}
