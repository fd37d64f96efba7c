//! PostgreSQL wire protocol (version 3): decoding and encoding with no I/O at all.
//!
//! postgres-protocol covers the half where we are the client of PostgreSQL (parsing server
//! messages, writing client messages). This module is the other half, in the same
//! free-function style: parsing what clients send, writing what a server sends to clients,
//! and scanning message streams by their 5-byte headers so bodies can be forwarded untouched.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod sqlstate;
pub mod startup;
pub mod tracker;

#[cfg(test)]
mod tests;

use thiserror::Error;

/// A protocol violation by the peer. Every variant maps to SQLSTATE 08P01 unless stated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {max} (max_packet_size)")]
    TooLong { tag: char, len: u64, max: u64 },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: {0}")]
    BadStartup(&'static str),
    #[error("unexpected message type {0:?}")]
    UnexpectedMessage(char),
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
}

/// Reads a NUL-terminated string starting at `*pos`, advancing `*pos` past the NUL.
pub(crate) fn read_cstr<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    *pos += end + 1;
    rest.get(..end)
}

pub(crate) fn read_i32(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let bytes: [u8; 4] = buf.get(*pos..*pos + 4)?.try_into().ok()?;
    *pos += 4;
    Some(i32::from_be_bytes(bytes))
}
