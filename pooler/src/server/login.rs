//! Opening a server connection: connect, StartupMessage, answer PostgreSQL's
//! authentication request, collect ParameterStatus and BackendKeyData until ReadyForQuery.

use bytes::BytesMut;
use postgres_protocol::message::{backend::Message, frontend};

use super::{ServerError, Target};
use crate::{
    auth::{ScramClient, md5_response, md5_secret},
    net::{self, Conn},
    pool::ServerInfo,
    proto::frame,
};

/// What we can prove to PostgreSQL for the server login user.
#[derive(Clone)]
pub enum Credentials {
    None,
    Password(String),
    /// md5(password || user) from an md5 auth-file secret: enough for md5 auth only.
    Md5([u8; 16]),
    /// ClientKey/ServerKey recovered from a client's SCRAM login (pass-through).
    ScramKeys([u8; 32], [u8; 32]),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "Credentials::None",
            Credentials::Password(_) => "Credentials::Password(..)",
            Credentials::Md5(_) => "Credentials::Md5(..)",
            Credentials::ScramKeys(..) => "Credentials::ScramKeys(..)",
        })
    }
}

/// Largest message PostgreSQL sends during login that we accept.
const MAX_LOGIN_MESSAGE: u32 = 1 << 20;

async fn next_message(conn: &mut Conn) -> Result<Message, ServerError> {
    loop {
        // Check the length before postgres-protocol sizes anything from it.
        frame::header(&conn.rbuf, MAX_LOGIN_MESSAGE)
            .map_err(|e| ServerError::Protocol(e.to_string()))?;
        if let Some(m) =
            Message::parse(&mut conn.rbuf).map_err(|e| ServerError::Protocol(e.to_string()))?
        {
            return Ok(m);
        }
        if conn.recv().await? == 0 {
            return Err(ServerError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection during login",
            )));
        }
    }
}

fn error_fields(body: &postgres_protocol::message::backend::ErrorResponseBody) -> ServerError {
    use fallible_iterator::FallibleIterator;
    let mut f = frame::ErrorFields::default();
    let mut it = body.fields();
    while let Ok(Some(field)) = it.next() {
        let v = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => f.severity = v,
            b'S' if f.severity.is_empty() => f.severity = v,
            b'C' => f.code = v,
            b'M' => f.message = v,
            b'D' => f.detail = Some(v),
            _ => {}
        }
    }
    ServerError::Server(f)
}

fn sasl_mechanisms(
    body: &postgres_protocol::message::backend::AuthenticationSaslBody,
) -> Vec<String> {
    use fallible_iterator::FallibleIterator;
    let mut out = Vec::new();
    let mut it = body.mechanisms();
    while let Ok(Some(m)) = it.next() {
        out.push(m.to_string());
    }
    out
}

/// Connects to `target` and logs in as `target.user`.
pub async fn open(
    target: &Target,
    creds: &Credentials,
    read_size: usize,
) -> Result<(Conn, ServerInfo), ServerError> {
    let timeout = target.connect_timeout;
    let fut = open_inner(target, creds, read_size);
    if timeout.is_zero() {
        return fut.await;
    }
    match compio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ServerError::Timeout(timeout.as_secs_f64())),
    }
}

async fn open_inner(
    target: &Target,
    creds: &Credentials,
    read_size: usize,
) -> Result<(Conn, ServerInfo), ServerError> {
    let socket = net::connect(&target.addr)
        .await
        .map_err(ServerError::Connect)?;
    let mut conn = Conn::new(socket, read_size);
    let mut params: Vec<(&str, &str)> = vec![("user", &target.user), ("database", &target.dbname)];
    for (k, v) in &target.startup_params {
        params.push((k, v));
    }
    let mut buf = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut buf)
        .map_err(|e| ServerError::Pooler(format!("cannot build startup message: {e}")))?;
    conn.wbuf.extend_from_slice(&buf);
    conn.flush().await?;

    let local = conn
        .socket()
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or_else(|| "unix".to_string(), |a| a.to_string());
    let mut info = ServerInfo::new(local);
    info.shared.cookie.store(
        crate::net::socket_cookie(conn.socket()),
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut scram: Option<ScramClient> = None;
    loop {
        let mut out = BytesMut::new();
        match next_message(&mut conn).await? {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => match creds {
                Credentials::Password(p) => frontend::password_message(p.as_bytes(), &mut out)
                    .map_err(|e| ServerError::Pooler(e.to_string()))?,
                _ => return Err(no_password(target, "cleartext")),
            },
            Message::AuthenticationMd5Password(body) => {
                let secret = match creds {
                    Credentials::Password(p) => md5_secret(&target.user, p),
                    Credentials::Md5(s) => *s,
                    _ => return Err(no_password(target, "md5")),
                };
                let resp = md5_response(&secret, body.salt());
                frontend::password_message(resp.as_bytes(), &mut out)
                    .map_err(|e| ServerError::Pooler(e.to_string()))?;
            }
            Message::AuthenticationSasl(body) => {
                let mechs = sasl_mechanisms(&body);
                if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(ServerError::Auth(format!(
                        "server offers SASL mechanisms {mechs:?}; only SCRAM-SHA-256 is supported"
                    )));
                }
                let mut client = match creds {
                    Credentials::Password(p) => ScramClient::with_password(p),
                    Credentials::ScramKeys(ck, sk) => ScramClient::with_keys(*ck, *sk),
                    _ => return Err(no_password(target, "scram-sha-256")),
                };
                let first = client.client_first();
                frontend::sasl_initial_response("SCRAM-SHA-256", &first, &mut out)
                    .map_err(|e| ServerError::Pooler(e.to_string()))?;
                scram = Some(client);
            }
            Message::AuthenticationSaslContinue(body) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| ServerError::Protocol("unexpected SASLContinue".into()))?;
                let fin = client
                    .server_first(body.data())
                    .map_err(|e| ServerError::Auth(format!("SCRAM with server: {e}")))?;
                frontend::sasl_response(&fin, &mut out)
                    .map_err(|e| ServerError::Pooler(e.to_string()))?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| ServerError::Protocol("unexpected SASLFinal".into()))?;
                client
                    .server_final(body.data())
                    .map_err(|e| ServerError::Auth(format!("SCRAM with server: {e}")))?;
            }
            Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGss
            | Message::AuthenticationSspi
            | Message::AuthenticationGssContinue(_) => {
                return Err(ServerError::Auth(
                    "server asks for an authentication method the pooler does not support".into(),
                ));
            }
            Message::ParameterStatus(body) => {
                let name = body
                    .name()
                    .map_err(|e| ServerError::Protocol(e.to_string()))?;
                let value = body
                    .value()
                    .map_err(|e| ServerError::Protocol(e.to_string()))?;
                info.set_param(name, value);
            }
            Message::BackendKeyData(body) => {
                info.pid = body.process_id();
                info.secret = body.secret_key();
                info.shared
                    .pid
                    .store(info.pid as u32 as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Message::ErrorResponse(body) => return Err(error_fields(&body)),
            Message::NoticeResponse(_) => {}
            Message::ReadyForQuery(_) => {
                if !conn.rbuf.is_empty() {
                    return Err(ServerError::Protocol(
                        "data after ReadyForQuery at login".into(),
                    ));
                }
                return Ok((conn, info));
            }
            _ => {
                return Err(ServerError::Protocol(
                    "unexpected message during login".into(),
                ));
            }
        }
        if !out.is_empty() {
            conn.wbuf.extend_from_slice(&out);
            conn.flush().await?;
        }
    }
}

fn no_password(target: &Target, method: &str) -> ServerError {
    ServerError::Auth(format!(
        "server asks for {method} authentication of user \"{}\" but no usable password is configured (set password in the database entry or a plain/md5/SCRAM secret in auth_file)",
        target.user
    ))
}
