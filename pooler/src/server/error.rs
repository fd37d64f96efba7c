//! Why a server connection could not be had, classified for the client's ErrorResponse.

use std::io;

use crate::proto::{frame::ErrorFields, sqlstate};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Could not reach PostgreSQL at all.
    #[error("could not connect to server: {0}")]
    Connect(io::Error),
    #[error("server connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("server did not answer within server_connect_timeout ({0} s)")]
    Timeout(f64),
    /// PostgreSQL refused the login (or failed it) with this error: relayed as is.
    #[error("{}", .0.message)]
    Server(ErrorFields),
    #[error("server protocol error: {0}")]
    Protocol(String),
    /// We cannot answer the server's authentication request.
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Pooler(String),
}

impl ServerError {
    /// SQLSTATE the client gets.
    pub fn sqlstate(&self) -> &str {
        match self {
            ServerError::Server(f) if !f.code.is_empty() => &f.code,
            ServerError::Server(_) => sqlstate::CONNECTION_FAILURE,
            ServerError::Connect(_) | ServerError::Timeout(_) => {
                sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH
            }
            ServerError::Io(_) => sqlstate::CONNECTION_FAILURE,
            ServerError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            ServerError::Auth(_) => sqlstate::INVALID_AUTHORIZATION,
            ServerError::Pooler(_) => sqlstate::INTERNAL_ERROR,
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            ServerError::Server(f) => f.detail.as_deref(),
            _ => None,
        }
    }

    /// A login error worth failing new clients fast for (server_login_retry).
    pub fn is_login_failure(&self) -> bool {
        !matches!(self, ServerError::Pooler(_))
    }
}
