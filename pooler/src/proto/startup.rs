//! Parsing of the untyped packets a client sends first: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest.

use bytes::{Buf, BytesMut};

use super::{ProtoError, read_cstr};

/// PostgreSQL's own limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;

pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// One decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        /// Minor version the client asked for (major is always 3).
        minor: u16,
        /// Parameters in the order sent, `_pq_.` protocol options excluded.
        params: Vec<(String, String)>,
        /// `_pq_.*` protocol options: we support none, so they are listed in
        /// NegotiateProtocolVersion.
        protocol_options: Vec<String>,
    },
}

/// Decodes one startup-phase packet from the front of `buf`. `Ok(None)` means more bytes
/// are needed; the length is checked before anything is buffered beyond it.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<Startup>, ProtoError> {
    decode_startup_limited(buf, MAX_STARTUP_LEN)
}

/// [`decode_startup`] with a lower length limit (the pooler's `max_packet_size` when that
/// is below PostgreSQL's 10000 bytes); a length field above it is refused before the
/// packet is buffered.
pub fn decode_startup_limited(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<Startup>, ProtoError> {
    let max_len = max_len.clamp(8, MAX_STARTUP_LEN);
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if !(8..=max_len as i32).contains(&len) {
        return Err(ProtoError::BadStartupLength(len.into()));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let body = &packet[4..];
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if !rest.is_empty() {
                return Err(ProtoError::BadStartup("SSL/GSS request with a body"));
            }
            Ok(Some(if code == SSL_REQUEST_CODE {
                Startup::SslRequest
            } else {
                Startup::GssEncRequest
            }))
        }
        CANCEL_REQUEST_CODE => {
            if rest.len() != 8 {
                return Err(ProtoError::BadStartup("cancel request of the wrong length"));
            }
            let mut r = rest;
            let pid = r.get_i32();
            let secret = r.get_i32();
            Ok(Some(Startup::Cancel { pid, secret }))
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtoError::UnsupportedProtocol { major, minor });
            }
            let (params, protocol_options) = parse_params(rest)?;
            Ok(Some(Startup::Startup {
                minor,
                params,
                protocol_options,
            }))
        }
    }
}

type Params = (Vec<(String, String)>, Vec<String>);

fn parse_params(body: &[u8]) -> Result<Params, ProtoError> {
    let mut params = Vec::new();
    let mut options = Vec::new();
    let mut pos = 0;
    loop {
        let Some(name) = read_cstr(body, &mut pos) else {
            return Err(ProtoError::BadStartup("missing terminator"));
        };
        if name.is_empty() {
            break;
        }
        let Some(value) = read_cstr(body, &mut pos) else {
            return Err(ProtoError::BadStartup("parameter without a value"));
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        if name.starts_with("_pq_.") {
            options.push(name);
        } else if params.iter().any(|(n, _)| *n == name) {
            return Err(ProtoError::BadStartup("duplicate parameter"));
        } else {
            params.push((name, value));
        }
    }
    if pos != body.len() {
        return Err(ProtoError::BadStartup("bytes after the terminator"));
    }
    Ok((params, options))
}

/// Splits the `options` startup parameter the way PostgreSQL's backend does
/// (pg_split_opts): whitespace separates words, a backslash escapes the next character.
pub fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
            continue;
        }
        in_word = true;
        if c == '\\' {
            if let Some(next) = chars.next() {
                cur.push(next);
            }
        } else {
            cur.push(c);
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Turns the words of `options` into `name=value` settings. Accepts `-c name=value`,
/// `-cname=value` and `--name=value`; anything else is refused with the offending word.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_options(options);
    let mut out = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let setting = if word == "-c" {
            match iter.next() {
                Some(next) => next.as_str(),
                None => return Err("-c without a setting".to_string()),
            }
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest
        } else if let Some(rest) = word.strip_prefix("--") {
            rest
        } else {
            return Err(format!("unsupported option {word:?}"));
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(format!("option {setting:?} has no value"));
        };
        if name.is_empty() {
            return Err(format!("option {setting:?} has no name"));
        }
        // PostgreSQL accepts dashes in option names for underscores.
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
}
