//! Parsing of typed client messages the pooler itself must understand (the login
//! exchange); everything else a client sends is forwarded by header only.

use super::{ProtoError, read_cstr, read_i32};

/// Tags of typed client messages (protocol 3.0).
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this tag.
    pub const PASSWORD: u8 = b'p';
}

/// Whether `t` is a message a logged-in client may send.
pub fn is_session_message(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY
            | tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::CLOSE
            | tag::SYNC
            | tag::FLUSH
            | tag::FUNCTION_CALL
            | tag::COPY_DATA
            | tag::COPY_DONE
            | tag::COPY_FAIL
            | tag::TERMINATE
    )
}

/// Body of a PasswordMessage: the password bytes without the trailing NUL.
pub fn password(body: &[u8]) -> Result<&[u8], ProtoError> {
    let mut pos = 0;
    let pw = read_cstr(body, &mut pos).ok_or(ProtoError::Malformed { what: "password" })?;
    if pos != body.len() {
        return Err(ProtoError::Malformed { what: "password" });
    }
    Ok(pw)
}

/// Body of a SASLInitialResponse: mechanism name and the client-first data.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtoError> {
    let bad = ProtoError::Malformed {
        what: "SASLInitialResponse",
    };
    let mut pos = 0;
    let mech = read_cstr(body, &mut pos).ok_or(bad.clone())?;
    let mech = std::str::from_utf8(mech).map_err(|_| bad.clone())?;
    let len = read_i32(body, &mut pos).ok_or(bad.clone())?;
    let data = body.get(pos..).ok_or(bad.clone())?;
    // -1 means "no initial response", which SCRAM does not allow.
    if len < 0 || len as usize != data.len() {
        return Err(bad);
    }
    Ok((mech, data))
}

/// Text of a simple Query message, without its NUL.
pub fn query(body: &[u8]) -> Result<&[u8], ProtoError> {
    let mut pos = 0;
    let q = read_cstr(body, &mut pos).ok_or(ProtoError::Malformed { what: "Query" })?;
    Ok(q)
}
