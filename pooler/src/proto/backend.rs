//! Messages the pooler writes to clients, acting as their server. Free functions that
//! append one message to a buffer, with the length back-patched.

use bytes::{BufMut, BytesMut};

/// Tags of backend messages the pooler inspects or writes.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY: u8 = b'I';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PORTAL_SUSPENDED: u8 = b's';
}

/// Appends a message: tag, length placeholder, body from `f`, then patches the length.
#[inline]
pub fn message(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    f(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    // A NUL inside would cut the string short on the client: drop it rather than corrupt.
    buf.extend(s.iter().copied().filter(|&b| b != 0));
    buf.put_u8(0);
}

pub fn authentication_ok(buf: &mut BytesMut) {
    message(buf, tag::AUTHENTICATION, |b| b.put_i32(0));
}

pub fn authentication_cleartext(buf: &mut BytesMut) {
    message(buf, tag::AUTHENTICATION, |b| b.put_i32(3));
}

pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL; `mechanisms` is the NUL-separated, double-NUL-terminated list.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[u8]) {
    message(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(10);
        b.put_slice(mechanisms);
    });
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, tag::PARAMETER_STATUS, |b| {
        cstr(b, name.as_bytes());
        cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, tag::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// The newest protocol version we speak, 3.0, as PostgreSQL encodes it (major << 16 | minor).
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// NegotiateProtocolVersion: the newest version we support and the protocol options we did
/// not recognise. The documentation says "minor version", but PostgreSQL sends the whole
/// version (PG_PROTOCOL_LATEST) and libpq reads it that way, so do the same.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest: i32, unrecognized: &[String]) {
    message(buf, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(newest);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            cstr(b, o.as_bytes());
        }
    });
}

pub fn command_complete(buf: &mut BytesMut, tag_text: &str) {
    message(buf, tag::COMMAND_COMPLETE, |b| cstr(b, tag_text.as_bytes()));
}

pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, tag::EMPTY_QUERY, |_| {});
}

/// Severity of an ErrorResponse/NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// ErrorResponse (or NoticeResponse for Notice/Warning) with the fields clients show.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
) {
    let t = match severity {
        Severity::Error | Severity::Fatal => tag::ERROR_RESPONSE,
        Severity::Notice | Severity::Warning => tag::NOTICE_RESPONSE,
    };
    message(buf, t, |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_str().as_bytes());
        b.put_u8(b'V');
        cstr(b, severity.as_str().as_bytes());
        b.put_u8(b'C');
        cstr(b, code.as_bytes());
        b.put_u8(b'M');
        cstr(b, message_text.as_bytes());
        if let Some(d) = detail {
            b.put_u8(b'D');
            cstr(b, d.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Column of a RowDescription written by the pooler itself (admin console): text format.
pub struct Column<'a> {
    pub name: &'a str,
    pub type_oid: u32,
}

pub const TEXT_OID: u32 = 25;
pub const INT8_OID: u32 = 20;
pub const INT4_OID: u32 = 23;

pub fn row_description(buf: &mut BytesMut, columns: &[Column<'_>]) {
    message(buf, tag::ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for c in columns {
            cstr(b, c.name.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(c.type_oid);
            let size: i16 = match c.type_oid {
                INT8_OID => 8,
                INT4_OID => 4,
                _ => -1,
            };
            b.put_i16(size);
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

pub fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    message(buf, tag::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}
