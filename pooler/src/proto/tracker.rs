//! What a server still owes: a pure record of the requests sent to one server connection,
//! so that "may this server go back to the pool?" is a question with no I/O in it.
//!
//! Every simple Query, Sync and FunctionCall is answered by exactly one ReadyForQuery, so
//! the replies form segments each ending in a ReadyForQuery. Each segment belongs either to
//! the client or to the pooler (queries it sends itself: restoring parameters, the reset
//! query, a rollback); pooler segments are consumed without reaching the client. Extended
//! protocol messages sent since the last Sync leave the server mid-exchange (an unnamed
//! portal may be open, an error would skip to the next Sync), so a server with such
//! messages outstanding is never released.

use std::collections::VecDeque;

use super::frontend::tag;

/// Who a reply segment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Forwarded to the client.
    Client,
    /// Sent by the pooler; consumed silently.
    Internal(Internal),
}

/// Why the pooler sent a query of its own.
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
}

#[derive(Debug, Default, Clone)]
pub struct Tracker {
    segments: VecDeque<Owner>,
    unsynced: bool,
    /// Status byte of the last ReadyForQuery: b'I', b'T' or b'E'.
    last_status: u8,
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            segments: VecDeque::new(),
            unsynced: false,
            last_status: b'I',
        }
    }

    /// Records a client message being forwarded to the server.
    #[inline]
    pub fn client_message(&mut self, t: u8) {
        match t {
            tag::QUERY | tag::FUNCTION_CALL => self.segments.push_back(Owner::Client),
            tag::SYNC => {
                self.segments.push_back(Owner::Client);
                self.unsynced = false;
            }
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => {
                self.unsynced = true
            }
            _ => {}
        }
    }

    /// Records a query the pooler sent on its own.
    pub fn internal_query(&mut self, why: Internal) {
        self.segments.push_back(Owner::Internal(why));
    }

    /// Owner of the reply message arriving now. Messages with no segment pending
    /// (asynchronous notices, replies to an unsynced Flush) belong to the client.
    #[inline]
    pub fn current(&self) -> Owner {
        self.segments.front().copied().unwrap_or(Owner::Client)
    }

    /// Records a ReadyForQuery; returns the owner of the segment it ends.
    #[inline]
    pub fn ready_for_query(&mut self, status: u8) -> Owner {
        self.last_status = status;
        self.segments.pop_front().unwrap_or(Owner::Client)
    }

    /// Nothing owed and no extended exchange open.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.segments.is_empty() && !self.unsynced
    }

    /// Replies are still expected from the server.
    #[inline]
    pub fn awaiting_replies(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Whether a segment owned by the pooler is pending (its replies must be consumed).
    pub fn has_internal(&self) -> bool {
        self.segments
            .iter()
            .any(|o| matches!(o, Owner::Internal(_)))
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

    pub fn reset(&mut self) {
        *self = Tracker::new();
    }
}
