//! Rewriting a client's named-statement messages for the server it is on: Parse, Bind,
//! Describe and Close of named statements (protocol level) and PREPARE / EXECUTE /
//! DEALLOCATE (SQL level). Statements a server lacks are prepared on it first, in the same
//! round trip. Replies PostgreSQL would have sent but the server will not (the statement
//! already existed there, a Close the pooler absorbed) are made up and placed exactly
//! where they belong (see `proto::tracker`). Errors are never made up out of thin air:
//! the server is made to fail in the client's place, so a transaction block is aborted
//! and the rest of a pipeline skipped exactly as for the real error.

use bytes::{Buf, BufMut, BytesMut};

use super::to_server::{ClientFlow, skip};
use crate::{
    client::prepared::{
        ClientStatements, Prepare, SqlCommand, Statement, quote_ident, sql_command,
    },
    proto::{
        backend::{self, Severity},
        frame::{self, Header},
        frontend::tag as fe,
        read_cstr, sqlstate,
        tracker::{Extra, Internal, Owner, ParseUndo, Request, Slot},
    },
    server::ServerConn,
    stats::Traffic,
};

/// What the rewriting needs from the session.
pub struct Prepared<'a> {
    pub statements: &'a mut ClientStatements,
    /// max_prepared_statements: statements a server keeps.
    pub server_cap: usize,
    /// Statements one client may hold.
    pub client_cap: usize,
    pub stats: &'a Traffic,
}

pub enum Step {
    /// The message is not complete enough to decide.
    NeedMore,
    /// Handled (forwarded rewritten, answered, or replaced).
    Consumed,
    /// Not ours to rewrite: forward it as is.
    Forward,
}

/// A statement name no server ever has: requests naming it fail.
const ABSENT: &str = "_pooler_absent_";

pub fn step(
    rbuf: &mut BytesMut,
    h: Header,
    server: &mut ServerConn,
    p: &mut Prepared<'_>,
    flow: &mut ClientFlow,
) -> Step {
    match h.tag {
        fe::PARSE => parse(rbuf, h, server, p, flow),
        fe::BIND => bind(rbuf, h, server, p, flow),
        fe::DESCRIBE => describe(rbuf, h, server, p),
        fe::CLOSE => close(rbuf, h, server, p),
        fe::QUERY => query(rbuf, h, server, p),
        _ => Step::Forward,
    }
}

fn error_message(code: &str, msg: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    backend::error_response(&mut b, Severity::Error, code, msg, None);
    b.to_vec()
}

fn duplicate(name: &str) -> Vec<u8> {
    error_message(
        sqlstate::DUPLICATE_PREPARED_STATEMENT,
        &format!("prepared statement \"{name}\" already exists"),
    )
}

fn too_many(cap: usize) -> Vec<u8> {
    error_message(
        sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
        &format!(
            "too many prepared statements for this client (max_client_prepared_statements = {cap}); DEALLOCATE some"
        ),
    )
}

fn close_message(buf: &mut BytesMut, name: &str) {
    backend::message(buf, fe::CLOSE, |b| {
        b.put_u8(b'S');
        b.put_slice(name.as_bytes());
        b.put_u8(0);
    });
}

fn write_parse(buf: &mut BytesMut, name: &str, body: &[u8]) {
    backend::message(buf, fe::PARSE, |b| {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(body);
    });
}

fn write_query(buf: &mut BytesMut, sql: &str) {
    backend::message(buf, fe::QUERY, |b| {
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
    });
}

/// Refuses an extended-protocol message with the error PostgreSQL would raise: the server
/// fails a Bind of a statement that does not exist in its place, and the client sees our
/// error instead of that one.
fn refuse(
    rbuf: &mut BytesMut,
    h: Header,
    server: &mut ServerConn,
    flow: &mut ClientFlow,
    error: Vec<u8>,
) -> Step {
    backend::message(&mut server.conn.wbuf, fe::BIND, |b| {
        b.put_u8(0); // unnamed portal
        b.put_slice(ABSENT.as_bytes());
        b.put_u8(0);
        b.put_i16(0); // no parameter formats
        b.put_i16(0); // no parameters
        b.put_i16(0); // no result formats
    });
    server.tracker.push(Slot {
        req: Request::Bind,
        owner: Owner::Client,
        extra: Some(Box::new(Extra::Replace(error))),
    });
    skip(rbuf, h, flow);
    Step::Consumed
}

/// The simple-query counterpart of `refuse`.
fn refuse_query(server: &mut ServerConn, error: Vec<u8>) {
    write_query(
        &mut server.conn.wbuf,
        &format!("EXECUTE {}", quote_ident(ABSENT)),
    );
    server.tracker.push(Slot {
        req: Request::Query,
        owner: Owner::Client,
        extra: Some(Box::new(Extra::Replace(error))),
    });
}

/// A Sync whose ReadyForQuery answers a simple query the pooler handled itself (it
/// carries the server's real transaction status).
fn ready_via_sync(server: &mut ServerConn) {
    backend::message(&mut server.conn.wbuf, fe::SYNC, |_| {});
    server.tracker.push(Slot::new(Request::Sync, Owner::Client));
}

/// After "cached plan must not change result type", closes every statement of the server
/// so each is prepared again, with a fresh plan, when next used.
fn close_stale(server: &mut ServerConn) {
    for victim in server.info.prepared.take_stale() {
        close_message(&mut server.conn.wbuf, &victim);
        server.tracker.push(Slot::new(
            Request::Close,
            Owner::Internal(Internal::Prepare),
        ));
    }
}

/// Records `name` as prepared on the server, closing the least recently used statement
/// beyond the cap first.
fn make_room(server: &mut ServerConn, name: &str, cap: usize) {
    if let Some(victim) = server.info.prepared.insert(name, cap) {
        close_message(&mut server.conn.wbuf, &victim);
        server.tracker.push(Slot::new(
            Request::Close,
            Owner::Internal(Internal::Prepare),
        ));
    }
}

/// Makes sure `server` has `stmt`, preparing it ahead of whatever is written next.
/// `before_query`: what follows is a simple query, so an extended exchange opened here is
/// closed with a Sync of its own.
/// `ensure`, then whether the request about to be written may be kept for one retry (see
/// `client::Replay`): the statement was already there (its plan possibly stale) and the
/// request opens a batch, with nothing in flight and no transaction block.
fn ensure_replayable(
    server: &mut ServerConn,
    stmt: &Statement,
    p: &Prepared<'_>,
    before_query: bool,
) -> bool {
    let before = server.conn.wbuf.len();
    ensure(server, stmt, p, before_query);
    server.conn.wbuf.len() == before
        && server.tracker.status() == b'I'
        && !server.tracker.awaiting_replies()
        && !server.tracker.has_internal()
}

/// Prepares statement `name` on `server` (a Parse, or a PREPARE for SQL-level ones), undone
/// in the server's list if it fails.
fn write_prepare(server: &mut ServerConn, name: &str, how: &Prepare) {
    let undo = Some(Box::new(Extra::Undo(ParseUndo {
        server_name: name.to_string(),
        client_name: None,
    })));
    let req = match how {
        Prepare::Parse(body) => {
            write_parse(&mut server.conn.wbuf, name, body);
            Request::Parse
        }
        Prepare::Sql(rest) => {
            write_query(
                &mut server.conn.wbuf,
                &format!("PREPARE {} {rest}", quote_ident(name)),
            );
            Request::Query
        }
    };
    server.tracker.push(Slot {
        req,
        owner: Owner::Internal(Internal::Prepare),
        extra: undo,
    });
}

fn ensure(server: &mut ServerConn, stmt: &Statement, p: &Prepared<'_>, before_query: bool) {
    close_stale(server);
    let name = &stmt.server_name;
    if server.info.prepared.touch(name) {
        return;
    }
    let was_unsynced = server.tracker.unsynced();
    make_room(server, name, p.server_cap);
    write_prepare(server, name, &stmt.how);
    if before_query && !was_unsynced && server.tracker.unsynced() {
        backend::message(&mut server.conn.wbuf, fe::SYNC, |_| {});
        server
            .tracker
            .push(Slot::new(Request::Sync, Owner::Internal(Internal::Prepare)));
    }
    p.stats.server_parses.add(1);
}

fn parse(
    rbuf: &mut BytesMut,
    h: Header,
    server: &mut ServerConn,
    p: &mut Prepared<'_>,
    flow: &mut ClientFlow,
) -> Step {
    if rbuf.len() < h.total() {
        return Step::NeedMore;
    }
    p.stats.client_parses.add(1);
    let body = &rbuf[frame::HEADER_LEN..h.total()];
    let mut pos = 0;
    let Some(name) = read_cstr(body, &mut pos) else {
        return Step::Forward;
    };
    if name.is_empty() {
        return Step::Forward;
    }
    let name = String::from_utf8_lossy(name).into_owned();
    if p.statements.contains(&name) {
        return refuse(rbuf, h, server, flow, duplicate(&name));
    }
    if p.statements.len() >= p.client_cap {
        return refuse(rbuf, h, server, flow, too_many(p.client_cap));
    }
    if server.tracker.status() == b'E' {
        // In an aborted transaction PostgreSQL refuses the Parse and keeps no name: let
        // the server say so, under a name it does not hold (its own could fail for
        // another reason).
        write_parse(&mut server.conn.wbuf, ABSENT, &body[pos..]);
        server
            .tracker
            .push(Slot::new(Request::Parse, Owner::Client));
        rbuf.advance(h.total());
        return Step::Consumed;
    }
    let stmt = Statement::new(Prepare::Parse(body[pos..].to_vec()));
    p.statements.insert(&name, stmt.clone());
    close_stale(server);
    let sname = &stmt.server_name;
    if server.info.prepared.touch(sname) {
        server.tracker.push_fake(b"1\0\0\0\x04".to_vec());
    } else {
        make_room(server, sname, p.server_cap);
        write_parse(&mut server.conn.wbuf, sname, &body[pos..]);
        // A Parse the server refuses leaves no name behind (the undo removes it).
        server.tracker.push(Slot {
            req: Request::Parse,
            owner: Owner::Client,
            extra: Some(Box::new(Extra::Undo(ParseUndo {
                server_name: sname.clone(),
                client_name: Some(name),
            }))),
        });
        p.stats.server_parses.add(1);
    }
    rbuf.advance(h.total());
    Step::Consumed
}

/// Finds the first two C strings of a message body from what has arrived: (end of the
/// first, end of the second) as offsets into the body, or None if not there yet.
fn two_cstrs(rbuf: &[u8], h: Header) -> Option<(usize, usize)> {
    let avail = &rbuf[frame::HEADER_LEN..h.total().min(rbuf.len())];
    let first = avail.iter().position(|&b| b == 0)?;
    let second = avail[first + 1..].iter().position(|&b| b == 0)? + first + 1;
    Some((first, second))
}

fn bind(
    rbuf: &mut BytesMut,
    h: Header,
    server: &mut ServerConn,
    p: &mut Prepared<'_>,
    flow: &mut ClientFlow,
) -> Step {
    let Some((portal_end, name_end)) = two_cstrs(rbuf, h) else {
        return if rbuf.len() < h.total() {
            Step::NeedMore
        } else {
            Step::Forward
        };
    };
    p.stats.binds.add(1);
    if name_end == portal_end + 1 {
        return Step::Forward;
    }
    let body = &rbuf[frame::HEADER_LEN..];
    let name = String::from_utf8_lossy(&body[portal_end + 1..name_end]).into_owned();
    let Some(stmt) = p.statements.get(&name).cloned() else {
        // PostgreSQL itself answers an unknown name, with the client's name in the error.
        return Step::Forward;
    };
    let before = server.conn.wbuf.len();
    let replayable = ensure_replayable(server, &stmt, p, false);
    if replayable {
        server.replay = Some(Box::new(crate::client::Replay {
            stmt: stmt.clone(),
            bytes: BytesMut::new(),
            slots: Vec::new(),
            from: Some(before),
            complete: false,
        }));
        server.tracker.start_recording();
    } else if server.replay.as_ref().is_some_and(|r| r.complete) {
        server.replay = None;
    }
    let portal = &rbuf[frame::HEADER_LEN..frame::HEADER_LEN + portal_end + 1];
    let rest = h.len as usize - (name_end + 1);
    let new_len = 4 + portal.len() + stmt.server_name.len() + 1 + rest;
    let out = &mut server.conn.wbuf;
    out.put_u8(fe::BIND);
    out.put_u32(new_len as u32);
    out.put_slice(portal);
    out.put_slice(stmt.server_name.as_bytes());
    out.put_u8(0);
    server.tracker.push(Slot {
        req: Request::Bind,
        owner: Owner::Client,
        extra: replayable.then(|| Box::new(Extra::ReplayStart)),
    });
    // The parameters stream through like any body.
    rbuf.advance(frame::HEADER_LEN + name_end + 1);
    flow.pass = rest as u32;
    flow.pass_drop = false;
    Step::Consumed
}

/// The client's statement name of a Describe or Close of a statement ('S'), if named.
fn statement_name(rbuf: &[u8], h: Header) -> Option<String> {
    let body = &rbuf[frame::HEADER_LEN..h.total()];
    if body.first() != Some(&b'S') {
        return None;
    }
    let mut pos = 1;
    let name = read_cstr(body, &mut pos)?;
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

fn describe(rbuf: &mut BytesMut, h: Header, server: &mut ServerConn, p: &mut Prepared<'_>) -> Step {
    if rbuf.len() < h.total() {
        return Step::NeedMore;
    }
    let Some(name) = statement_name(rbuf, h) else {
        return Step::Forward;
    };
    let Some(stmt) = p.statements.get(&name).cloned() else {
        return Step::Forward;
    };
    ensure(server, &stmt, p, false);
    backend::message(&mut server.conn.wbuf, fe::DESCRIBE, |b| {
        b.put_u8(b'S');
        b.put_slice(stmt.server_name.as_bytes());
        b.put_u8(0);
    });
    server
        .tracker
        .push(Slot::new(Request::DescribeStatement, Owner::Client));
    rbuf.advance(h.total());
    Step::Consumed
}

fn close(rbuf: &mut BytesMut, h: Header, server: &mut ServerConn, p: &mut Prepared<'_>) -> Step {
    if rbuf.len() < h.total() {
        return Step::NeedMore;
    }
    let Some(name) = statement_name(rbuf, h) else {
        return Step::Forward;
    };
    // The statement stays on the server for others; only the client's name goes.
    // Closing a name that does not exist is not an error in PostgreSQL either.
    p.statements.remove(&name);
    server.tracker.push_fake(b"3\0\0\0\x04".to_vec());
    rbuf.advance(h.total());
    Step::Consumed
}

fn query(rbuf: &mut BytesMut, h: Header, server: &mut ServerConn, p: &mut Prepared<'_>) -> Step {
    // Only short queries can be PREPARE/EXECUTE/DEALLOCATE worth looking at.
    if h.len > 64 * 1024 || !starts_like_ours(&rbuf[frame::HEADER_LEN..]) {
        return Step::Forward;
    }
    if rbuf.len() < h.total() {
        return Step::NeedMore;
    }
    if server.tracker.status() == b'E' {
        // An aborted transaction refuses all of these: the server says so itself.
        return Step::Forward;
    }
    let body = &rbuf[frame::HEADER_LEN..h.total()];
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    let Ok(text) = std::str::from_utf8(text) else {
        return Step::Forward;
    };
    let Some(cmd) = sql_command(text) else {
        return Step::Forward;
    };
    let mut done = BytesMut::new();
    match cmd {
        SqlCommand::Prepare { name, rest } => {
            if p.statements.contains(&name) {
                refuse_query(server, duplicate(&name));
                rbuf.advance(h.total());
                return Step::Consumed;
            }
            if p.statements.len() >= p.client_cap {
                refuse_query(server, too_many(p.client_cap));
                rbuf.advance(h.total());
                return Step::Consumed;
            }
            p.stats.client_parses.add(1);
            let stmt = Statement::new(Prepare::Sql(rest.clone()));
            p.statements.insert(&name, stmt.clone());
            close_stale(server);
            let sname = stmt.server_name.clone();
            if server.info.prepared.touch(&sname) {
                backend::command_complete(&mut done, "PREPARE");
            } else {
                make_room(server, &sname, p.server_cap);
                if server.tracker.unsynced() {
                    // make_room closed a statement with a protocol Close: end that
                    // exchange before the simple query.
                    backend::message(&mut server.conn.wbuf, fe::SYNC, |_| {});
                    server
                        .tracker
                        .push(Slot::new(Request::Sync, Owner::Internal(Internal::Prepare)));
                }
                write_query(
                    &mut server.conn.wbuf,
                    &format!("PREPARE {} {rest}", quote_ident(&sname)),
                );
                server.tracker.push(Slot {
                    req: Request::Query,
                    owner: Owner::Client,
                    extra: Some(Box::new(Extra::Undo(ParseUndo {
                        server_name: sname,
                        client_name: Some(name),
                    }))),
                });
                p.stats.server_parses.add(1);
                rbuf.advance(h.total());
                return Step::Consumed;
            }
        }
        SqlCommand::Execute { prefix, name, rest } => {
            let Some(stmt) = p.statements.get(&name).cloned() else {
                // The server raises "does not exist" with the client's name.
                return Step::Forward;
            };
            let replayable = ensure_replayable(server, &stmt, p, true);
            let sql = format!("{prefix}EXECUTE {} {rest}", quote_ident(&stmt.server_name));
            let start = server.conn.wbuf.len();
            write_query(&mut server.conn.wbuf, &sql);
            let slot = Slot {
                req: Request::Query,
                owner: Owner::Client,
                extra: replayable.then(|| Box::new(Extra::ReplayStart)),
            };
            server.replay = replayable.then(|| {
                Box::new(crate::client::Replay {
                    stmt: stmt.clone(),
                    bytes: BytesMut::from(&server.conn.wbuf[start..]),
                    slots: vec![slot.clone()],
                    // Anything written after it in this call means more followed.
                    from: Some(server.conn.wbuf.len()),
                    complete: true,
                })
            });
            server.tracker.push(slot);
            rbuf.advance(h.total());
            return Step::Consumed;
        }
        SqlCommand::Deallocate(name) => {
            if !p.statements.remove(&name) {
                return Step::Forward;
            }
            backend::command_complete(&mut done, "DEALLOCATE");
        }
        SqlCommand::DeallocateAll => {
            p.statements.clear();
            backend::command_complete(&mut done, "DEALLOCATE ALL");
        }
    }
    server.tracker.push_fake(done.to_vec());
    ready_via_sync(server);
    rbuf.advance(h.total());
    Step::Consumed
}

/// Cheap first look before a query is inspected: does it start with one of our keywords?
pub(super) fn starts_like_ours(body: &[u8]) -> bool {
    // Every simple query passes here: no allocation.
    let s = body.trim_ascii_start();
    s.get(..7).is_some_and(|head| {
        [b"prepare", b"execute", b"dealloc", b"explain"]
            .iter()
            .any(|kw| head.eq_ignore_ascii_case(*kw))
    })
}

/// Applies what an ErrorResponse undid: the statement is not on the server after all, and
/// a client's own failed Parse leaves no name behind.
pub fn undo(
    server: &mut ServerConn,
    statements: Option<&mut ClientStatements>,
    undo: Vec<ParseUndo>,
) {
    let mut statements = statements;
    for u in undo {
        server.info.prepared.remove(&u.server_name);
        if let (Some(c), Some(st)) = (u.client_name.as_deref(), statements.as_deref_mut()) {
            st.undo(c, &u.server_name);
        }
    }
}

/// Retries a kept batch whose first Bind met a stale plan: the statement is closed and
/// prepared again, and the batch sent once more; the failed attempt's error and
/// ReadyForQuery are consumed, so the client sees only the retry's replies.
pub fn retry(server: &mut ServerConn, r: crate::client::Replay, cap: usize) -> bool {
    // Parses the failed attempt carried go again; they must fit without evicting a
    // statement the batch may use.
    let again = r
        .slots
        .iter()
        .filter(|s| matches!(s.extra.as_deref(), Some(Extra::Undo(u)) if !server.info.prepared.contains(&u.server_name)))
        .count();
    if server.info.prepared.len() + again > cap {
        return false;
    }
    server.tracker.swallow_front_ready();
    let name = r.stmt.server_name.clone();
    // Drop the stale statement, then prepare it again.
    match &r.stmt.how {
        Prepare::Parse(_) => {
            close_message(&mut server.conn.wbuf, &name);
            server.tracker.push(Slot::new(
                Request::Close,
                Owner::Internal(Internal::Prepare),
            ));
        }
        Prepare::Sql(_) => {
            write_query(
                &mut server.conn.wbuf,
                &format!("DEALLOCATE {}", quote_ident(&name)),
            );
            server.tracker.internal_query(Internal::Prepare);
        }
    }
    write_prepare(server, &name, &r.stmt.how);
    server.info.prepared.insert(&name, cap);
    server.conn.wbuf.extend_from_slice(&r.bytes);
    for mut s in r.slots {
        match s.extra.as_deref() {
            // The failed attempt undid the Parses it carried: they are sent again.
            Some(Extra::Undo(u)) => {
                server.info.prepared.insert(&u.server_name, cap);
            }
            // Once only.
            Some(Extra::ReplayStart) => s.extra = None,
            _ => {}
        }
        server.tracker.push(s);
    }
    true
}
