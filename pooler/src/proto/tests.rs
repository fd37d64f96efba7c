//! Codec tests on bytes, with no sockets.

use bytes::{BufMut, BytesMut};

use super::ProtoError;
use super::backend::{self, Severity};
use super::frame::{self, Header};
use super::frontend::{self, tag};
use super::startup::{self, Startup};
use super::tracker::{Extra, Internal, Owner, ParseUndo, Request, Slot, Tracker};

fn startup_packet(code: i32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(8 + body.len() as i32);
    b.put_i32(code);
    b.put_slice(body);
    b
}

#[test]
fn startup_message_params() {
    let mut b = startup_packet(196608, b"user\0alice\0database\0app\0_pq_.foo\0x\0\0");
    let s = startup::decode_startup(&mut b).unwrap().unwrap();
    assert_eq!(
        s,
        Startup::Startup {
            minor: 0,
            params: vec![
                ("user".into(), "alice".into()),
                ("database".into(), "app".into())
            ],
            protocol_options: vec!["_pq_.foo".into()],
        }
    );
    assert!(b.is_empty());
}

#[test]
fn startup_needs_more_bytes() {
    let full = startup_packet(196608, b"user\0a\0\0");
    for cut in 0..full.len() {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(startup::decode_startup(&mut part), Ok(None), "cut at {cut}");
    }
}

#[test]
fn startup_rejects_bad_lengths() {
    for len in [0i32, 3, 4, 7, 10_001, i32::MAX, -1, i32::MIN] {
        let mut b = BytesMut::new();
        b.put_i32(len);
        b.put_i32(196608);
        assert!(
            matches!(
                startup::decode_startup(&mut b),
                Err(ProtoError::BadStartupLength(_))
            ),
            "len {len}"
        );
    }
}

#[test]
fn startup_special_requests() {
    let mut b = startup_packet(startup::SSL_REQUEST_CODE, b"");
    assert_eq!(
        startup::decode_startup(&mut b),
        Ok(Some(Startup::SslRequest))
    );
    let mut b = startup_packet(startup::GSSENC_REQUEST_CODE, b"");
    assert_eq!(
        startup::decode_startup(&mut b),
        Ok(Some(Startup::GssEncRequest))
    );
    let mut body = Vec::new();
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&(-9i32).to_be_bytes());
    let mut b = startup_packet(startup::CANCEL_REQUEST_CODE, &body);
    assert_eq!(
        startup::decode_startup(&mut b),
        Ok(Some(Startup::Cancel { pid: 7, secret: -9 }))
    );
    let mut b = startup_packet(startup::CANCEL_REQUEST_CODE, b"abc");
    assert!(startup::decode_startup(&mut b).is_err());
}

#[test]
fn startup_rejects_malformed_params() {
    for body in [
        &b"user\0alice"[..],
        b"user\0alice\0",
        b"user\0",
        b"user\0a\0\0junk",
        b"user\0a\0user\0b\0\0",
    ] {
        let mut b = startup_packet(196608, body);
        assert!(startup::decode_startup(&mut b).is_err(), "{body:?}");
    }
    let mut b = startup_packet(2 << 16, b"\0");
    assert!(matches!(
        startup::decode_startup(&mut b),
        Err(ProtoError::UnsupportedProtocol { major: 2, .. })
    ));
}

#[test]
fn options_parsing() {
    assert_eq!(
        startup::parse_options("-c search_path=a,b --statement-timeout=5 -cwork_mem=4MB").unwrap(),
        vec![
            ("search_path".into(), "a,b".into()),
            ("statement_timeout".into(), "5".into()),
            ("work_mem".into(), "4MB".into())
        ]
    );
    assert_eq!(
        startup::parse_options(r"-c application_name=a\ b").unwrap(),
        vec![("application_name".into(), "a b".into())]
    );
    assert!(startup::parse_options("-c=").is_err());
    assert!(startup::parse_options("-c").is_err());
    assert!(startup::parse_options("-x foo").is_err());
    assert!(startup::parse_options("-c =x").is_err());
    assert_eq!(startup::parse_options("  ").unwrap(), vec![]);
}

#[test]
fn header_validation() {
    assert_eq!(frame::header(b"Q\0\0", 100), Ok(None));
    assert_eq!(
        frame::header(b"Q\0\0\0\x04", 100),
        Ok(Some(Header { tag: b'Q', len: 0 }))
    );
    for len in [0i32, 3, -1, i32::MIN] {
        let mut b = vec![b'Q'];
        b.extend_from_slice(&len.to_be_bytes());
        assert!(matches!(
            frame::header(&b, 1 << 20),
            Err(ProtoError::BadLength { .. })
        ));
    }
    let mut b = vec![b'Q'];
    b.extend_from_slice(&((1u32 << 31) - 1).to_be_bytes());
    assert!(matches!(
        frame::header(&b, 1 << 20),
        Err(ProtoError::TooLong { .. })
    ));
    // 2^31 + 1 read as i32 is negative.
    let mut b = vec![b'Q'];
    b.extend_from_slice(&((1u32 << 31) + 1).to_be_bytes());
    assert!(frame::header(&b, u32::MAX).is_err());
}

#[test]
fn whole_message() {
    let mut b = BytesMut::new();
    backend::parameter_status(&mut b, "TimeZone", "UTC");
    let (h, body) = frame::whole(&b, 1000).unwrap().unwrap();
    assert_eq!(h.tag, b'S');
    assert_eq!(h.total(), b.len());
    assert_eq!(
        frame::parameter_status(body).unwrap(),
        ("TimeZone".into(), "UTC".into())
    );
    assert_eq!(frame::whole(&b[..b.len() - 1], 1000), Ok(None));
}

#[test]
fn error_response_round_trip() {
    let mut b = BytesMut::new();
    backend::error_response(
        &mut b,
        Severity::Fatal,
        "53300",
        "no more connections allowed",
        Some("d"),
    );
    let (h, body) = frame::whole(&b, 1000).unwrap().unwrap();
    assert_eq!(h.tag, b'E');
    let f = frame::error_fields(body);
    assert_eq!(f.code, "53300");
    assert_eq!(f.severity, "FATAL");
    assert_eq!(f.message, "no more connections allowed");
    assert_eq!(f.detail.as_deref(), Some("d"));
    // Without SQLSTATE, truncated: still parses leniently.
    let f = frame::error_fields(b"SERROR\0Mboom\0");
    assert_eq!(f.code, "");
    assert_eq!(f.message, "boom");
    let f = frame::error_fields(b"SERR");
    assert_eq!(f.message, "");
}

#[test]
fn error_response_strips_nul() {
    let mut b = BytesMut::new();
    backend::error_response(&mut b, Severity::Error, "XX000", "a\0b", None);
    let (_, body) = frame::whole(&b, 1000).unwrap().unwrap();
    assert_eq!(frame::error_fields(body).message, "ab");
}

#[test]
fn sasl_initial_response_parsing() {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&3i32.to_be_bytes());
    body.extend_from_slice(b"abc");
    assert_eq!(
        frontend::sasl_initial_response(&body).unwrap(),
        ("SCRAM-SHA-256", &b"abc"[..])
    );
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(-1i32).to_be_bytes());
    assert!(frontend::sasl_initial_response(&body).is_err());
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
    body.extend_from_slice(b"abc");
    assert!(frontend::sasl_initial_response(&body).is_err());
    assert!(frontend::sasl_initial_response(b"SCRAM").is_err());
    assert!(frontend::sasl_initial_response(b"").is_err());
}

#[test]
fn password_parsing() {
    assert_eq!(frontend::password(b"secret\0").unwrap(), b"secret");
    assert!(frontend::password(b"secret").is_err());
    assert!(frontend::password(b"a\0b\0").is_err());
}

#[test]
fn tracker_simple_query() {
    let mut t = Tracker::new();
    assert!(t.releasable());
    t.client_message(tag::QUERY, 0);
    assert!(!t.is_idle());
    assert_eq!(t.current(), Owner::Client);
    // Rows and CommandComplete do not end a simple query; ReadyForQuery does.
    assert_eq!(t.reply(b'T'), (Owner::Client, None));
    assert_eq!(t.reply(b'C'), (Owner::Client, None));
    assert_eq!(t.ready_for_query(b'T'), Owner::Client);
    assert!(t.is_idle());
    assert!(!t.releasable(), "inside a transaction");
    t.client_message(tag::QUERY, 0);
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn tracker_pipeline_needs_every_sync() {
    let mut t = Tracker::new();
    for m in [
        tag::PARSE,
        tag::BIND,
        tag::EXECUTE,
        tag::SYNC,
        tag::BIND,
        tag::EXECUTE,
        tag::SYNC,
    ] {
        t.client_message(m, 0);
    }
    for r in [b'1', b'2', b'D', b'C'] {
        t.reply(r);
    }
    t.ready_for_query(b'I');
    assert!(!t.releasable(), "second Sync still owed");
    for r in [b'2', b'C'] {
        assert!(t.reply(r).1.is_some());
    }
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn tracker_describe_and_execute_complete_on_their_last_reply() {
    let mut t = Tracker::new();
    t.client_message(tag::DESCRIBE, b'S');
    t.client_message(tag::DESCRIBE, b'P');
    t.client_message(tag::EXECUTE, 0);
    assert!(
        t.reply(b't').1.is_none(),
        "ParameterDescription comes first"
    );
    assert_eq!(
        t.reply(b'T').1.map(|s| s.req),
        Some(Request::DescribeStatement)
    );
    assert_eq!(
        t.reply(b'n').1.map(|s| s.req),
        Some(Request::DescribePortal)
    );
    assert!(t.reply(b'D').1.is_none());
    assert!(
        t.reply(b'N').1.is_none(),
        "a notice in between changes nothing"
    );
    assert_eq!(t.reply(b's').1.map(|s| s.req), Some(Request::Execute));
    assert!(!t.awaiting_replies());
    assert!(!t.is_idle(), "no Sync yet");
}

#[test]
fn tracker_error_skips_to_sync_and_undoes_parses() {
    let mut t = Tracker::new();
    let undo = |n: &str| {
        Some(Box::new(Extra::Undo(ParseUndo {
            server_name: n.into(),
            client_name: None,
        })))
    };
    t.push(Slot {
        req: Request::Parse,
        owner: Owner::Client,
        extra: undo("a"),
    });
    t.client_message(tag::BIND, 0);
    t.client_message(tag::EXECUTE, 0);
    t.push(Slot {
        req: Request::Parse,
        owner: Owner::Client,
        extra: undo("b"),
    });
    t.push_fake(b"fake".to_vec());
    t.client_message(tag::SYNC, 0);
    t.client_message(tag::QUERY, 0);
    assert!(t.reply(b'1').1.is_some());
    assert!(t.reply(b'2').1.is_some());
    let (owner, out) = t.error();
    assert_eq!(owner, Owner::Client);
    assert_eq!(
        out.undo,
        vec![ParseUndo {
            server_name: "b".into(),
            client_name: None
        }],
        "the skipped Parse is undone; the completed one is not"
    );
    assert!(t.take_fake().is_none(), "the skipped fake is gone");
    assert_eq!(t.ready_for_query(b'I'), Owner::Client);
    assert!(
        t.awaiting_replies(),
        "the simple query after the Sync still runs"
    );
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn tracker_error_before_sync_skips_what_follows() {
    let mut t = Tracker::new();
    t.client_message(tag::PARSE, 0);
    t.client_message(tag::FLUSH, 0);
    let (_, out) = t.error();
    assert!(out.undo.is_empty());
    assert!(t.error_skip());
    // Messages until Sync are discarded by the server: no slot for them.
    t.client_message(tag::BIND, 0);
    t.client_message(tag::EXECUTE, 0);
    t.push_fake(b"x".to_vec());
    assert!(!t.awaiting_replies());
    t.client_message(tag::SYNC, 0);
    assert!(!t.error_skip());
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn tracker_error_in_simple_query_waits_for_ready() {
    let mut t = Tracker::new();
    t.client_message(tag::QUERY, 0);
    assert_eq!(t.error().0, Owner::Client);
    assert!(t.awaiting_replies());
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn tracker_fakes_wait_for_their_turn() {
    let mut t = Tracker::new();
    t.push_fake(b"first".to_vec());
    assert_eq!(t.take_fake(), Some(b"first".to_vec()), "nothing before it");
    t.client_message(tag::BIND, 0);
    t.push_fake(b"second".to_vec());
    assert_eq!(t.take_fake(), None, "after the BindComplete");
    assert_eq!(t.current(), Owner::Client);
    t.reply(b'2');
    assert_eq!(t.take_fake(), Some(b"second".to_vec()));
}

#[test]
fn tracker_unsynced_extended_keeps_server() {
    let mut t = Tracker::new();
    t.client_message(tag::PARSE, 0);
    t.client_message(tag::FLUSH, 0);
    t.reply(b'1');
    assert!(!t.awaiting_replies());
    assert!(!t.is_idle());
    t.client_message(tag::SYNC, 0);
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn tracker_internal_requests_come_first() {
    let mut t = Tracker::new();
    t.internal_query(Internal::SetParams);
    t.client_message(tag::QUERY, 0);
    assert_eq!(t.current(), Owner::Internal(Internal::SetParams));
    assert!(t.has_internal());
    assert_eq!(
        t.ready_for_query(b'I'),
        Owner::Internal(Internal::SetParams)
    );
    assert_eq!(t.current(), Owner::Client);
    assert!(!t.has_internal());
    assert_eq!(t.ready_for_query(b'I'), Owner::Client);
    assert!(t.releasable());
}

#[test]
fn tracker_copy_and_terminate_do_not_open_slots() {
    let mut t = Tracker::new();
    t.client_message(tag::QUERY, 0);
    t.client_message(tag::COPY_DATA, 0);
    t.client_message(tag::COPY_DONE, 0);
    t.ready_for_query(b'I');
    assert!(t.releasable());
}

#[test]
fn writers_produce_valid_frames() {
    let mut b = BytesMut::new();
    backend::authentication_ok(&mut b);
    backend::authentication_md5(&mut b, [1, 2, 3, 4]);
    backend::authentication_sasl(&mut b, b"SCRAM-SHA-256\0\0");
    backend::backend_key_data(&mut b, 1, 2);
    backend::ready_for_query(&mut b, b'I');
    backend::negotiate_protocol_version(&mut b, backend::PROTOCOL_3_0, &["_pq_.x".into()]);
    backend::command_complete(&mut b, "SHOW");
    backend::row_description(
        &mut b,
        &[backend::Column {
            name: "a",
            type_oid: backend::TEXT_OID,
        }],
    );
    backend::data_row(&mut b, &[Some(b"x"), None]);
    let mut rest = &b[..];
    let mut tags = Vec::new();
    while !rest.is_empty() {
        let (h, _) = frame::whole(rest, 1 << 20).unwrap().unwrap();
        tags.push(h.tag);
        rest = &rest[h.total()..];
    }
    assert_eq!(tags, b"RRRKZvCTD");
    // NegotiateProtocolVersion carries the version as PostgreSQL encodes it: 3.0 = 0x30000.
    let v = b.iter().position(|&t| t == b'v').unwrap();
    assert_eq!(&b[v + 5..v + 9], &[0, 3, 0, 0]);
}
