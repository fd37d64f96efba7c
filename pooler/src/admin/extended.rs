//! The console's extended protocol: prepared statements and portals, and the Session's
//! handling of Parse, Bind, Describe, Execute and Close.

use super::{
    commands::{self, Failure},
    messages,
    parse::{self, Command},
    result::{self, Column},
    session::Session,
    table,
};
use crate::proto::{backend, sqlstate};

/// A prepared statement: the parsed command and the parameter types Parse declared.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub cmd: Command,
    pub param_types: Vec<u32>,
}

/// A bound portal: its command, the binary flag of each result column, and whether it
/// has been run (a command runs once per portal, whatever Describe asked before).
#[derive(Debug, Clone)]
pub struct Portal {
    pub cmd: Command,
    pub binary: Vec<bool>,
    pub done: bool,
}

impl Session {
    pub(super) fn parse(&mut self, body: &[u8]) -> Result<(), Step> {
        let msg = messages::parse_message(body).map_err(Step::fatal)?;
        let statements = parse::split(&msg.query);
        let cmd = match statements.as_slice() {
            [] => Command::Empty,
            [one] => {
                parse::parse(one, &table::NAMES).map_err(|e| Step::Error(e.code, e.message))?
            }
            _ => {
                return Err(Step::Error(
                    sqlstate::SYNTAX_ERROR,
                    "cannot insert multiple commands into a prepared statement".into(),
                ));
            }
        };
        if !msg.name.is_empty() && self.statements.contains_key(&msg.name) {
            return Err(Step::Error(
                "42P05",
                format!("prepared statement \"{}\" already exists", msg.name),
            ));
        }
        self.statements.insert(
            msg.name,
            Prepared {
                cmd,
                param_types: msg.param_types,
            },
        );
        messages::parse_complete(&mut self.conn.wbuf);
        Ok(())
    }

    pub(super) fn bind(&mut self, body: &[u8]) -> Result<(), Step> {
        let msg = messages::bind_message(body).map_err(Step::fatal)?;
        let stmt = self.statements.get(&msg.statement).ok_or_else(|| {
            Step::Error(
                "26000",
                format!("prepared statement \"{}\" does not exist", msg.statement),
            )
        })?;
        if !msg.portal.is_empty() && self.portals.contains_key(&msg.portal) {
            return Err(Step::Error(
                "42P03",
                format!("portal \"{}\" already exists", msg.portal),
            ));
        }
        if let Some(f) = msg.result_formats.iter().find(|&&f| f != 0 && f != 1) {
            return Err(Step::Error(
                "22023",
                format!("unsupported format code: {f}"),
            ));
        }
        let columns = table::describe(&stmt.cmd).unwrap_or_default();
        let binary = result::resolve_formats(&msg.result_formats, columns.len())
            .map_err(|m| Step::Error(sqlstate::PROTOCOL_VIOLATION, m))?;
        let cmd = stmt.cmd.clone();
        self.portals.insert(
            msg.portal,
            Portal {
                cmd,
                binary,
                done: false,
            },
        );
        messages::bind_complete(&mut self.conn.wbuf);
        Ok(())
    }

    pub(super) fn describe(&mut self, body: &[u8]) -> Result<(), Step> {
        let (kind, name) = messages::target_message(body).map_err(Step::fatal)?;
        let buf = &mut self.conn.wbuf;
        let (columns, binary): (Option<Vec<Column>>, Vec<bool>) = match kind {
            b'S' => {
                let stmt = self.statements.get(&name).ok_or_else(|| {
                    Step::Error(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    )
                })?;
                messages::parameter_description(buf, &stmt.param_types);
                (table::describe(&stmt.cmd), Vec::new())
            }
            b'P' => {
                let portal = self.portals.get(&name).ok_or_else(|| {
                    Step::Error("34000", format!("portal \"{name}\" does not exist"))
                })?;
                (table::describe(&portal.cmd), portal.binary.clone())
            }
            other => {
                return Err(Step::Error(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid DESCRIBE message subtype {other}"),
                ));
            }
        };
        match columns {
            Some(cols) => result::write_row_description(buf, &cols, &binary),
            None => messages::no_data(buf),
        }
        Ok(())
    }

    pub(super) async fn execute(&mut self, body: &[u8]) -> Result<(), Step> {
        // max_rows is ignored: console results are small and sent whole.
        let (name, _max_rows) = messages::execute_message(body).map_err(Step::fatal)?;
        let portal = self
            .portals
            .get_mut(&name)
            .ok_or_else(|| Step::Error("34000", format!("portal \"{name}\" does not exist")))?;
        let cmd = portal.cmd.clone();
        let binary = portal.binary.clone();
        if cmd == Command::Empty {
            backend::empty_query_response(&mut self.conn.wbuf);
            return Ok(());
        }
        if std::mem::replace(&mut portal.done, true) {
            // Already run to completion: nothing more to send.
            let tag = commands::tag_of(&cmd);
            backend::command_complete(&mut self.conn.wbuf, &tag);
            return Ok(());
        }
        match self.run_command(&cmd).await {
            Ok(reply) => {
                self.write_reply(&reply, Some(&binary), false);
                Ok(())
            }
            Err(Failure::Error { code, message }) => Err(Step::Error(code, message)),
            Err(Failure::Killed(reason)) => Err(Step::Fatal(sqlstate::ADMIN_SHUTDOWN, reason)),
        }
    }

    pub(super) fn close(&mut self, body: &[u8]) -> Result<(), Step> {
        let (kind, name) = messages::target_message(body).map_err(Step::fatal)?;
        match kind {
            b'S' => {
                self.statements.remove(&name);
            }
            b'P' => {
                self.portals.remove(&name);
            }
            other => {
                return Err(Step::Error(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid CLOSE message subtype {other}"),
                ));
            }
        }
        messages::close_complete(&mut self.conn.wbuf);
        Ok(())
    }
}

/// An extended-protocol step that failed.
pub(super) enum Step {
    /// ERROR, then skip until Sync.
    Error(&'static str, String),
    /// FATAL, then close.
    Fatal(&'static str, String),
}

impl Step {
    pub(super) fn fatal(what: String) -> Step {
        Step::Fatal(sqlstate::PROTOCOL_VIOLATION, what)
    }
}
