//! From StartupMessage to ReadyForQuery: authenticate, find the pool, learn the server's
//! parameters, greet the client the way PostgreSQL would.

use std::{future::poll_fn, sync::Arc};

use crate::{
    app::App,
    client::registry::{Admission, ClientInfo},
    config::Config,
    net::Conn,
    pool::{Acquire, Grant, Pool, PoolKey, PoolSettings},
    proto::{backend, sqlstate},
    server::{self, Credentials, ServerConn, Target},
};

use super::{
    Fatal, auth, cancel,
    params::ClientParams,
    registry::ClientShared,
    startup::{self, Request},
};

/// A logged-in client, ready for its session.
pub struct LoggedIn {
    pub shared: Arc<ClientShared>,
    pub pool: Arc<Pool>,
    pub params: ClientParams,
    pub creds: Credentials,
    /// Counts the client against max_client_conn for as long as it is held.
    pub admission: Admission,
}

/// A client logged in to the admin console (database `pgbouncer` or `pooler`).
pub struct AdminLogin {
    pub shared: Arc<ClientShared>,
    pub role: crate::admin::Role,
    pub admission: Admission,
}

pub enum Login {
    Session(LoggedIn),
    Admin(AdminLogin),
}

/// Names of the admin console's virtual database.
pub fn is_admin_db(name: &str) -> bool {
    name == "pgbouncer" || name == "pooler"
}

fn client_info(conn: &Conn, peer: &str, user: &str, database: &str) -> ClientInfo {
    let (addr, port) = match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => (peer.to_string(), 0),
    };
    let (local_addr, local_port) = conn
        .socket()
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(("unix".to_string(), 0), |a| (a.ip().to_string(), a.port()));
    ClientInfo {
        user: user.to_string(),
        database: database.to_string(),
        addr,
        port,
        local_addr,
        local_port,
        connect_time: crate::stats::now_micros(),
        cookie: crate::net::socket_cookie(conn.socket()),
    }
}

/// Logs a client in. Ok(None) when the connection was a cancel request or the client
/// left.
pub async fn login(
    app: &Arc<App>,
    cfg: &Arc<Config>,
    conn: &mut Conn,
    peer: &str,
    id: u64,
) -> Result<Option<Login>, Fatal> {
    let g = &cfg.pooler;
    let req = match startup::read_request(conn, g).await? {
        Request::Gone => return Ok(None),
        Request::Cancel { pid, secret } => {
            cancel::handle(app, pid, secret).await;
            return Ok(None);
        }
        Request::Login(r) => r,
    };
    let admission = crate::client::registry::admit(app, g.max_client_conn).ok_or_else(|| {
        Fatal::new(
            sqlstate::TOO_MANY_CONNECTIONS,
            "no more connections allowed (max_client_conn)",
        )
    })?;
    if req.minor > 0 || !req.protocol_options.is_empty() {
        backend::negotiate_protocol_version(
            &mut conn.wbuf,
            backend::PROTOCOL_3_0,
            &req.protocol_options,
        );
    }
    let auth_file = app.auth_file();
    let outcome = auth::authenticate(conn, g.auth_type, auth_file.as_deref(), &req.user).await?;

    if is_admin_db(&req.database) {
        let role = if g.admin_users.contains(&req.user) {
            crate::admin::Role::Admin
        } else if g.stats_users.contains(&req.user) {
            crate::admin::Role::Stats
        } else {
            return Err(Fatal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!(
                    "user \"{}\" may not use the admin console (not in admin_users or stats_users)",
                    req.user
                ),
            ));
        };
        let app_name = req
            .params
            .iter()
            .find(|(n, _)| n == "application_name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let shared = app.clients.register(
            id,
            client_info(conn, peer, &req.user, &req.database),
            app_name.clone(),
        );
        backend::authentication_ok(&mut conn.wbuf);
        for (n, v) in crate::admin::greeting(&app_name) {
            backend::parameter_status(&mut conn.wbuf, &n, &v);
        }
        backend::backend_key_data(&mut conn.wbuf, shared.pid, shared.secret);
        backend::ready_for_query(&mut conn.wbuf, b'I');
        if g.log_connections {
            tracing::info!(client = id, %peer, db = %req.database, user = %req.user, "admin console login");
        }
        return Ok(Some(Login::Admin(AdminLogin {
            shared,
            role,
            admission,
        })));
    }

    let Some((_entry, db)) = cfg.database(&req.database) else {
        return Err(Fatal::new(
            sqlstate::INVALID_CATALOG_NAME,
            format!("no such database: {}", req.database),
        ));
    };
    if app.is_disabled(&req.database) {
        return Err(Fatal::new(
            sqlstate::CANNOT_CONNECT_NOW,
            format!("database \"{}\" is disabled (DISABLE)", req.database),
        ));
    }
    let server_user = db.user.clone().unwrap_or_else(|| req.user.clone());
    let key = PoolKey {
        db: req.database.clone(),
        user: server_user.clone(),
    };
    let pool = app.pools.get_or_create(
        &key,
        cfg.max_db_connections_for(db),
        cfg.max_user_connections_for(&server_user),
        || {
            (
                Arc::new(Target::from_config(g, db, &req.database, &server_user)),
                PoolSettings::from_config(cfg, db, &server_user),
            )
        },
    );
    if app.is_paused(&req.database) && !pool.is_paused() {
        pool.pause();
    }
    if let Some(keys) = outcome.scram_keys
        && server_user == req.user
    {
        pool.set_scram_keys(keys);
    }
    let creds = server::credentials(&pool, auth_file.as_deref());
    let welcome = welcome(&pool, &creds, id, server_read_size(cfg)).await?;

    let tracked = |n: &str| startup::tracked_name(g, n);
    let params = ClientParams::new(&welcome, &req.params, tracked);
    let info = client_info(conn, peer, &req.user, &req.database);
    let app_name = params.get("application_name").unwrap_or("").to_string();
    let shared = app.clients.register(id, info, app_name);
    let _ = shared.pool.set(pool.clone());
    pool.client_joined();
    backend::authentication_ok(&mut conn.wbuf);
    for (n, v) in params.greeting(&welcome) {
        backend::parameter_status(&mut conn.wbuf, &n, &v);
    }
    backend::backend_key_data(&mut conn.wbuf, shared.pid, shared.secret);
    backend::ready_for_query(&mut conn.wbuf, b'I');
    if g.log_connections {
        tracing::info!(client = id, %peer, db = %req.database, user = %req.user, "login");
    }
    Ok(Some(Login::Session(LoggedIn {
        shared,
        pool,
        params,
        creds,
        admission,
    })))
}

fn server_read_size(cfg: &Config) -> usize {
    (cfg.pooler.pkt_buf as usize).max(16 * 1024)
}

/// The ParameterStatus set a new client is greeted with: cached per pool, or learnt by
/// taking a server (connecting one if needed, which then stays in the pool).
async fn welcome(
    pool: &Arc<Pool>,
    creds: &Credentials,
    id: u64,
    read_size: usize,
) -> Result<crate::pool::Welcome, Fatal> {
    loop {
        if let Some(w) = pool.welcome() {
            return Ok(w);
        }
        let grant = match pool.acquire(id) {
            Acquire::Now(g) => g,
            Acquire::Wait(mut h) => poll_fn(|cx| h.poll_grant(cx)).await,
        };
        match grant {
            Grant::Server(idle) => {
                pool.set_welcome(&idle.info.params);
                pool.release(idle);
            }
            Grant::Connect(permit) => match server::open(&pool.target(), creds, read_size).await {
                Ok((conn, mut info)) => {
                    permit.connected(&mut info);
                    pool.set_welcome(&info.params);
                    match ServerConn::new(conn, info).into_idle() {
                        Some(idle) => pool.release(idle),
                        None => pool.server_closed(),
                    }
                }
                Err(e) => {
                    tracing::warn!(pool = ?pool.key, "server login failed: {e}");
                    let e = Arc::new(e);
                    permit.failed(e.is_login_failure().then(|| e.clone()));
                    return Err(Fatal::new(e.sqlstate(), e.to_string()).with_detail(e.detail()));
                }
            },
            Grant::Failed(e) => {
                return Err(Fatal::new(e.sqlstate(), e.to_string()).with_detail(e.detail()));
            }
            Grant::TimedOut => {
                return Err(Fatal::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "query_wait_timeout",
                ));
            }
        }
    }
}
