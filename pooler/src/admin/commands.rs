//! The command executor: SHOW listings dispatched through `table`, control commands
//! relayed to `crate::control`, each returning a [`Reply`] (rows, notices, command tag)
//! rather than writing to a socket.

use std::{sync::Arc, time::Duration};

use super::{
    Role,
    parse::Command,
    result::{Cell, ResultSet},
    show_misc,
    snapshot::is_admin_db,
    table::{describe, show_entry},
};
use crate::{app::App, client::registry::ClientShared, proto::sqlstate};

/// A NOTICE sent before the command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub message: String,
    pub detail: Option<String>,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub notices: Vec<Notice>,
    pub rows: Option<ResultSet>,
    pub tag: String,
}

impl Reply {
    fn tag(tag: &str) -> Reply {
        Reply {
            notices: Vec::new(),
            rows: None,
            tag: tag.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An ERROR for this command; the session goes on.
    Error { code: &'static str, message: String },
    /// The session was killed while the command waited.
    Killed(String),
}

fn error(code: &'static str, message: impl Into<String>) -> Failure {
    Failure::Error {
        code,
        message: message.into(),
    }
}

/// The CommandComplete tag a command answers with.
pub fn tag_of(cmd: &Command) -> String {
    match cmd {
        Command::Empty => String::new(),
        Command::Show(_) | Command::Param(_) => "SHOW".into(),
        Command::Set { .. } | Command::SetIgnored { .. } => "SET".into(),
        other => other.name(),
    }
}

/// Who runs the command.
pub struct Ctx<'a> {
    pub app: &'a Arc<App>,
    pub shared: &'a ClientShared,
    pub role: Role,
}

/// A control function's error, with the SQLSTATE its text calls for.
fn control_error(message: String) -> Failure {
    let code = if message.contains("not implemented") {
        sqlstate::FEATURE_NOT_SUPPORTED
    } else if message.starts_with("no such database") {
        sqlstate::INVALID_CATALOG_NAME
    } else if message.starts_with("no such client") {
        "42704"
    } else {
        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE
    };
    error(code, message)
}

/// Polls `done` every 20 ms; the session can still be killed meanwhile.
async fn wait_for(ctx: &Ctx<'_>, done: impl Fn() -> bool) -> Result<(), Failure> {
    loop {
        if done() {
            return Ok(());
        }
        if let Some(reason) = ctx.shared.take_killed() {
            return Err(Failure::Killed(reason));
        }
        compio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The console's own database cannot be paused, killed and so on.
fn not_admin_db(verb: &str, db: Option<&str>) -> Result<(), Failure> {
    match db {
        Some(d) if is_admin_db(d) => Err(error(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("cannot {verb} admin db: {d}"),
        )),
        _ => Ok(()),
    }
}

/// Runs one command.
pub async fn execute(cmd: &Command, ctx: &Ctx<'_>) -> Result<Reply, Failure> {
    if ctx.role == Role::Stats && !cmd.read_only() {
        return Err(error(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied for \"{}\": only admin_users may run it (stats_users may run SHOW commands)",
                cmd.name()
            ),
        ));
    }
    let app = ctx.app;
    let done =
        |r: Result<(), String>, tag: &str| r.map(|()| Reply::tag(tag)).map_err(control_error);
    match cmd {
        Command::Empty => Ok(Reply::tag("")),
        Command::Show("HELP") => Ok(Reply {
            notices: vec![Notice {
                message: show_misc::HELP_MESSAGE.into(),
                detail: Some(show_misc::HELP_DETAIL.into()),
            }],
            rows: None,
            tag: "SHOW".into(),
        }),
        Command::Show(name) => {
            let entry =
                show_entry(name).ok_or_else(|| error(sqlstate::SYNTAX_ERROR, "unknown SHOW"))?;
            Ok(Reply {
                notices: super::show_kernel_stats::notices(entry.name, app),
                rows: Some((entry.run)(app)),
                tag: "SHOW".into(),
            })
        }
        Command::Param(name) => {
            let app_name = ctx
                .shared
                .application_name
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            let value = show_misc::param_value(name, &app_name);
            Ok(Reply {
                notices: Vec::new(),
                rows: Some(ResultSet {
                    columns: describe(cmd).unwrap_or_default(),
                    rows: vec![vec![Cell::Text(value)]],
                }),
                tag: "SHOW".into(),
            })
        }
        Command::Set { key, value } => app
            .set_setting(key, value)
            .map(|()| Reply::tag("SET"))
            .map_err(|m| {
                // PostgreSQL's codes for the same refusals of its own SET.
                let code = if m.contains("not implemented") {
                    sqlstate::FEATURE_NOT_SUPPORTED
                } else if m.contains("unknown setting") {
                    "42704"
                } else if m.contains("cannot be changed at run time") {
                    "55P02"
                } else {
                    "22023"
                };
                error(code, m)
            }),
        Command::SetIgnored { application_name } => {
            // Drivers set this at connect time; SHOW CLIENTS then shows it like PgBouncer.
            if let Some(name) = application_name
                && let Ok(mut current) = ctx.shared.application_name.lock()
            {
                *current = name.clone();
            }
            Ok(Reply::tag("SET"))
        }
        Command::Pause(db) => {
            not_admin_db("pause", db.as_deref())?;
            app.pause(db.as_deref()).map_err(control_error)?;
            wait_for(ctx, || app.pause_done(db.as_deref())).await?;
            Ok(Reply::tag("PAUSE"))
        }
        Command::Resume(db) => {
            if db.is_none() {
                app.unsuspend();
            }
            done(app.resume(db.as_deref()), "RESUME")
        }
        Command::Suspend => {
            app.suspend().map_err(control_error)?;
            wait_for(ctx, || app.suspend_done()).await?;
            Ok(Reply::tag("SUSPEND"))
        }
        Command::Disable(db) => {
            not_admin_db("disable", Some(db))?;
            done(app.disable(db), "DISABLE")
        }
        Command::Enable(db) => {
            not_admin_db("enable", Some(db))?;
            done(app.enable(db), "ENABLE")
        }
        Command::Reconnect(db) => {
            not_admin_db("reconnect", db.as_deref())?;
            done(app.reconnect(db.as_deref()), "RECONNECT")
        }
        Command::Kill(db) => {
            not_admin_db("kill", db.as_deref())?;
            app.kill(db.as_deref()).map_err(control_error)?;
            if db.is_none() {
                // App::kill(None) also marks console sessions, this one included; like
                // PgBouncer, KILL leaves the console alone, so this session carries on.
                let _ = ctx.shared.take_killed();
            }
            Ok(Reply::tag("KILL"))
        }
        Command::KillClient(id) => done(app.kill_client(*id), "KILL_CLIENT"),
        Command::WaitClose(db) => {
            not_admin_db("wait in", db.as_deref())?;
            // Unknown databases are reported rather than waited for.
            if let Some(d) = db
                && app.config().database(d).is_none()
                && !app.pools.all().iter().any(|p| p.key.db == *d)
            {
                return Err(control_error(format!("no such database: {d}")));
            }
            wait_for(ctx, || app.wait_close_done(db.as_deref())).await?;
            Ok(Reply::tag("WAIT_CLOSE"))
        }
        Command::Shutdown(mode) => done(app.shutdown(*mode), "SHUTDOWN"),
        Command::Reload => match app.reload() {
            Ok(notices) => Ok(Reply {
                notices: notices
                    .into_iter()
                    .map(|message| Notice {
                        message,
                        detail: None,
                    })
                    .collect(),
                rows: None,
                tag: "RELOAD".into(),
            }),
            Err(m) => Err(error("F0000", m)),
        },
        Command::Tx(tag) => Ok(Reply::tag(tag)),
    }
}
