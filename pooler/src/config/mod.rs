//! The pooler's TOML configuration: types, loading, and the resolved per-pool settings.
//!
//! Key names and defaults follow PgBouncer 1.25.2 so operators need not relearn them. Loading
//! never stops at the first problem: every error of a file is collected (see [`ConfigErrors`]),
//! so `pooler -c FILE --check` can list them all at once. PgBouncer's own `pgbouncer.ini` is
//! read too, by translating it into the same TOML (see `ini.rs`).

mod databases;
mod extract;
mod general;
mod ini;
mod validate;

#[cfg(test)]
mod ini_tests;
#[cfg(test)]
mod tests;

pub use ini::{Imported, import_pgbouncer};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a server connection stays assigned to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Trust,
    Plain,
    Md5,
    ScramSha256,
}

/// Which I/O driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    Auto,
    IoUring,
    Epoll,
}

impl PoolMode {
    /// Every mode with its TOML spelling (also what SHOW POOLS prints).
    pub const ALL: [(&'static str, PoolMode); 3] = [
        ("session", PoolMode::Session),
        ("transaction", PoolMode::Transaction),
        ("statement", PoolMode::Statement),
    ];

    /// The TOML / admin-console spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

impl AuthType {
    /// Every supported type with its TOML spelling.
    pub const ALL: [(&'static str, AuthType); 4] = [
        ("trust", AuthType::Trust),
        ("plain", AuthType::Plain),
        ("md5", AuthType::Md5),
        ("scram-sha-256", AuthType::ScramSha256),
    ];

    /// The TOML / admin-console spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Trust => "trust",
            AuthType::Plain => "plain",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
        }
    }

    /// Whether this type checks passwords, and therefore needs `auth_file`.
    pub fn needs_auth_file(self) -> bool {
        !matches!(self, AuthType::Trust)
    }
}

impl IoBackend {
    /// Every backend with its TOML spelling.
    pub const ALL: [(&'static str, IoBackend); 3] = [
        ("auto", IoBackend::Auto),
        ("io_uring", IoBackend::IoUring),
        ("epoll", IoBackend::Epoll),
    ];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::IoUring => "io_uring",
            IoBackend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the kernel-side statistics (eBPF) are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EbpfMode {
    /// Try; on refusal log why once and run without.
    Auto,
    /// Refuse to start without them.
    On,
    Off,
}

impl EbpfMode {
    /// Every mode with its TOML spelling.
    pub const ALL: [(&'static str, EbpfMode); 3] = [
        ("auto", EbpfMode::Auto),
        ("on", EbpfMode::On),
        ("off", EbpfMode::Off),
    ];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EbpfMode::Auto => "auto",
            EbpfMode::On => "on",
            EbpfMode::Off => "off",
        }
    }
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole configuration, after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// File it was read from (None when parsed from a string).
    pub path: Option<PathBuf>,
    /// `[pooler]`.
    pub pooler: General,
    /// `[databases]`; key "*" is the fallback entry.
    pub databases: BTreeMap<String, Database>,
    /// `[users]`.
    pub users: BTreeMap<String, UserConfig>,
    /// The validated document this was built from, so `SET` can change one key and
    /// validate the whole again with the same rules.
    pub source: toml::Table,
}

/// `[pooler]`: PgBouncer's `[pgbouncer]` keys, same names, same defaults (PgBouncer 1.25.2).
/// Durations are seconds in TOML (integer or float); 0 means "disabled" where PgBouncer says so.
#[derive(Debug, Clone)]
pub struct General {
    pub listen_addr: Vec<String>,
    pub listen_port: u16,
    pub unix_socket_dir: Option<PathBuf>,
    pub unix_socket_mode: u32,
    pub listen_backlog: u32,
    pub so_reuseport: bool,
    pub pool_mode: PoolMode,
    pub max_client_conn: u32,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    pub auth_type: AuthType,
    pub auth_file: Option<PathBuf>,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub server_check_query: String,
    pub server_check_delay: Duration,
    pub server_idle_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    /// How many server logins one pool may have in progress at once (0 = no limit).
    pub server_login_concurrency: u32,
    /// SUSPEND waits this long for a client's buffers to flush, then drops the client.
    pub suspend_timeout: Duration,
    pub query_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub client_login_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub dns_max_ttl: Duration,
    pub ignore_startup_parameters: Vec<String>,
    pub track_extra_parameters: Vec<String>,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    pub max_packet_size: u32,
    /// Prepared statements kept per server connection in transaction/statement mode
    /// (least recently used closed beyond it); 0 turns the tracking off.
    pub max_prepared_statements: u32,
    /// Ours: prepared statements one client may hold in transaction/statement mode.
    pub max_client_prepared_statements: u32,
    pub pkt_buf: u32,
    pub stats_period: Duration,
    pub tcp_keepalive: bool,
    pub tcp_keepcnt: u32,
    pub tcp_keepidle: Duration,
    pub tcp_keepintvl: Duration,
    pub tcp_user_timeout: Duration,
    pub application_name_add_host: bool,
    // Ours, not PgBouncer's.
    /// 0 = one per CPU (see [`General::worker_count`]).
    pub workers: u32,
    pub io_backend: IoBackend,
    /// Buffers in each worker's provided-buffer ring for quiet clients' receives
    /// (io_uring; 0 = none: every client keeps a receive buffer of its own).
    pub recv_ring_buffers: u32,
    /// None: RUST_LOG, else "info".
    pub log_level: Option<String>,
    /// `host:port` of the HTTP listener serving /metrics, /healthz and /readyz; "" = off.
    pub metrics_addr: String,
    /// Kernel-side socket statistics (see `crate::kernel`).
    pub ebpf: EbpfMode,
    /// Turn on the eBPF RTT callback (fires on nearly every ACK).
    pub ebpf_rtt_samples: bool,
    /// Pin the eBPF maps in this bpffs directory.
    pub ebpf_pin_path: Option<PathBuf>,
}

/// pgjdbc sends this startup parameter, and refusing it would break every Java client, so it is
/// ignored even when the operator does not list it.
pub const ALWAYS_IGNORED_STARTUP_PARAMETER: &str = "extra_float_digits";

impl Default for General {
    /// PgBouncer 1.25.2's defaults (SHOW CONFIG), plus ours.
    fn default() -> Self {
        let secs = Duration::from_secs;
        General {
            listen_addr: Vec::new(),
            listen_port: 6432,
            unix_socket_dir: Some(PathBuf::from("/tmp")),
            unix_socket_mode: 0o777,
            listen_backlog: 128,
            so_reuseport: false,
            pool_mode: PoolMode::Session,
            max_client_conn: 100,
            default_pool_size: 20,
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: secs(5),
            max_db_connections: 0,
            max_user_connections: 0,
            auth_type: AuthType::Md5,
            auth_file: None,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            server_reset_query: "DISCARD ALL".to_owned(),
            server_reset_query_always: false,
            server_check_query: String::new(),
            server_check_delay: secs(30),
            server_idle_timeout: secs(600),
            server_lifetime: secs(3600),
            server_connect_timeout: secs(15),
            server_login_retry: secs(15),
            server_login_concurrency: 1,
            suspend_timeout: secs(10),
            query_timeout: secs(0),
            query_wait_timeout: secs(120),
            client_idle_timeout: secs(0),
            client_login_timeout: secs(60),
            idle_transaction_timeout: secs(0),
            dns_max_ttl: secs(15),
            ignore_startup_parameters: vec![ALWAYS_IGNORED_STARTUP_PARAMETER.to_owned()],
            track_extra_parameters: vec!["IntervalStyle".to_owned()],
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            max_packet_size: 2_147_483_647,
            max_prepared_statements: 200,
            max_client_prepared_statements: 1000,
            pkt_buf: 4096,
            stats_period: secs(60),
            tcp_keepalive: true,
            tcp_keepcnt: 0,
            tcp_keepidle: secs(0),
            tcp_keepintvl: secs(0),
            tcp_user_timeout: secs(0),
            application_name_add_host: false,
            workers: 0,
            io_backend: IoBackend::Auto,
            recv_ring_buffers: 512,
            log_level: None,
            metrics_addr: String::new(),
            ebpf: EbpfMode::Auto,
            ebpf_rtt_samples: false,
            ebpf_pin_path: None,
        }
    }
}

impl General {
    /// `workers`, with 0 resolved to the number of CPUs this process may use.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            usize::try_from(self.workers).unwrap_or(1)
        }
    }
}

/// One entry of `[databases]`: an inline table, or PgBouncer's libpq-style string.
#[derive(Debug, Clone, PartialEq)]
pub struct Database {
    /// Host name, IP address, or (starting with '/') a Unix socket directory.
    pub host: String,
    pub port: u16,
    /// None: same as the entry's name (for "*": the client's database).
    pub dbname: Option<String>,
    /// Force this server user (PgBouncer's `force_user`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Accepted and stored; not used yet.
    pub auth_user: Option<String>,
    /// None: `default_pool_size`.
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub pool_mode: Option<PoolMode>,
    pub max_db_connections: Option<u32>,
    pub server_lifetime: Option<Duration>,
    pub connect_query: Option<String>,
    pub application_name: Option<String>,
    pub client_encoding: Option<String>,
    pub datestyle: Option<String>,
    pub timezone: Option<String>,
}

impl Database {
    /// Where a database entry without `host` connects: the usual PostgreSQL socket directory
    /// of Debian-family packages when present, else libpq's compiled-in default.
    pub fn default_host() -> String {
        if Path::new("/var/run/postgresql").is_dir() {
            "/var/run/postgresql".to_owned()
        } else {
            "/tmp".to_owned()
        }
    }

    /// Whether `host` names a Unix socket directory rather than a TCP host.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

impl Default for Database {
    /// An entry with every field unset: default host, port 5432.
    fn default() -> Self {
        Database {
            host: Database::default_host(),
            port: 5432,
            dbname: None,
            user: None,
            password: None,
            auth_user: None,
            pool_size: None,
            min_pool_size: None,
            reserve_pool_size: None,
            pool_mode: None,
            max_db_connections: None,
            server_lifetime: None,
            connect_query: None,
            application_name: None,
            client_encoding: None,
            datestyle: None,
            timezone: None,
        }
    }
}

/// One entry of `[users]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserConfig {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_user_connections: Option<u32>,
}

/// One problem found in a config file. Display: "{file}: {key}: {message}".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// Dotted path ("pooler.listen_port", "databases.app.pool_size"), or "" for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems of one load, never just the first one.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Whether `key` is a `[pooler]` setting (the admin console's SET tells pooler settings
/// from the driver noise it accepts and ignores, such as `extra_float_digits`).
pub fn is_pooler_key(key: &str) -> bool {
    general::GENERAL_KEYS.contains(&key)
}

impl Config {
    /// Read, parse and validate a TOML file, or a PgBouncer ini file (see
    /// [`Config::load_with_warnings`]). Every problem found is returned, not just the first.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Config::load_with_warnings(path).map(|(config, _)| config)
    }

    /// Same, with the warnings of an ini file (PgBouncer settings that are ignored, one line
    /// each); a TOML file has none. A file is read as PgBouncer's ini when its name ends in
    /// `.ini`, or when it starts with `[pgbouncer]` / `[databases]` and is not valid TOML.
    pub fn load_with_warnings(path: &Path) -> Result<(Config, Vec<String>), ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) if ini::looks_like_ini(path, &text) => ini::load(path, &text),
            Ok(text) => Config::parse_str(&text, Some(path)).map(|c| (c, Vec::new())),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: Some(path.to_path_buf()),
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }])),
        }
    }

    /// The configuration with `[pooler] key = value` changed (the admin console's SET),
    /// validated like a file. `value` is read as a TOML value when it is one (`30`,
    /// `'DISCARD ALL'`, `true`), else as a plain string (`transaction`).
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Config, ConfigErrors> {
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
        let mut table = self.source.clone();
        let pooler = table
            .entry("pooler")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = pooler {
            t.insert(key.to_string(), parsed);
        }
        general::parse_table(table, self.path.as_deref())
    }

    /// Same from a string; `path` is only used in messages and to resolve a relative auth_file.
    pub fn parse_str(text: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
        general::parse_document(text, path)
    }

    /// Pool mode for (database entry, user): user > database > global.
    pub fn pool_mode_for(&self, db: &Database, user: &str) -> PoolMode {
        self.user(user)
            .and_then(|u| u.pool_mode)
            .or(db.pool_mode)
            .unwrap_or(self.pooler.pool_mode)
    }

    /// Pool size for (database entry, user): user > database > `default_pool_size`.
    pub fn pool_size_for(&self, db: &Database, user: &str) -> u32 {
        self.user(user)
            .and_then(|u| u.pool_size)
            .or(db.pool_size)
            .unwrap_or(self.pooler.default_pool_size)
    }

    /// Reserve pool size for (database entry, user): user > database > global.
    pub fn reserve_pool_size_for(&self, db: &Database, user: &str) -> u32 {
        self.user(user)
            .and_then(|u| u.reserve_pool_size)
            .or(db.reserve_pool_size)
            .unwrap_or(self.pooler.reserve_pool_size)
    }

    /// Minimum pool size for a database entry: database > global.
    pub fn min_pool_size_for(&self, db: &Database) -> u32 {
        db.min_pool_size.unwrap_or(self.pooler.min_pool_size)
    }

    /// Server connection cap for a database entry (0 = unlimited): database > global.
    pub fn max_db_connections_for(&self, db: &Database) -> u32 {
        db.max_db_connections
            .unwrap_or(self.pooler.max_db_connections)
    }

    /// Server connection cap for a user (0 = unlimited): user > global.
    pub fn max_user_connections_for(&self, user: &str) -> u32 {
        self.user(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.pooler.max_user_connections)
    }

    /// The entry a client's database name maps to: exact name first, then "*".
    pub fn database(&self, name: &str) -> Option<(&str, &Database)> {
        self.databases
            .get_key_value(name)
            .or_else(|| self.databases.get_key_value("*"))
            .map(|(k, v)| (k.as_str(), v))
    }

    fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.get(name)
    }
}
