//! The console session: reads messages, runs simple queries and the extended protocol
//! (Parse/Bind/Describe/Execute/Close/Sync/Flush, so drivers such as psycopg 3 and pgjdbc
//! can use it), and ends promptly when killed.

use std::{
    collections::HashMap,
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Buf;

use super::{
    Role,
    commands::{self, Ctx, Failure, Reply},
    extended::{Portal, Prepared, Step},
    parse::{self, Command},
    result, table,
};
use crate::{
    app::App,
    client::registry::ClientShared,
    net::Conn,
    proto::{
        backend::{self, Severity},
        frame, frontend, sqlstate,
    },
};

/// Stop reading requests while this much output waits for the client.
const HIGH_WATER: usize = 256 * 1024;
/// Longest console message accepted (a console query is a few words).
const MAX_MESSAGE: u32 = 1 << 20;
/// How long the last words (a FATAL) may take to reach a client that does not read.
const LAST_FLUSH: Duration = Duration::from_secs(5);

enum Event {
    Message(u8, Vec<u8>),
    Gone,
    Killed(String),
    Violation(String),
}

/// How handling a message ended.
enum Flow {
    Continue,
    /// Terminate, or the client is gone.
    End,
    /// FATAL with this SQLSTATE and message, then close.
    Fatal(&'static str, String),
}

pub struct Session {
    pub(super) app: Arc<App>,
    pub(super) conn: Conn,
    pub(super) shared: Arc<ClientShared>,
    pub(super) role: Role,
    pub(super) statements: HashMap<String, Prepared>,
    pub(super) portals: HashMap<String, Portal>,
    /// After an error in an extended-protocol exchange: discard until Sync.
    pub(super) skipping: bool,
}

impl Session {
    pub fn new(app: Arc<App>, conn: Conn, shared: Arc<ClientShared>, role: Role) -> Session {
        Session {
            app,
            conn,
            shared,
            role,
            statements: HashMap::new(),
            portals: HashMap::new(),
            skipping: false,
        }
    }

    pub async fn run(mut self) {
        loop {
            let flow = match poll_fn(|cx| self.poll_event(cx)).await {
                Event::Message(tag, body) => {
                    let before = self.conn.wbuf.len();
                    self.shared.stats.received.add(body.len() as u64 + 5);
                    let flow = self.handle(tag, &body).await;
                    let written = self.conn.wbuf.len().saturating_sub(before);
                    self.shared.stats.sent.add(written as u64);
                    flow
                }
                Event::Gone => Flow::End,
                Event::Killed(reason) => Flow::Fatal(sqlstate::ADMIN_SHUTDOWN, reason),
                Event::Violation(msg) => Flow::Fatal(sqlstate::PROTOCOL_VIOLATION, msg),
            };
            match flow {
                Flow::Continue => {}
                Flow::End => break,
                Flow::Fatal(code, msg) => {
                    backend::error_response(&mut self.conn.wbuf, Severity::Fatal, code, &msg, None);
                    break;
                }
            }
        }
        let _ = compio::time::timeout(LAST_FLUSH, self.conn.flush()).await;
    }

    /// The next thing to act on: a whole message, the client leaving, a kill, or garbage.
    /// Pending output is flushed meanwhile.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.shared.register(cx);
        self.conn.unpark();
        if let Some(reason) = self.shared.take_killed() {
            return Poll::Ready(Event::Killed(reason));
        }
        loop {
            let backlog = self.conn.send_backlog();
            if backlog < HIGH_WATER {
                match frame::whole(&self.conn.rbuf, MAX_MESSAGE) {
                    Err(e) => return Poll::Ready(Event::Violation(e.to_string())),
                    Ok(Some((h, body))) => {
                        let body = body.to_vec();
                        self.conn.rbuf.advance(h.total());
                        return Poll::Ready(Event::Message(h.tag, body));
                    }
                    Ok(None) => {}
                }
            }
            if !self.conn.send_idle() {
                match self.conn.poll_flush(cx) {
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
                    // Sent: requests held back by the backlog may go now.
                    Poll::Ready(Ok(())) => continue,
                    Poll::Pending => {}
                }
            }
            if backlog >= HIGH_WATER {
                // Wait for the client to read before taking more requests.
                return Poll::Pending;
            }
            match self.conn.poll_recv(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    async fn handle(&mut self, tag: u8, body: &[u8]) -> Flow {
        use frontend::tag as t;
        if tag == t::TERMINATE {
            return Flow::End;
        }
        if self.skipping && tag != t::SYNC {
            return Flow::Continue;
        }
        let result = match tag {
            t::QUERY => return self.simple_query(body).await,
            t::PARSE => self.parse(body),
            t::BIND => self.bind(body),
            t::DESCRIBE => self.describe(body),
            t::EXECUTE => self.execute(body).await,
            t::CLOSE => self.close(body),
            t::SYNC => {
                self.skipping = false;
                self.portals.remove("");
                backend::ready_for_query(&mut self.conn.wbuf, b'I');
                Ok(())
            }
            // Output is flushed whenever we wait for input.
            t::FLUSH => Ok(()),
            t::FUNCTION_CALL => {
                self.error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "function calls are not supported by the admin console",
                );
                backend::ready_for_query(&mut self.conn.wbuf, b'I');
                return Flow::Continue;
            }
            // Copy messages outside a copy are ignored, as PostgreSQL does.
            t::COPY_DATA | t::COPY_DONE | t::COPY_FAIL => Ok(()),
            other => {
                return Flow::Fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid frontend message type {other}"),
                );
            }
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(Step::Error(code, message)) => {
                self.error(code, &message);
                self.skipping = true;
                Flow::Continue
            }
            Err(Step::Fatal(code, message)) => Flow::Fatal(code, message),
        }
    }

    pub(super) fn error(&mut self, code: &str, message: &str) {
        backend::error_response(&mut self.conn.wbuf, Severity::Error, code, message, None);
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            app: &self.app,
            shared: &self.shared,
            role: self.role,
        }
    }

    /// Runs a command, counting it in the session's counters like a one-query
    /// transaction (PgBouncer counts console commands too).
    pub(super) async fn run_command(&mut self, cmd: &Command) -> Result<Reply, Failure> {
        let start = Instant::now();
        self.shared.request_time.store(
            crate::stats::now_micros(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let reply = commands::execute(cmd, &self.ctx()).await;
        let micros = start.elapsed().as_micros() as u64;
        let st = &self.shared.stats;
        st.queries.add(1);
        st.xacts.add(1);
        st.query_time.add(micros);
        st.xact_time.add(micros);
        reply
    }

    pub(super) fn write_reply(&mut self, reply: &Reply, binary: Option<&[bool]>, describe: bool) {
        let buf = &mut self.conn.wbuf;
        for n in &reply.notices {
            backend::error_response(
                buf,
                Severity::Notice,
                "00000",
                &n.message,
                n.detail.as_deref(),
            );
        }
        if let Some(rs) = &reply.rows {
            let text = vec![false; rs.columns.len()];
            let formats = binary.unwrap_or(&text);
            if describe {
                result::write_row_description(buf, &rs.columns, formats);
            }
            for row in &rs.rows {
                result::write_data_row(buf, &rs.columns, row, formats);
            }
        }
        backend::command_complete(buf, &reply.tag);
    }

    async fn simple_query(&mut self, body: &[u8]) -> Flow {
        let Ok(text) = frontend::query(body) else {
            return Flow::Fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed Query message".into(),
            );
        };
        let text = String::from_utf8_lossy(text).into_owned();
        let statements = parse::split(&text);
        if statements.is_empty() {
            backend::empty_query_response(&mut self.conn.wbuf);
        }
        for stmt in statements {
            let cmd = match parse::parse(stmt, &table::NAMES) {
                Ok(c) => c,
                Err(e) => {
                    self.error(e.code, &e.message);
                    break;
                }
            };
            match self.run_command(&cmd).await {
                Ok(reply) => self.write_reply(&reply, None, true),
                Err(Failure::Error { code, message }) => {
                    self.error(code, &message);
                    break;
                }
                Err(Failure::Killed(reason)) => {
                    return Flow::Fatal(sqlstate::ADMIN_SHUTDOWN, reason);
                }
            }
        }
        backend::ready_for_query(&mut self.conn.wbuf, b'I');
        Flow::Continue
    }
}
