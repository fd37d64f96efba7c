//! Tests of the console grammar, including a fuzz pass that must never panic.

use super::*;

fn show(n: &str) -> Option<&'static str> {
    ["POOLS", "STATS", "HELP", "CLIENT_STATS"]
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(n))
}

fn param(n: &str) -> Option<&'static str> {
    match n.to_ascii_lowercase().as_str() {
        "transaction isolation level" | "transaction_isolation" => Some("transaction_isolation"),
        "datestyle" => Some("DateStyle"),
        _ => None,
    }
}

fn setting(k: &str) -> bool {
    matches!(k, "default_pool_size" | "server_check_query" | "log_level")
}

const NAMES: Names = Names {
    show,
    param,
    setting,
};

fn p(s: &str) -> Result<Command, ParseError> {
    parse(s, &NAMES)
}

#[test]
fn commands_are_case_insensitive() {
    assert_eq!(p("show pools"), Ok(Command::Show("POOLS")));
    assert_eq!(p("  SHOW\tPools  "), Ok(Command::Show("POOLS")));
    assert_eq!(p("Show Client_Stats"), Ok(Command::Show("CLIENT_STATS")));
    assert_eq!(p("pause"), Ok(Command::Pause(None)));
    assert_eq!(p("PAUSE app"), Ok(Command::Pause(Some("app".into()))));
    assert_eq!(
        p("resume \"My \"\"Db\"\"\""),
        Ok(Command::Resume(Some("My \"Db\"".into())))
    );
    assert_eq!(p("kill_client 42"), Ok(Command::KillClient(42)));
    assert_eq!(
        p("shutdown wait_for_clients"),
        Ok(Command::Shutdown(ShutdownMode::WaitForClients))
    );
    assert_eq!(p("begin"), Ok(Command::Tx("BEGIN")));
    assert_eq!(p("END"), Ok(Command::Tx("COMMIT")));
    assert_eq!(p(""), Ok(Command::Empty));
}

#[test]
fn split_on_semicolons_outside_quotes() {
    assert_eq!(split("SHOW POOLS;"), vec!["SHOW POOLS"]);
    assert_eq!(
        split("SHOW POOLS; SHOW STATS ;;"),
        vec!["SHOW POOLS", " SHOW STATS "]
    );
    assert_eq!(
        split("PAUSE \"a;b\"; RESUME"),
        vec!["PAUSE \"a;b\"", " RESUME"]
    );
    assert_eq!(split("SET x = 'a;b'"), vec!["SET x = 'a;b'"]);
    assert!(split(" ; ;").is_empty());
}

#[test]
fn set_forms() {
    assert_eq!(
        p("SET default_pool_size = 5"),
        Ok(Command::Set {
            key: "default_pool_size".into(),
            value: "5".into()
        })
    );
    assert_eq!(
        p("set SERVER_CHECK_QUERY to 'select 1'"),
        Ok(Command::Set {
            key: "server_check_query".into(),
            value: "select 1".into()
        })
    );
    assert!(p("SET default_pool_size = 5 6").is_err());
    assert_eq!(
        p("SET extra_float_digits = 3"),
        Ok(Command::SetIgnored {
            application_name: None
        })
    );
    assert_eq!(
        p("SET application_name = 'PostgreSQL JDBC Driver'"),
        Ok(Command::SetIgnored {
            application_name: Some("PostgreSQL JDBC Driver".into())
        })
    );
    assert_eq!(
        p("SET SESSION TIME ZONE 'UTC'"),
        Ok(Command::SetIgnored {
            application_name: None
        })
    );
}

#[test]
fn parameters_and_unknown_commands() {
    assert_eq!(
        p("SHOW TRANSACTION ISOLATION LEVEL"),
        Ok(Command::Param("transaction_isolation"))
    );
    assert_eq!(p("show DateStyle"), Ok(Command::Param("DateStyle")));
    let e = p("SHOW FOO").unwrap_err();
    assert_eq!(e.code, "42601");
    assert_eq!(
        e.message,
        "unknown command \"SHOW FOO\"; SHOW HELP lists the commands"
    );
    assert!(p("SELECT 1").unwrap_err().message.contains("\"SELECT 1\""));
    assert!(p("SHOW").is_err());
    assert!(p("PAUSE a b").is_err());
    assert!(p("DISABLE").is_err());
    assert!(p("RELOAD now").is_err());
    assert!(p("SHUTDOWN later").is_err());
    assert_eq!(p("KILL_CLIENT abc").unwrap_err().code, "22P02");
    assert!(p("KILL_CLIENT").is_err());
    assert!(p("KILL_CLIENT -1").is_err());
    assert!(p("PAUSE 'x").is_err());
    assert!(p("\"PAUSE\"").is_err());
    assert_eq!(p("=").unwrap_err().code, "42601");
}

#[test]
fn long_statements_are_quoted_short() {
    let long = format!("SHOW {}", "é".repeat(500));
    let e = p(&long).unwrap_err();
    assert!(e.message.len() < 600, "{}", e.message);
    assert!(e.message.contains("..."));
}

#[test]
fn read_only_commands() {
    assert!(Command::Show("POOLS").read_only());
    assert!(
        Command::SetIgnored {
            application_name: None
        }
        .read_only()
    );
    assert!(!Command::Pause(None).read_only());
    assert!(
        !Command::Set {
            key: "a".into(),
            value: "b".into()
        }
        .read_only()
    );
    assert!(!Command::Reload.read_only());
}

/// Deterministic pseudo-random inputs built from console-ish fragments and arbitrary
/// characters: parsing and splitting must never panic.
#[test]
fn fuzz_never_panics() {
    const PIECES: [&str; 24] = [
        "SHOW",
        "SET",
        "PAUSE",
        "KILL_CLIENT",
        "SHUTDOWN",
        " ",
        "\t",
        ";",
        "'",
        "\"",
        "\"\"",
        "''",
        "=",
        "TO",
        "pools",
        "é",
        "\u{0}",
        "99999999999999999999999",
        "-",
        "$1",
        "(",
        "\n",
        "RESUME",
        "wait_for_servers",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..(next() % 8) {
            if next() % 4 == 0 {
                s.push(char::from_u32((next() % 0x3000) as u32).unwrap_or('?'));
            } else {
                s.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
        }
        for stmt in split(&s) {
            let _ = p(stmt);
        }
        let _ = p(&s);
    }
}
