//! Client and server authentication: userlist.txt, md5 passwords and SCRAM-SHA-256 (including pass-through).

mod authfile;
mod md5;
mod scram_client;
mod scram_common;
mod scram_server;
mod secret;

#[cfg(test)]
mod tests;

pub use self::md5::{md5_response, md5_secret, verify_md5, verify_plain};
pub use authfile::{AuthFile, AuthFileError};
pub use scram_client::ScramClient;
pub use scram_server::ScramServer;
pub use secret::{ScramSecret, Secret};

/// Errors of a SCRAM exchange in either role. Messages never contain secrets or peer-supplied text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// Protocol violation (SQLSTATE 08P01).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A message arrived in the wrong phase of the exchange (08P01).
    #[error("SCRAM message out of order")]
    OutOfOrder,
    /// Wrong password, or the server's signature did not verify (28P01).
    #[error("password authentication failed")]
    BadProof,
    /// The peer asked for channel binding, which we do not support (08P01).
    #[error("channel binding is not supported")]
    ChannelBinding,
}
