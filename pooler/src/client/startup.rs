//! The startup phase of a client connection: SSL/GSS negotiation ('N'), cancel requests,
//! and the StartupMessage with its parameters checked against what the pooler supports.

use crate::{
    config::General,
    net::Conn,
    proto::{
        sqlstate,
        startup::{self, Startup},
    },
};

use super::Fatal;

/// Parameters PgBouncer tracks per client, by the names the server reports them under.
pub const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// What the client asked for.
pub enum Request {
    Login(LoginRequest),
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// The peer went away (or sent nothing) before a StartupMessage.
    Gone,
}

#[derive(Debug)]
pub struct LoginRequest {
    pub user: String,
    pub database: String,
    /// Tracked parameters the client set at startup (canonical names).
    pub params: Vec<(String, String)>,
    /// Minor protocol version asked for, and `_pq_.` options: answered with
    /// NegotiateProtocolVersion when either is not plain 3.0.
    pub minor: u16,
    pub protocol_options: Vec<String>,
}

/// The canonical (server-reported) spelling of a tracked parameter, if it is one.
pub fn tracked_name(cfg: &General, name: &str) -> Option<String> {
    TRACKED
        .iter()
        .copied()
        .chain(cfg.track_extra_parameters.iter().map(String::as_str))
        .find(|t| t.eq_ignore_ascii_case(name))
        .map(str::to_string)
}

fn ignored(cfg: &General, name: &str) -> bool {
    cfg.ignore_startup_parameters
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

fn protocol(msg: impl Into<String>) -> Fatal {
    Fatal::new(sqlstate::PROTOCOL_VIOLATION, msg)
}

/// Reads packets until a StartupMessage or a CancelRequest arrives.
pub async fn read_request(conn: &mut Conn, cfg: &General) -> Result<Request, Fatal> {
    let mut ssl_answered = false;
    let mut gss_answered = false;
    loop {
        let packet = startup::decode_startup_limited(&mut conn.rbuf, cfg.max_packet_size as usize)
            .map_err(|e| protocol(e.to_string()))?;
        let Some(packet) = packet else {
            match conn.recv().await {
                Ok(0) | Err(_) => return Ok(Request::Gone),
                Ok(_) => continue,
            }
        };
        match packet {
            Startup::SslRequest | Startup::GssEncRequest => {
                let is_ssl = matches!(packet, Startup::SslRequest);
                let seen = if is_ssl {
                    &mut ssl_answered
                } else {
                    &mut gss_answered
                };
                if *seen {
                    return Err(protocol("duplicate SSL/GSS negotiation request"));
                }
                *seen = true;
                // Bytes sent before our answer would be read as if they came after the
                // negotiation (the shape of CVE-2021-3935): refuse them as PostgreSQL does.
                if !conn.rbuf.is_empty() {
                    return Err(protocol(if is_ssl {
                        "received unencrypted data after SSL request"
                    } else {
                        "received unencrypted data after GSSAPI encryption request"
                    }));
                }
                conn.wbuf.extend_from_slice(b"N");
                if conn.flush().await.is_err() {
                    return Ok(Request::Gone);
                }
            }
            Startup::Cancel { pid, secret } => return Ok(Request::Cancel { pid, secret }),
            Startup::Startup {
                minor,
                params,
                protocol_options,
            } => return login_request(cfg, minor, params, protocol_options).map(Request::Login),
        }
    }
}

fn login_request(
    cfg: &General,
    minor: u16,
    raw: Vec<(String, String)>,
    protocol_options: Vec<String>,
) -> Result<LoginRequest, Fatal> {
    let mut user = None;
    let mut database = None;
    let mut params: Vec<(String, String)> = Vec::new();
    let set = |name: String, value: String, params: &mut Vec<(String, String)>| {
        params.retain(|(n, _)| *n != name);
        params.push((name, value));
    };
    for (name, value) in raw {
        match name.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "replication" => {
                if !matches!(
                    value.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ) {
                    return Err(Fatal::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "replication connections are not supported by the pooler",
                    ));
                }
            }
            "options" => {
                if ignored(cfg, "options") {
                    continue;
                }
                let settings = startup::parse_options(&value)
                    .map_err(|e| protocol(format!("unsupported options startup parameter: {e}")))?;
                for (n, v) in settings {
                    match tracked_name(cfg, &n) {
                        Some(canon) => set(canon, v, &mut params),
                        None if ignored(cfg, &n) => {}
                        None => {
                            return Err(protocol(format!(
                                "unsupported options startup parameter: parameter {n} cannot be set through the pooler (only tracked parameters can; see track_extra_parameters)"
                            )));
                        }
                    }
                }
            }
            _ => match tracked_name(cfg, &name) {
                Some(canon) => set(canon, value, &mut params),
                None if ignored(cfg, &name) => {}
                None => {
                    return Err(protocol(format!("unsupported startup parameter: {name}")));
                }
            },
        }
    }
    let user = match user {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(Fatal::new(
                sqlstate::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            ));
        }
    };
    let database = match database {
        Some(d) if !d.is_empty() => d,
        _ => user.clone(),
    };
    Ok(LoginRequest {
        user,
        database,
        params,
        minor,
        protocol_options,
    })
}
