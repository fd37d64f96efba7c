//! A PostgreSQL connection pooler on io_uring: transaction pooling compatible with
//! PgBouncer's configuration and behaviour.
//!
//! Data flows one way: socket bytes (`net`) -> frames (`proto`) -> the client's session
//! (`client`) -> the pool (`pool`) -> the server side (`server`) -> `net`.

pub mod admin;
pub mod app;
pub mod auth;
pub mod client;
pub mod config;
pub mod control;
pub mod kernel;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod proto;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod stats;
mod worker;

pub use worker::run;
