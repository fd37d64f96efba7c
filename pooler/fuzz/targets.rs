//! Bodies of the fuzz targets, shared by the cargo-fuzz binaries (fuzz_targets/*.rs) and by
//! tests/fuzz_corpus.rs, which runs the regression corpus through them without libFuzzer.
//! Each takes arbitrary bytes; a panic (including a failed invariant below) is a finding.

#![allow(dead_code)]

use std::sync::OnceLock;

use bytes::BytesMut;
use pooler::auth::{ScramClient, ScramServer, Secret};
use pooler::proto::tracker::{Extra, Internal, Owner, ParseUndo, Request, Slot, Tracker};
use pooler::proto::{frame, frontend, startup};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name (the corpus directory name under pooler/fuzz/corpus/).
pub const TARGETS: [(&str, Target); 5] = [
    ("startup", startup),
    ("frame", frame),
    ("scram", scram),
    ("config", config),
    ("client_stream", client_stream),
];

/// The startup-phase decoder on a byte stream, whole and split in two at every point
/// named by the first byte, plus the `options` parameter parser.
pub fn startup(data: &[u8]) {
    let whole = decode_all(BytesMut::from(data));
    // Arriving in two reads must not change what is decoded (the decoder is incremental).
    if let Some(&at) = data.first() {
        let at = (at as usize).min(data.len());
        let mut buf = BytesMut::from(&data[..at]);
        let first = startup::decode_startup(&mut buf);
        if let Ok(None) = first {
            buf.extend_from_slice(&data[at..]);
            assert_eq!(decode_all(buf), whole, "split decode differs");
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = startup::split_options(&text);
    if let Ok(settings) = startup::parse_options(&text) {
        assert!(settings.iter().all(|(n, _)| !n.is_empty()));
    }
}

fn decode_all(mut buf: BytesMut) -> Vec<Result<startup::Startup, String>> {
    let mut out = Vec::new();
    while out.len() < 64 {
        let before = buf.len();
        match startup::decode_startup(&mut buf) {
            Ok(Some(p)) => {
                assert!(buf.len() < before, "a packet decoded from no bytes");
                out.push(Ok(p));
            }
            Ok(None) => break,
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

/// The typed-message framing (header and whole message, under several limits) and the
/// two bodies the pooler decodes from servers: ErrorResponse and ParameterStatus.
pub fn frame(data: &[u8]) {
    for max in [4096, 1 << 20, u32::MAX] {
        if let Ok(Some(h)) = frame::header(data, max) {
            assert!(
                h.len <= max.saturating_sub(4),
                "length over the limit accepted"
            );
            assert_eq!(h.total(), 5 + h.len as usize);
        }
        let mut rest = data;
        while let Ok(Some((h, body))) = frame::whole(rest, max) {
            assert_eq!(body.len(), h.len as usize);
            let _ = frame::error_fields(body);
            let _ = frame::parameter_status(body);
            rest = &rest[h.total()..];
        }
    }
    let f = frame::error_fields(data);
    assert!(!f.code.contains('\0') && !f.message.contains('\0'));
    if let Ok((name, value)) = frame::parameter_status(data) {
        assert!(!name.contains('\0') && !value.contains('\0'));
    }
}

fn secret() -> &'static Secret {
    static SECRET: OnceLock<Secret> = OnceLock::new();
    SECRET.get_or_init(|| {
        Secret::Scram(Secret::scram_from_password(
            "pencil",
            b"0123456789abcdef",
            4096,
        ))
    })
}

/// The value of attribute `name` ("r", "s", ...) in a SCRAM message.
fn attr<'a>(msg: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(msg).ok()?;
    let prefix = format!("{name}=");
    text.split(',')
        .find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// Both SCRAM roles on arbitrary bytes: as the message itself, and appended to a valid
/// prefix (so the nonce check is passed and the later parsing is reached).
pub fn scram(data: &[u8]) {
    // Server role: a SASLInitialResponse body, then client-first data as such.
    if let Ok((mech, first)) = frontend::sasl_initial_response(data) {
        let mut s = ScramServer::new(secret()).expect("a SCRAM secret");
        let _ = s.client_first(mech, first);
    }
    let mut s = ScramServer::new(secret()).expect("a SCRAM secret");
    let _ = s.client_first("SCRAM-SHA-256", data);
    let _ = s.client_final(data);
    let mut s = ScramServer::new(secret()).expect("a SCRAM secret");
    if let Ok(server_first) = s.client_first("SCRAM-SHA-256", b"n,,n=,r=fuzzclientnonce") {
        let nonce = attr(&server_first, "r").expect("server-first has a nonce");
        let mut fin = format!("c=biws,r={nonce}").into_bytes();
        fin.extend_from_slice(data);
        let _ = s.client_final(&fin);
    }
    // Client role (keys, not a password: an iteration count from the input must not make
    // each run derive a key for minutes).
    let mut c = ScramClient::with_keys([7; 32], [9; 32]);
    c.client_first();
    let _ = c.server_first(data);
    let mut c = ScramClient::with_keys([7; 32], [9; 32]);
    let first = c.client_first();
    let nonce = attr(&first, "r")
        .expect("client-first has a nonce")
        .to_string();
    let mut server_first = format!("r={nonce}").into_bytes();
    server_first.extend_from_slice(data);
    if c.server_first(&server_first).is_ok() {
        let _ = c.server_final(data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Secret::try_parse(text);
    }
}

/// The TOML configuration parser and validator.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pooler::config::Config::parse_str(text, None);
    }
}

const FRONTEND_TAGS: &[u8] = b"QPBDESHFdcfXpz\0";
const BACKEND_TAGS: &[u8] = b"123CDEGHIKNRSTZcdnstv";

/// What a client session does with a client's bytes (framing, the login messages it
/// decodes, the record of what each server owes), then the same bytes read as the server's
/// replies, then the tracker driven by the bytes as a sequence of operations.
pub fn client_stream(data: &[u8]) {
    let mut t = Tracker::new();
    let mut rest = data;
    while let Ok(Some((h, body))) = frame::whole(rest, 4096) {
        match h.tag {
            b'p' => {
                let _ = frontend::password(body);
                let _ = frontend::sasl_initial_response(body);
            }
            b'Q' => {
                let _ = frontend::query(body);
            }
            _ => {}
        }
        if frontend::is_session_message(h.tag) {
            t.client_message(h.tag, body.first().copied().unwrap_or(0));
        }
        rest = &rest[h.total()..];
    }
    let mut rest = data;
    while let Ok(Some((h, body))) = frame::whole(rest, 1 << 20) {
        match h.tag {
            b'Z' => {
                t.ready_for_query(body.first().copied().unwrap_or(b'I'));
            }
            b'E' => {
                let _ = frame::error_fields(body);
                let _ = t.error();
            }
            tag => {
                let _ = t.reply(tag);
            }
        }
        let _ = t.take_fake();
        check(&t);
        rest = &rest[h.total()..];
    }
    let mut t = Tracker::new();
    for pair in data.chunks(2) {
        let arg = pair.get(1).copied().unwrap_or(0);
        let pick = |set: &[u8]| set[arg as usize % set.len()];
        match pair[0] % 12 {
            0 => t.client_message(pick(FRONTEND_TAGS), pick(b"SP")),
            1 => {
                let _ = t.reply(pick(BACKEND_TAGS));
            }
            2 => {
                let _ = t.error();
            }
            3 => {
                let _ = t.ready_for_query(pick(b"ITE"));
            }
            4 => t.internal_query(internal(arg)),
            5 => t.push_fake(vec![b'1', 0, 0, 0, 4]),
            6 => {
                let _ = t.take_fake();
            }
            7 => t.swallow_front_ready(),
            8 => t.start_recording(),
            9 => {
                let _ = t.take_recording();
            }
            10 => t.push(slot(arg)),
            _ => {
                let _ = t.current();
            }
        }
        check(&t);
    }
}

fn internal(arg: u8) -> Internal {
    match arg % 5 {
        0 => Internal::SetParams,
        1 => Internal::Reset,
        2 => Internal::Rollback,
        3 => Internal::Check,
        _ => Internal::Prepare,
    }
}

fn slot(arg: u8) -> Slot {
    let req = [
        Request::Query,
        Request::Sync,
        Request::Parse,
        Request::Bind,
        Request::DescribeStatement,
        Request::DescribePortal,
        Request::Execute,
        Request::Close,
    ][arg as usize % 8];
    let owner = if arg & 0x10 == 0 {
        Owner::Client
    } else {
        Owner::Internal(internal(arg >> 5))
    };
    let mut s = Slot::new(req, owner);
    s.extra = match arg >> 6 {
        0 => None,
        1 => Some(Box::new(Extra::ReplayStart)),
        2 => Some(Box::new(Extra::Replace(vec![b'E', 0, 0, 0, 5, 0]))),
        _ => Some(Box::new(Extra::Undo(ParseUndo {
            server_name: "s".into(),
            client_name: Some("c".into()),
        }))),
    };
    s
}

/// What the session relies on whatever happened.
fn check(t: &Tracker) {
    if t.releasable() {
        assert!(t.is_idle() && t.status() == b'I');
    }
    if t.is_idle() {
        assert!(!t.awaiting_replies() && !t.has_internal());
    }
}
