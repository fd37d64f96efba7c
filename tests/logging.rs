//! Logs: log_connections and log_disconnections switch their lines on and off (PgBouncer's
//! "login" and "closing because" lines, with the client id, database and user).

mod common;
use common::*;

use std::time::Duration;

const DB: &str = "logging_db";

fn session(pooler: &Pooler) {
    let (mut c, _) = RawClient::login_trust(pooler.port, TRUST_USER, DB);
    assert!(!c.query("SELECT 1").iter().any(Msg::is_error));
    c.send(&fe::terminate());
}

fn config(extra: &str) -> String {
    TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!("default_pool_size = 5\n{extra}"),
    )
}

fn lines_with(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(what) && l.contains(&format!("db={DB}")))
        .count()
}

#[test]
fn connection_lines_follow_their_settings() {
    Postgres::shared().create_database(DB);
    // Both on (PgBouncer's default): one login and one closing line per client.
    let on = Pooler::start(&config(""));
    session(&on);
    assert!(
        wait_until(Duration::from_secs(10), || lines_with(
            &on.log(),
            "closing because"
        ) == 1),
        "{}",
        on.log()
    );
    let log = on.log();
    assert_eq!(lines_with(&log, "login"), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("closing because: client") && l.contains("client=")),
        "{log}"
    );

    // Both off: a session leaves neither line.
    let off = Pooler::start(&config(
        "log_connections = false\nlog_disconnections = false",
    ));
    session(&off);
    // Once the session is over, a SIGHUP's log line marks a point after which its lines
    // would have been written.
    assert!(wait_until(Duration::from_secs(10), || {
        !admin_rows(&off, "SHOW CLIENTS")
            .iter()
            .any(|r| r.get("database").map(String::as_str) == Some(DB))
    }));
    off.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || off
        .log()
        .contains("configuration reloaded")));
    let log = off.log();
    assert_eq!(lines_with(&log, "login"), 0, "{log}");
    assert_eq!(lines_with(&log, "closing because"), 0, "{log}");
}
