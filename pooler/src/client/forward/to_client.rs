//! Server -> client: replies forwarded to the client or consumed (the pooler's own
//! requests), made-up replies emitted in their place, the tracker kept up to date, the
//! server's and the client's parameters followed.

use bytes::Buf;

use super::statements;
use crate::{
    client::{params::ClientParams, prepared::ClientStatements},
    proto::{
        backend::{self, tag as be},
        frame::{self, ErrorFields},
        tracker::{Internal, Owner},
    },
    server::ServerConn,
};

/// Largest server message the pooler needs whole (ParameterStatus, ErrorResponse, ...).
const MAX_DECODED: usize = 1 << 20;
/// Server messages stream through without a size limit of ours: PostgreSQL's own is 1 GB.
const MAX_SERVER_MESSAGE: u32 = (1 << 30) + (1 << 20);

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
    /// "cached plan must not change result type": the pool's prepared plans are stale.
    pub stale_plans: bool,
}

/// How the pooler's statement names start (see `prepared::Statement`).
const PREFIX: &[u8] = b"_pooler_";

/// Re-encodes an ErrorResponse body with every pooler statement name replaced by the
/// client's name for it.
fn rename_statements(body: &[u8], st: &ClientStatements) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    backend::message(&mut out, be::ERROR_RESPONSE, |b| {
        let mut pos = 0;
        while let Some(&code) = body.get(pos) {
            if code == 0 {
                break;
            }
            pos += 1;
            let Some(value) = crate::proto::read_cstr(body, &mut pos) else {
                break;
            };
            b.extend_from_slice(&[code]);
            b.extend_from_slice(&rename_in(value, st));
            b.extend_from_slice(&[0]);
        }
        b.extend_from_slice(&[0]);
    });
    out.to_vec()
}

fn rename_in(value: &[u8], st: &ClientStatements) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i..].starts_with(PREFIX) {
            let end = value[i + PREFIX.len()..]
                .iter()
                .position(|b| !b.is_ascii_hexdigit())
                .map_or(value.len(), |n| i + PREFIX.len() + n);
            if let Ok(name) = std::str::from_utf8(&value[i..end])
                && let Some(client) = st.client_name_of(name)
            {
                out.extend_from_slice(client.as_bytes());
                i = end;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

/// Emits the made-up replies that have reached the front.
pub fn emit_fakes(server: &mut ServerConn, mut out: Option<&mut bytes::BytesMut>) {
    while let Some(f) = server.tracker.take_fake() {
        if let Some(o) = out.as_deref_mut() {
            o.extend_from_slice(&f);
        }
    }
}

/// Forwards the server's replies to the client (`client_out`, None when the client is
/// gone) and swallows replies to the pooler's own requests.
#[allow(clippy::too_many_arguments)]
pub fn server_to_client(
    server: &mut ServerConn,
    mut client_out: Option<&mut bytes::BytesMut>,
    params: &mut ClientParams,
    tracked: &dyn Fn(&str) -> Option<String>,
    high_water: usize,
    copy_in: &mut bool,
    statement_mode: bool,
    mut statements: Option<&mut ClientStatements>,
    server_cap: usize,
) -> ServerScan {
    let mut scan = ServerScan::default();
    if let Some(out) = client_out.as_deref_mut() {
        // One allocation for what is about to be copied, rather than one growth per
        // message: a client's send buffer is freed once sent (net::Conn::lean).
        out.reserve(server.conn.rbuf.len().min(high_water));
    }
    loop {
        emit_fakes(server, client_out.as_deref_mut());
        if let Some(out) = client_out.as_deref()
            && out.len() > high_water
        {
            return scan;
        }
        let rbuf = &mut server.conn.rbuf;
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
        let decode = matches!(
            h.tag,
            be::READY_FOR_QUERY | be::PARAMETER_STATUS | be::ERROR_RESPONSE
        ) || (h.tag == be::COMMAND_COMPLETE && statements.is_some());
        if !decode {
            let (owner, _) = server.tracker.reply(h.tag);
            let to_client = owner == Owner::Client;
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
        let mut forward;
        match h.tag {
            be::READY_FOR_QUERY => {
                let status = body.first().copied().unwrap_or(b'I');
                forward = server.tracker.ready_for_query(status) == Owner::Client;
                if forward && server.replay.as_ref().is_some_and(|r| r.complete) {
                    // The kept batch went through: no retry will be needed.
                    server.replay = None;
                }
                *copy_in = false;
                scan.ready = true;
                if forward {
                    scan.client_ready += 1;
                    scan.last_status = status;
                    if status != b'I' && statement_mode {
                        // Refused by the session; this ReadyForQuery is replaced.
                        scan.began_transaction = true;
                        forward = false;
                    }
                }
            }
            be::PARAMETER_STATUS => {
                forward = server.tracker.current() == Owner::Client;
                if let Ok((name, value)) = frame::parameter_status(body) {
                    server.info.set_param(&name, &value);
                    if forward && let Some(canon) = tracked(&name) {
                        params.set(&canon, &value);
                        if canon == "application_name" {
                            scan.application_name = Some(value);
                        }
                    }
                }
            }
            be::COMMAND_COMPLETE => {
                forward = server.tracker.reply(h.tag).0 == Owner::Client;
                // DISCARD ALL removed every statement of this server; the client's own
                // are gone too (others' are prepared again where needed).
                if forward && body.starts_with(b"DISCARD ALL") {
                    server.info.prepared.clear();
                    if let Some(st) = statements.as_deref_mut() {
                        st.clear();
                    }
                }
            }
            _ => {
                let fields = frame::error_fields(body);
                if fields.severity == "FATAL" || fields.severity == "PANIC" {
                    scan.fatal = Some(fields);
                    let total = h.total();
                    rbuf.advance(total);
                    return scan;
                }
                // Owned: the server is worked on below (errors are rare).
                let body = body.to_vec();
                let stale = statements.is_some()
                    && fields.code == "0A000"
                    && fields
                        .message
                        .contains("cached plan must not change result type");
                let (owner, mut outcome) = server.tracker.error();
                if stale {
                    // Every server of the pool prepares its statements again before using
                    // them; this batch is retried at once if it was kept for that.
                    scan.stale_plans = true;
                    let kept = if outcome.replay_start {
                        server.replay.take().filter(|r| r.complete)
                    } else {
                        None
                    };
                    if let Some(r) = kept {
                        let undo = std::mem::take(&mut outcome.undo);
                        statements::undo(server, statements.as_deref_mut(), undo);
                        if statements::retry(server, *r, server_cap) {
                            let total = h.total();
                            server.conn.rbuf.advance(total);
                            continue;
                        }
                    }
                    server.info.prepared.mark_stale();
                }
                // A statement the pooler prepared for the client failed: the client must
                // see why its request then did nothing.
                forward = matches!(owner, Owner::Client | Owner::Internal(Internal::Prepare));
                if !forward {
                    tracing::warn!(
                        server = server.info.id,
                        "query of the pooler's own failed: {} {}",
                        fields.code,
                        fields.message
                    );
                }
                // What the client gets: the error the pooler stands in for, or the
                // server's with the pooler's statement names turned back into the client's.
                let replacement = outcome.replace.or_else(|| {
                    let st = statements.as_deref()?;
                    body.windows(PREFIX.len())
                        .any(|w| w == PREFIX)
                        .then(|| rename_statements(&body, st))
                });
                let total = h.total();
                if forward && let Some(out) = client_out.as_deref_mut() {
                    match &replacement {
                        Some(r) => out.extend_from_slice(r),
                        None => out.extend_from_slice(&server.conn.rbuf[..total]),
                    }
                }
                server.conn.rbuf.advance(total);
                if !outcome.undo.is_empty() {
                    statements::undo(server, statements.as_deref_mut(), outcome.undo);
                }
                continue;
            }
        }
        let rbuf = &mut server.conn.rbuf;
        if forward && let Some(out) = client_out.as_deref_mut() {
            out.extend_from_slice(&rbuf[..h.total()]);
        }
        let total = h.total();
        rbuf.advance(total);
        if scan.began_transaction {
            return scan;
        }
    }
}
