//! Rewriting a client's named-statement messages for the server it is on: Parse, Bind,
//! Describe and Close of named statements (protocol level) and PREPARE / EXECUTE /
//! DEALLOCATE (SQL level). Statements a server lacks are prepared on it first, in the same
//! round trip; replies PostgreSQL would have sent but the server will not (the statement
//! already existed there, a Close the pooler absorbed, an error the pooler raises itself)
//! are made up and placed exactly where they belong (see `proto::tracker`).

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
    /// Handled (forwarded rewritten, answered, or dropped).
    Consumed,
    /// Not a named-statement message: forward it as is.
    Forward,
}

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
        fe::DESCRIBE => describe(rbuf, h, server, p, flow),
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

fn not_found(name: &str) -> Vec<u8> {
    error_message(
        sqlstate::INVALID_SQL_STATEMENT_NAME,
        &format!("prepared statement \"{name}\" does not exist"),
    )
}

/// Answers an extended-protocol message with an error of our own and, like PostgreSQL
/// after an error, drops the client's messages up to its Sync.
fn refuse(
    rbuf: &mut BytesMut,
    h: Header,
    server: &mut ServerConn,
    flow: &mut ClientFlow,
    error: Vec<u8>,
) -> Step {
    server.tracker.push_fake(error);
    flow.dropping = true;
    skip(rbuf, h, flow);
    Step::Consumed
}

/// Makes sure `server` has `stmt`, preparing it (and closing the least recently used
/// statement beyond the cap) ahead of whatever is written next. `before_query`: what
/// follows is a simple query, so an extended exchange opened here is closed with a Sync.
fn ensure(server: &mut ServerConn, stmt: &Statement, p: &Prepared<'_>, before_query: bool) {
    close_stale(server);
    let name = &stmt.server_name;
    if server.info.prepared.touch(name) {
        return;
    }
    let was_unsynced = server.tracker.unsynced();
    if let Some(victim) = server.info.prepared.insert(name, p.server_cap) {
        backend::message(&mut server.conn.wbuf, fe::CLOSE, |b| {
            b.put_u8(b'S');
            b.put_slice(victim.as_bytes());
            b.put_u8(0);
        });
        server.tracker.push(Slot::new(
            Request::Close,
            Owner::Internal(Internal::Prepare),
        ));
    }
    let undo = Some(Box::new(Extra::Undo(ParseUndo {
        server_name: name.clone(),
        client_name: None,
    })));
    match &stmt.how {
        Prepare::Parse(body) => {
            write_parse(&mut server.conn.wbuf, name, body);
            server.tracker.push(Slot {
                req: Request::Parse,
                owner: Owner::Internal(Internal::Prepare),
                extra: undo,
            });
        }
        Prepare::Sql(rest) => {
            write_query(
                &mut server.conn.wbuf,
                &format!("PREPARE {} {rest}", quote_ident(name)),
            );
            server.tracker.push(Slot {
                req: Request::Query,
                owner: Owner::Internal(Internal::Prepare),
                extra: undo,
            });
        }
    }
    if before_query && !was_unsynced && server.tracker.unsynced() {
        backend::message(&mut server.conn.wbuf, fe::SYNC, |_| {});
        server
            .tracker
            .push(Slot::new(Request::Sync, Owner::Internal(Internal::Prepare)));
    }
    p.stats.server_parses.add(1);
}

/// After "cached plan must not change result type", closes every statement of the server
/// so each is prepared again, with a fresh plan, when next used.
fn close_stale(server: &mut ServerConn) {
    for victim in server.info.prepared.take_stale() {
        backend::message(&mut server.conn.wbuf, fe::CLOSE, |b| {
            b.put_u8(b'S');
            b.put_slice(victim.as_bytes());
            b.put_u8(0);
        });
        server.tracker.push(Slot::new(
            Request::Close,
            Owner::Internal(Internal::Prepare),
        ));
    }
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

/// A Sync whose ReadyForQuery answers a simple query the pooler handled itself (it
/// carries the server's real transaction status).
fn ready_via_sync(server: &mut ServerConn) {
    backend::message(&mut server.conn.wbuf, fe::SYNC, |_| {});
    server.tracker.push(Slot::new(Request::Sync, Owner::Client));
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
        let e = error_message(
            sqlstate::DUPLICATE_PREPARED_STATEMENT,
            &format!("prepared statement \"{name}\" already exists"),
        );
        return refuse(rbuf, h, server, flow, e);
    }
    if p.statements.len() >= p.client_cap {
        let e = error_message(
            sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
            &format!(
                "too many prepared statements for this client (max_client_prepared_statements = {}); DEALLOCATE some",
                p.client_cap
            ),
        );
        return refuse(rbuf, h, server, flow, e);
    }
    let stmt = Statement::new(Prepare::Parse(body[pos..].to_vec()));
    p.statements.insert(&name, stmt.clone());
    close_stale(server);
    let sname = &stmt.server_name;
    if server.info.prepared.touch(sname) {
        server.tracker.push_fake(b"1\0\0\0\x04".to_vec());
    } else {
        if let Some(victim) = server.info.prepared.insert(sname, p.server_cap) {
            backend::message(&mut server.conn.wbuf, fe::CLOSE, |b| {
                b.put_u8(b'S');
                b.put_slice(victim.as_bytes());
                b.put_u8(0);
            });
            server.tracker.push(Slot::new(
                Request::Close,
                Owner::Internal(Internal::Prepare),
            ));
        }
        write_parse(&mut server.conn.wbuf, sname, &body[pos..]);
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
        return refuse(rbuf, h, server, flow, not_found(&name));
    };
    ensure(server, &stmt, p, false);
    let portal = &rbuf[frame::HEADER_LEN..frame::HEADER_LEN + portal_end + 1];
    let rest = h.len as usize - (name_end + 1);
    let new_len = 4 + portal.len() + stmt.server_name.len() + 1 + rest;
    let out = &mut server.conn.wbuf;
    out.put_u8(fe::BIND);
    out.put_u32(new_len as u32);
    out.put_slice(portal);
    out.put_slice(stmt.server_name.as_bytes());
    out.put_u8(0);
    server.tracker.push(Slot::new(Request::Bind, Owner::Client));
    // The parameters stream through like any body.
    rbuf.advance(frame::HEADER_LEN + name_end + 1);
    flow.pass = rest as u32;
    flow.pass_drop = false;
    Step::Consumed
}

fn describe(
    rbuf: &mut BytesMut,
    h: Header,
    server: &mut ServerConn,
    p: &mut Prepared<'_>,
    flow: &mut ClientFlow,
) -> Step {
    if rbuf.len() < h.total() {
        return Step::NeedMore;
    }
    let body = &rbuf[frame::HEADER_LEN..h.total()];
    if body.first() != Some(&b'S') {
        return Step::Forward;
    }
    let mut pos = 1;
    let Some(name) = read_cstr(body, &mut pos) else {
        return Step::Forward;
    };
    if name.is_empty() {
        return Step::Forward;
    }
    let name = String::from_utf8_lossy(name).into_owned();
    let Some(stmt) = p.statements.get(&name).cloned() else {
        return refuse(rbuf, h, server, flow, not_found(&name));
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
    let body = &rbuf[frame::HEADER_LEN..h.total()];
    if body.first() != Some(&b'S') {
        return Step::Forward;
    }
    let mut pos = 1;
    let Some(name) = read_cstr(body, &mut pos) else {
        return Step::Forward;
    };
    if name.is_empty() {
        return Step::Forward;
    }
    // The statement stays on the server for others; only the client's name goes.
    // Closing a name that does not exist is not an error in PostgreSQL either.
    let name = String::from_utf8_lossy(name).into_owned();
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
    let body = &rbuf[frame::HEADER_LEN..h.total()];
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    let Ok(text) = std::str::from_utf8(text) else {
        return Step::Forward;
    };
    let Some(cmd) = sql_command(text) else {
        return Step::Forward;
    };
    let mut fake = BytesMut::new();
    match cmd {
        SqlCommand::Prepare { name, rest } => {
            if p.statements.contains(&name) {
                fake.extend_from_slice(&error_message(
                    sqlstate::DUPLICATE_PREPARED_STATEMENT,
                    &format!("prepared statement \"{name}\" already exists"),
                ));
            } else {
                p.stats.client_parses.add(1);
                let stmt = Statement::new(Prepare::Sql(rest.clone()));
                p.statements.insert(&name, stmt.clone());
                let sname = stmt.server_name.clone();
                if server.info.prepared.touch(&sname) {
                    backend::command_complete(&mut fake, "PREPARE");
                } else {
                    if let Some(victim) = server.info.prepared.insert(&sname, p.server_cap) {
                        write_query(
                            &mut server.conn.wbuf,
                            &format!("DEALLOCATE {}", quote_ident(&victim)),
                        );
                        server.tracker.internal_query(Internal::Prepare);
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
        }
        SqlCommand::Execute { name, rest } => match p.statements.get(&name).cloned() {
            Some(stmt) => {
                ensure(server, &stmt, p, true);
                let sql = format!("EXECUTE {} {rest}", quote_ident(&stmt.server_name));
                write_query(&mut server.conn.wbuf, &sql);
                server
                    .tracker
                    .push(Slot::new(Request::Query, Owner::Client));
                rbuf.advance(h.total());
                return Step::Consumed;
            }
            None => fake.extend_from_slice(&not_found(&name)),
        },
        SqlCommand::Deallocate(name) => {
            if p.statements.remove(&name) {
                backend::command_complete(&mut fake, "DEALLOCATE");
            } else {
                fake.extend_from_slice(&not_found(&name));
            }
        }
        SqlCommand::DeallocateAll => {
            p.statements.clear();
            backend::command_complete(&mut fake, "DEALLOCATE ALL");
        }
    }
    server.tracker.push_fake(fake.to_vec());
    ready_via_sync(server);
    rbuf.advance(h.total());
    Step::Consumed
}

/// Cheap first look before a query is inspected: does it start with one of our keywords?
fn starts_like_ours(body: &[u8]) -> bool {
    let s = body.trim_ascii_start();
    let head = &s[..s.len().min(10)];
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    lower.starts_with(b"prepare") || lower.starts_with(b"execute") || lower.starts_with(b"dealloc")
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
