//! Server -> client: replies forwarded to the client or consumed (the pooler's own
//! requests), made-up replies emitted in their place, the tracker kept up to date, the
//! server's and the client's parameters followed.

use bytes::Buf;

use super::statements;
use crate::{
    client::{params::ClientParams, prepared::ClientStatements},
    proto::{
        backend::tag as be,
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
) -> ServerScan {
    let mut scan = ServerScan::default();
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
                if statements.is_some()
                    && fields.code == "0A000"
                    && fields
                        .message
                        .contains("cached plan must not change result type")
                {
                    // The statement is passed through once; from the next use on the
                    // pooler's copies are prepared again with the new schema.
                    server.info.prepared.mark_stale();
                    scan.stale_plans = true;
                }
                let (owner, outcome) = server.tracker.error();
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
                if !outcome.undo.is_empty() {
                    let total = h.total();
                    if forward && let Some(out) = client_out.as_deref_mut() {
                        out.extend_from_slice(&server.conn.rbuf[..total]);
                    }
                    server.conn.rbuf.advance(total);
                    statements::undo(server, statements.as_deref_mut(), outcome.undo);
                    continue;
                }
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
