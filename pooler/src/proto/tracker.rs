//! What a server still owes: a pure record of the requests sent to one server connection,
//! one slot per reply-producing request, so that "may this server go back to the pool?"
//! and "whose is this reply?" are questions with no I/O in them.
//!
//! Each slot belongs to the client (replies forwarded) or to the pooler (queries it sends
//! itself: restoring parameters, the reset query, a rollback, re-preparing a statement;
//! replies consumed). A slot can also be a reply the pooler makes up (a ParseComplete for
//! a statement the server already has): it is emitted when it reaches the front, so it
//! lands exactly where PostgreSQL would have put it.
//!
//! PostgreSQL's rule for errors in the extended protocol is kept: an ErrorResponse to an
//! extended request makes the server skip every message up to the next Sync, so the slots
//! of those messages are dropped with it (and registrations made ahead of their replies are
//! undone). Extended-protocol messages sent since the last Sync leave the server
//! mid-exchange, so such a server is never released.

use std::collections::VecDeque;

use super::{backend::tag as be, frontend::tag as fe};

/// Who a reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Forwarded to the client.
    Client,
    /// Sent by the pooler; consumed silently.
    Internal(Internal),
}

/// Why the pooler sent a request of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// `SET` statements bringing the server's parameters in line with the client's.
    SetParams,
    /// `server_reset_query` before the server returns to the pool.
    Reset,
    /// `ROLLBACK` of a transaction its client abandoned.
    Rollback,
    /// `server_check_query`.
    Check,
    /// Preparing (or closing) a statement on this server for a client that prepared it
    /// elsewhere.
    Prepare,
}

/// What kind of request a slot stands for, which decides the reply that completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Simple Query or FunctionCall: everything up to ReadyForQuery.
    Query,
    Sync,
    Parse,
    Bind,
    DescribeStatement,
    DescribePortal,
    Execute,
    Close,
    /// A reply made up by the pooler (see `Extra::Fake`).
    Fake,
}

/// A Parse registered before its reply: undone if the server refuses or skips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseUndo {
    /// The statement name on the server.
    pub server_name: String,
    /// The client's name for it, when the Parse was the client's own.
    pub client_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    Undo(ParseUndo),
    /// Complete backend messages to emit to the client in this slot's place.
    Fake(Vec<u8>),
    /// The first request of a batch the pooler can replay (see `client::Replay`).
    ReplayStart,
    /// This request is sent to fail on purpose (so the server aborts the transaction and
    /// skips to Sync exactly as for a real error); its ErrorResponse is replaced by this
    /// one, the error PostgreSQL would have raised for what the client sent.
    Replace(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub req: Request,
    pub owner: Owner,
    pub extra: Option<Box<Extra>>,
}

impl Slot {
    pub fn new(req: Request, owner: Owner) -> Slot {
        Slot {
            req,
            owner,
            extra: None,
        }
    }
}

/// The outcome of an ErrorResponse.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorOutcome {
    /// Registrations to undo: the failed Parse and the Parses the server skipped.
    pub undo: Vec<ParseUndo>,
    /// The error to send the client instead of the server's (see `Extra::Replace`).
    pub replace: Option<Vec<u8>>,
    /// The failed request starts a batch the pooler kept for a replay.
    pub replay_start: bool,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    slots: VecDeque<Slot>,
    /// Copies of the slots pushed while a replayable batch is being recorded.
    recording: Option<Vec<Slot>>,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    /// The server reported an error in an extended exchange and skips to the next Sync,
    /// which has not been sent yet: messages until then produce no replies.
    error_skip: bool,
    /// Status byte of the last ReadyForQuery: b'I', b'T' or b'E'.
    last_status: u8,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            slots: VecDeque::new(),
            recording: None,
            unsynced: false,
            error_skip: false,
            last_status: b'I',
        }
    }

    /// Records a client message forwarded unchanged. `describe_kind` is the first body
    /// byte of a Describe ('S' or 'P'), unused otherwise.
    #[inline]
    pub fn client_message(&mut self, t: u8, describe_kind: u8) {
        let req = match t {
            fe::QUERY | fe::FUNCTION_CALL => Request::Query,
            fe::SYNC => Request::Sync,
            fe::PARSE => Request::Parse,
            fe::BIND => Request::Bind,
            fe::DESCRIBE if describe_kind == b'S' => Request::DescribeStatement,
            fe::DESCRIBE => Request::DescribePortal,
            fe::EXECUTE => Request::Execute,
            fe::CLOSE => Request::Close,
            // Flush asks for pending output and changes no state (psycopg sends one after
            // every Sync: it must not keep the server linked).
            _ => return,
        };
        self.push(Slot::new(req, Owner::Client));
    }

    /// Records a request (the client's, rewritten, or the pooler's own).
    pub fn push(&mut self, slot: Slot) {
        match slot.req {
            Request::Sync => {
                self.unsynced = false;
                self.error_skip = false;
            }
            // The server discards it: no reply will come.
            _ if self.error_skip => return,
            Request::Query => {}
            _ => self.unsynced = true,
        }
        if let Some(r) = self.recording.as_mut() {
            r.push(slot.clone());
        }
        self.slots.push_back(slot);
    }

    /// Starts copying every slot pushed from now on (a replayable batch).
    pub fn start_recording(&mut self) {
        self.recording = Some(Vec::new());
    }

    /// Stops copying; returns what was recorded.
    pub fn take_recording(&mut self) -> Option<Vec<Slot>> {
        self.recording.take()
    }

    /// After an error: the ReadyForQuery of the Sync or simple query now at the front goes
    /// to the pooler (a retry replaces what the client would have seen).
    pub fn swallow_front_ready(&mut self) {
        if let Some(s) = self.slots.front_mut()
            && matches!(s.req, Request::Sync | Request::Query)
        {
            s.owner = Owner::Internal(Internal::Prepare);
        }
    }

    /// Queues complete backend messages for the client, to be emitted in order.
    pub fn push_fake(&mut self, messages: Vec<u8>) {
        if self.error_skip {
            return;
        }
        self.unsynced = true;
        // A made-up reply inside a batch cannot be replayed faithfully.
        self.recording = None;
        self.slots.push_back(Slot {
            req: Request::Fake,
            owner: Owner::Client,
            extra: Some(Box::new(Extra::Fake(messages))),
        });
    }

    /// Records a simple query of the pooler's own.
    pub fn internal_query(&mut self, why: Internal) {
        self.slots
            .push_back(Slot::new(Request::Query, Owner::Internal(why)));
    }

    /// Extended-protocol messages were sent since the last Sync.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Whether the server skips messages until the client's next Sync.
    pub fn error_skip(&self) -> bool {
        self.error_skip
    }

    /// The made-up replies now at the front, to emit before anything else.
    pub fn take_fake(&mut self) -> Option<Vec<u8>> {
        if self.slots.front().is_some_and(|s| s.req == Request::Fake) {
            let s = self.slots.pop_front()?;
            if let Some(b) = s.extra
                && let Extra::Fake(bytes) = *b
            {
                return Some(bytes);
            }
        }
        None
    }

    /// Owner of the reply arriving now. Messages with nothing pending (asynchronous
    /// notices, notifications) belong to the client.
    #[inline]
    pub fn current(&self) -> Owner {
        self.slots
            .iter()
            .find(|s| s.req != Request::Fake)
            .map_or(Owner::Client, |s| s.owner)
    }

    /// Records a server message other than ErrorResponse and ReadyForQuery; returns its
    /// owner and the slot it completed, if any.
    #[inline]
    pub fn reply(&mut self, t: u8) -> (Owner, Option<Slot>) {
        let Some(front) = self.slots.front() else {
            return (Owner::Client, None);
        };
        let owner = front.owner;
        let done = matches!(
            (front.req, t),
            (Request::Parse, be::PARSE_COMPLETE)
                | (Request::Bind, be::BIND_COMPLETE)
                | (Request::Close, be::CLOSE_COMPLETE)
                | (
                    Request::DescribeStatement | Request::DescribePortal,
                    be::ROW_DESCRIPTION | be::NO_DATA,
                )
                | (
                    Request::Execute,
                    be::COMMAND_COMPLETE | be::EMPTY_QUERY | be::PORTAL_SUSPENDED
                )
        );
        (owner, if done { self.slots.pop_front() } else { None })
    }

    /// Records an ErrorResponse; returns its owner and what to undo.
    pub fn error(&mut self) -> (Owner, ErrorOutcome) {
        let mut out = ErrorOutcome::default();
        let Some(front) = self.slots.front_mut() else {
            return (Owner::Client, out);
        };
        let owner = front.owner;
        if matches!(front.req, Request::Query | Request::Sync) {
            // A simple query, or the implicit commit at Sync, still ends in ReadyForQuery;
            // a PREPARE in it did not happen.
            match front.extra.take().map(|b| *b) {
                Some(Extra::Undo(u)) => out.undo.push(u),
                Some(Extra::Replace(e)) => out.replace = Some(e),
                Some(Extra::ReplayStart) => out.replay_start = true,
                _ => {}
            }
            return (owner, out);
        }
        // The failed request, then everything the server skips up to the next Sync.
        let mut first = true;
        while let Some(s) = self.slots.front() {
            if s.req == Request::Sync {
                return (owner, out);
            }
            if let Some(s) = self.slots.pop_front() {
                match s.extra.map(|b| *b) {
                    Some(Extra::Undo(u)) => out.undo.push(u),
                    Some(Extra::Replace(e)) if first => out.replace = Some(e),
                    Some(Extra::ReplayStart) if first => out.replay_start = true,
                    _ => {}
                }
            }
            first = false;
        }
        self.error_skip = true;
        (owner, out)
    }

    /// Records a ReadyForQuery; returns the owner of the request it ends.
    #[inline]
    pub fn ready_for_query(&mut self, status: u8) -> Owner {
        self.last_status = status;
        match self.slots.front() {
            Some(s) if matches!(s.req, Request::Query | Request::Sync) => {
                self.slots.pop_front().map_or(Owner::Client, |s| s.owner)
            }
            _ => Owner::Client,
        }
    }

    /// Nothing owed and no extended exchange open.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.slots.is_empty() && !self.unsynced && !self.error_skip
    }

    /// Replies are still expected from the server.
    #[inline]
    pub fn awaiting_replies(&self) -> bool {
        self.slots.iter().any(|s| s.req != Request::Fake)
    }

    /// Whether a request of the pooler's own is pending (its replies must be consumed).
    pub fn has_internal(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.owner, Owner::Internal(_)))
    }

    /// Status of the last ReadyForQuery.
    #[inline]
    pub fn status(&self) -> u8 {
        self.last_status
    }

    /// Idle and outside a transaction: the server may be released in transaction mode.
    #[inline]
    pub fn releasable(&self) -> bool {
        self.is_idle() && self.last_status == b'I'
    }
}
