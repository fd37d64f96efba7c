//! Client -> server: messages forwarded by header (bodies streamed), named-statement
//! messages rewritten to the pooler's statement names (see `statements`).

use bytes::Buf;

use super::statements::{self, Prepared, Step};
use crate::{
    proto::{
        frame,
        frontend::{self, tag as fe},
    },
    server::ServerConn,
};

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

/// Where the client's byte stream stands between reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlow {
    /// Body bytes of a partly forwarded (or dropped) message still to come.
    pub pass: u32,
    /// The message being passed is dropped rather than forwarded.
    pub pass_drop: bool,
    /// The pooler answered an extended-protocol message with an error itself: like
    /// PostgreSQL, drop what follows until the client's Sync.
    pub dropping: bool,
    /// Inside COPY FROM STDIN.
    pub copy_in: bool,
}

/// Forwards client messages to `server` (if linked) from `rbuf`, recording them in the
/// tracker, rewriting named statements when `prepared` is given. Stops when the server's
/// send queue exceeds `high_water`.
pub fn client_to_server(
    rbuf: &mut bytes::BytesMut,
    flow: &mut ClientFlow,
    server: Option<&mut ServerConn>,
    max_packet: u32,
    high_water: usize,
    mut prepared: Option<Prepared<'_>>,
) -> ClientScan {
    let Some(server) = server else {
        if flow.pass > 0 {
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
        if flow.pass > 0 {
            let n = (flow.pass as usize).min(rbuf.len());
            if n == 0 {
                return ClientScan::Done;
            }
            if !flow.pass_drop {
                server.conn.wbuf.extend_from_slice(&rbuf[..n]);
            }
            rbuf.advance(n);
            flow.pass -= n as u32;
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
        if flow.dropping {
            if h.tag == fe::SYNC {
                flow.dropping = false;
            } else {
                skip(rbuf, h, flow);
                continue;
            }
        }
        if h.tag == fe::COPY_DONE || h.tag == fe::COPY_FAIL {
            flow.copy_in = false;
        }
        if let Some(p) = prepared.as_mut()
            && !server.tracker.error_skip()
        {
            match statements::step(rbuf, h, server, p, flow) {
                Step::NeedMore => return ClientScan::Done,
                Step::Consumed => continue,
                Step::Forward => {}
            }
        }
        if h.tag == fe::DESCRIBE && rbuf.len() < frame::HEADER_LEN + 1 {
            // Which reply ends a Describe depends on its first byte.
            return ClientScan::Done;
        }
        let kind = rbuf.get(frame::HEADER_LEN).copied().unwrap_or(0);
        server.tracker.client_message(h.tag, kind);
        let n = h.total().min(rbuf.len());
        server.conn.wbuf.extend_from_slice(&rbuf[..n]);
        rbuf.advance(n);
        flow.pass = (h.total() - n) as u32;
        flow.pass_drop = false;
    }
}

/// Drops the message at the front of `rbuf` (the rest of it as it arrives).
pub(super) fn skip(rbuf: &mut bytes::BytesMut, h: frame::Header, flow: &mut ClientFlow) {
    let n = h.total().min(rbuf.len());
    rbuf.advance(n);
    flow.pass = (h.total() - n) as u32;
    flow.pass_drop = true;
}
