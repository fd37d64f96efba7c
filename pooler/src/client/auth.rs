//! Authenticating a client against the auth file: trust, cleartext, md5 and
//! SCRAM-SHA-256 (md5 switches to SCRAM for users whose secret is a SCRAM secret, as in
//! PgBouncer). Unknown users go through the same exchange as known ones and get the same
//! error, so user names cannot be probed.

use bytes::{Buf, BytesMut};

use crate::{
    auth::{AuthFile, ScramError, ScramServer, Secret, verify_md5, verify_plain},
    config::AuthType,
    net::Conn,
    proto::{backend, frame, frontend, sqlstate},
};

use super::Fatal;

/// Largest authentication message a client may send.
const MAX_AUTH_MESSAGE: u32 = 16 * 1024;

/// What a successful login leaves behind.
#[derive(Default)]
pub struct AuthOutcome {
    /// ClientKey and ServerKey from a SCRAM login against a SCRAM secret: lets the pooler
    /// log in to PostgreSQL as this user without knowing the password.
    pub scram_keys: Option<([u8; 32], [u8; 32])>,
}

fn failed(user: &str) -> Fatal {
    Fatal::new(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

/// Reads the next PasswordMessage/SASL response body; None if the client left.
async fn read_response(conn: &mut Conn) -> Result<Option<Vec<u8>>, Fatal> {
    loop {
        // The tag decides before the body is awaited: a client that sends something else
        // (a second StartupMessage, say) is refused now, not waited on.
        if let Some(&tag) = conn.rbuf.first()
            && tag != frontend::tag::TERMINATE
            && tag != frontend::tag::PASSWORD
        {
            return Err(Fatal::new(
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "expected password response, got message type {:?}",
                    tag as char
                ),
            ));
        }
        match frame::whole(&conn.rbuf, MAX_AUTH_MESSAGE) {
            Err(e) => return Err(Fatal::new(sqlstate::PROTOCOL_VIOLATION, e.to_string())),
            Ok(Some((h, body))) => {
                if h.tag == frontend::tag::TERMINATE {
                    return Ok(None);
                }
                if h.tag != frontend::tag::PASSWORD {
                    return Err(Fatal::new(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!(
                            "expected password response, got message type {:?}",
                            h.tag as char
                        ),
                    ));
                }
                let body = body.to_vec();
                let total = h.total();
                conn.rbuf.advance(total);
                return Ok(Some(body));
            }
            Ok(None) => match conn.recv().await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
        }
    }
}

async fn send(conn: &mut Conn, f: impl FnOnce(&mut BytesMut)) -> Result<(), Fatal> {
    f(&mut conn.wbuf);
    conn.flush()
        .await
        .map_err(|e| Fatal::new(sqlstate::CONNECTION_FAILURE, e.to_string()).quiet())
}

/// Runs the exchange `auth_type` calls for. Err carries the FATAL to send; a client that
/// leaves mid-exchange is an Err marked quiet.
pub async fn authenticate(
    conn: &mut Conn,
    auth_type: AuthType,
    auth_file: Option<&AuthFile>,
    user: &str,
) -> Result<AuthOutcome, Fatal> {
    let secret = auth_file.and_then(|f| f.get(user));
    match auth_type {
        AuthType::Trust => {
            if auth_file.is_some() && secret.is_none() {
                return Err(Fatal::new(
                    sqlstate::INVALID_AUTHORIZATION,
                    format!("no such user: {user}"),
                ));
            }
            Ok(AuthOutcome::default())
        }
        AuthType::Plain => {
            send(conn, backend::authentication_cleartext).await?;
            let body = read_response(conn).await?.ok_or_else(Fatal::gone)?;
            let pw = frontend::password(&body)
                .map_err(|e| Fatal::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
            match secret {
                Some(s) if verify_plain(s, user, pw) => Ok(AuthOutcome::default()),
                _ => Err(failed(user)),
            }
        }
        AuthType::Md5 => match secret {
            Some(s @ Secret::Scram(_)) => scram(conn, Some(s), user).await,
            _ => {
                let salt: [u8; 4] = rand::random();
                send(conn, |b| backend::authentication_md5(b, salt)).await?;
                let body = read_response(conn).await?.ok_or_else(Fatal::gone)?;
                match secret {
                    Some(s) if verify_md5(s, user, salt, &body) => Ok(AuthOutcome::default()),
                    _ => Err(failed(user)),
                }
            }
        },
        AuthType::ScramSha256 => scram(conn, secret, user).await,
    }
}

async fn scram(conn: &mut Conn, secret: Option<&Secret>, user: &str) -> Result<AuthOutcome, Fatal> {
    // An md5 secret cannot do SCRAM; it gets the mock exchange and the usual error.
    let mut server = match secret.and_then(ScramServer::new) {
        Some(s) => s,
        None => ScramServer::mock(user),
    };
    let scram_err = |e: ScramError| match e {
        ScramError::BadProof => failed(user),
        other => Fatal::new(sqlstate::PROTOCOL_VIOLATION, other.to_string()),
    };
    send(conn, |b| {
        backend::authentication_sasl(b, ScramServer::mechanisms())
    })
    .await?;
    let body = read_response(conn).await?.ok_or_else(Fatal::gone)?;
    let (mech, data) = frontend::sasl_initial_response(&body)
        .map_err(|e| Fatal::new(sqlstate::PROTOCOL_VIOLATION, e.to_string()))?;
    let first = server.client_first(mech, data).map_err(scram_err)?;
    send(conn, |b| backend::authentication_sasl_continue(b, &first)).await?;
    let body = read_response(conn).await?.ok_or_else(Fatal::gone)?;
    let fin = server.client_final(&body).map_err(scram_err)?;
    send(conn, |b| backend::authentication_sasl_final(b, &fin)).await?;
    let keys = match (secret, server.client_key()) {
        (Some(Secret::Scram(s)), Some(ck)) => Some((ck, s.server_key)),
        _ => None,
    };
    Ok(AuthOutcome { scram_keys: keys })
}
