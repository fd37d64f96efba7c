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
    prepared: Option<Prepared<'_>>,
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
    let start = server.conn.wbuf.len();
    let scan = forward_messages(rbuf, flow, server, max_packet, high_water, prepared);
    record_replay(server, start);
    scan
}

/// Keeps the bytes and slots of a replayable batch (see `client::Replay`) as they are
/// written; gives up on it when it grows too large or more follows its Sync.
fn record_replay(server: &mut ServerConn, start: usize) {
    let Some(r) = server.replay.as_mut() else {
        return;
    };
    let from = r.from.take().unwrap_or(start);
    if r.complete {
        if server.conn.wbuf.len() > from {
            // The client went on after the Sync: a replay would reorder its requests.
            server.replay = None;
        }
        return;
    }
    if let Some(bytes) = server.conn.wbuf.get(from..) {
        r.bytes.extend_from_slice(bytes);
    }
    if r.bytes.len() > crate::client::prepared::REPLAY_MAX {
        server.replay = None;
        server.tracker.take_recording();
        return;
    }
    let Some(slots) = server.tracker.take_recording() else {
        // Recording stopped (a made-up reply joined the batch): no replay.
        server.replay = None;
        return;
    };
    match slots
        .iter()
        .position(|s| s.req == crate::proto::tracker::Request::Sync)
    {
        Some(i) if i + 1 == slots.len() => {
            r.slots.extend(slots);
            r.complete = true;
        }
        Some(_) => server.replay = None,
        None => {
            r.slots.extend(slots);
            server.tracker.start_recording();
        }
    }
}

fn forward_messages(
    rbuf: &mut bytes::BytesMut,
    flow: &mut ClientFlow,
    server: &mut ServerConn,
    max_packet: u32,
    high_water: usize,
    mut prepared: Option<Prepared<'_>>,
) -> ClientScan {
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
