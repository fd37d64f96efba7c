//! The `pooler` binary: command line, logging, signals; the daemon itself is the library.

use std::{path::Path, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use pooler::{app::App, auth::AuthFile, config::Config, net};

#[derive(Parser)]
#[command(
    version,
    about = "PostgreSQL connection pooler on io_uring (PgBouncer-compatible)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file: TOML, or PgBouncer's pgbouncer.ini (read as ini when it ends in .ini).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Configuration file, as PgBouncer takes it (same as -c).
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
    /// Validate the configuration (and the auth file) and exit: 0 if valid, 1 otherwise.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the TOML equivalent of a PgBouncer ini file on stdout, and the settings it ignores
    /// on stderr; exit 0 if the result is a valid configuration, 1 otherwise.
    #[command(name = "import-pgbouncer")]
    ImportPgbouncer {
        /// The pgbouncer.ini to translate (its %include files are read too).
        #[arg(value_name = "FILE")]
        ini: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ImportPgbouncer { ini }) = &cli.command {
        return import_pgbouncer(ini);
    }
    let Some(path) = cli.config.or(cli.file) else {
        eprintln!("pooler: no configuration file given (use -c FILE)");
        return ExitCode::from(2);
    };
    let (config, warnings) = match Config::load_with_warnings(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("pooler: invalid configuration:\n{errors}");
            return ExitCode::from(1);
        }
    };
    let auth_file = match &config.pooler.auth_file {
        Some(p) => match AuthFile::load(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "pooler: invalid configuration:\n{}: pooler.auth_file: {e}",
                    path.display()
                );
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    if cli.check {
        for warning in &warnings {
            eprintln!("pooler: warning: {warning}");
        }
        println!("{}: configuration is valid", path.display());
        return ExitCode::SUCCESS;
    }
    init_logging(config.pooler.log_level.as_deref());
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    match run(config, auth_file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pooler: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `pooler import-pgbouncer FILE`: TOML on stdout; warnings, then errors, on stderr.
fn import_pgbouncer(ini: &Path) -> ExitCode {
    let imported = match pooler::config::import_pgbouncer(ini) {
        Ok(imported) => imported,
        Err(errors) => {
            eprintln!("pooler: cannot import {}:\n{errors}", ini.display());
            return ExitCode::from(1);
        }
    };
    print!("{}", imported.toml);
    for warning in &imported.warnings {
        eprintln!("{warning}");
    }
    match imported.config {
        Ok(_) => ExitCode::SUCCESS,
        Err(errors) => {
            eprintln!("pooler: the result is not a valid configuration:\n{errors}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.unwrap_or("info")),
    };
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn run(config: Config, auth_file: Option<AuthFile>) -> anyhow::Result<()> {
    let workers = config.pooler.worker_count();
    let backend = net::probe_backend(config.pooler.io_backend).map_err(anyhow::Error::msg)?;
    // Signals go to the signal thread only: block them before any other thread starts.
    let signals = block_signals();
    // Before any socket exists: it may move the process into a cgroup of its own, and the
    // kernel programs only see sockets created (and connections established) after that.
    let kernel = pooler::kernel::Kernel::start(&config.pooler).map_err(anyhow::Error::msg)?;
    // Before the client listeners: once clients can connect, monitoring answers too.
    let metrics = pooler::metrics::bind(&config.pooler)?;
    let listeners = net::bind_listeners(&config.pooler, workers)?;
    for l in listeners.per_worker.first().into_iter().flatten() {
        tracing::info!("listening on {}", l.describe());
    }
    tracing::info!(
        "pooler {} starting: {} workers, {} backend",
        env!("CARGO_PKG_VERSION"),
        workers,
        backend.name()
    );
    let app = App::new(config, auth_file, backend);
    if let Some(m) = metrics {
        m.spawn(app.clone())?;
    }
    app.kernel.install(kernel);
    spawn_signal_thread(app.clone(), signals);
    let result = pooler::run(app.clone(), listeners);
    // Detach and leave the child cgroup even when the workers failed.
    app.kernel.shutdown();
    result?;
    tracing::info!("pooler stopped");
    Ok(())
}

fn block_signals() -> libc::sigset_t {
    pooler::signals::block()
}

fn spawn_signal_thread(app: Arc<App>, set: libc::sigset_t) {
    if let Err(e) = pooler::signals::spawn(app, set) {
        tracing::error!("cannot start the signal thread: {e}");
    }
}
