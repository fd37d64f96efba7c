//! Moving bytes between a client and its linked server by message header: bodies are
//! copied through untouched, even when a message spans many reads. Only what pooling
//! needs is decoded: ReadyForQuery, ParameterStatus, ErrorResponse and the replies that
//! complete requests from the server; named-statement messages from the client.

mod statements;
mod to_client;
mod to_server;

pub use statements::Prepared;
pub use to_client::{ServerScan, emit_fakes, server_to_client};
pub use to_server::{ClientFlow, ClientScan, client_to_server};

use bytes::Buf;

use crate::proto::{frame, frontend::tag as fe};

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
    fn only_prepare_execute_deallocate_explain_are_looked_at() {
        use super::statements::starts_like_ours;
        for q in [
            "PREPARE p AS select 1",
            "  execute p(1)",
            "\nDeAlLoCaTe ALL",
            "prepare",
            "explain execute p",
        ] {
            assert!(starts_like_ours(q.as_bytes()), "{q:?}");
        }
        for q in [
            "END;",
            "BEGIN;",
            "select 1",
            "prepar",
            "",
            "   ",
            "explai",
            "analyze t",
        ] {
            assert!(!starts_like_ours(q.as_bytes()), "{q:?}");
        }
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
