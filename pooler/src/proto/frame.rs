//! Header-level view of a message stream: routing on the 5-byte header lets bodies be
//! forwarded as raw bytes, and only the few messages pooling needs are decoded.

use super::{ProtoError, read_cstr};

/// The 5-byte header of a typed message. `len` is the body length (the wire length field
/// minus its own 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    pub len: u32,
}

impl Header {
    /// Size of the whole message on the wire.
    pub fn total(&self) -> usize {
        5 + self.len as usize
    }
}

pub const HEADER_LEN: usize = 5;

/// Reads the header at the front of `buf`. `Ok(None)` means fewer than 5 bytes are there.
/// The length is validated before anything is allocated for the body: lengths below 4 and
/// above `max_len` are errors.
#[inline]
pub fn header(buf: &[u8], max_len: u32) -> Result<Option<Header>, ProtoError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let tag = h[0];
    let raw = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if raw < 4 {
        return Err(ProtoError::BadLength {
            tag: tag as char,
            len: raw.into(),
        });
    }
    if raw as u32 > max_len {
        return Err(ProtoError::TooLong {
            tag: tag as char,
            len: raw as u64,
            max: max_len.into(),
        });
    }
    Ok(Some(Header {
        tag,
        len: raw as u32 - 4,
    }))
}

/// If the whole message at the front of `buf` is present, its header and body.
#[inline]
pub fn whole(buf: &[u8], max_len: u32) -> Result<Option<(Header, &[u8])>, ProtoError> {
    let Some(h) = header(buf, max_len)? else {
        return Ok(None);
    };
    Ok(buf.get(HEADER_LEN..h.total()).map(|body| (h, body)))
}

/// Name and value of a ParameterStatus body.
pub fn parameter_status(body: &[u8]) -> Result<(String, String), ProtoError> {
    let bad = ProtoError::Malformed {
        what: "ParameterStatus",
    };
    let mut pos = 0;
    let name = read_cstr(body, &mut pos).ok_or(bad.clone())?;
    let value = read_cstr(body, &mut pos).ok_or(bad)?;
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// The fields of an ErrorResponse/NoticeResponse body that the pooler logs or relays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// Parses an ErrorResponse body leniently: missing fields are left empty (a server error
/// without a SQLSTATE is still an error).
pub fn error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    let mut pos = 0;
    while let Some(&code) = body.get(pos) {
        if code == 0 {
            break;
        }
        pos += 1;
        let Some(value) = read_cstr(body, &mut pos) else {
            break;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match code {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            b'D' => out.detail = Some(value),
            _ => {}
        }
    }
    out
}
