//! The admin console driven by real drivers over the extended query protocol (PgBouncer's
//! console cannot be: its issue #718): psycopg 3 (binary results and a named prepared
//! statement) and pgjdbc (both ways it connects, unnamed statements, a PreparedStatement it
//! turns into a named one after five uses).

mod common;
use common::*;

const POOLS: &str = "database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,\
sv_active,sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,\
maxwait_us,pool_mode,load_balance_hosts";
const STATS_HEAD: &str =
    "database,total_server_assignment_count,total_xact_count,total_query_count";

/// A pooler whose pool for `db` exists (one client ran a query through it).
fn start(db: &str) -> Pooler {
    Postgres::shared().create_database(db);
    let pooler = Pooler::start(TRUST_TRANSACTION_CONFIG);
    let (mut c, _) = RawClient::login_trust(pooler.port, "postgres", db);
    assert!(!c.query("SELECT 1").iter().any(Msg::is_error));
    pooler
}

/// Output lines "KEY value" of a driver script, as a lookup.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} line in\n{out}"))
}

const PSYCOPG: &str = r#"
import sys, psycopg
dsn, db = sys.argv[1], sys.argv[2]
with psycopg.connect(dsn, autocommit=True) as conn:
    # binary=True makes psycopg use the extended protocol (Parse/Bind/Execute).
    cur = conn.execute("SHOW POOLS", binary=True)
    print("POOLS", ",".join(d.name for d in cur.description))
    row = [r for r in cur.fetchall() if r[0] == db][0]
    print("POOL", row[0], row[1], type(row[2]).__name__, row[15])
    # prepare=True: a named server-side statement, reused.
    for _ in range(3):
        cur = conn.execute("SHOW STATS", prepare=True)
    print("STATS", ",".join(d.name for d in cur.description))
    xacts = [r[2] for r in cur.fetchall() if r[0] == db][0]
    print("XACTS", xacts)
    try:
        conn.execute("SHOW NOSUCH", binary=True)
        print("ERROR none")
    except psycopg.Error as e:
        print("ERROR", e.sqlstate)
    print("AFTER", conn.execute("SHOW VERSION", binary=True).fetchone()[0].split()[0])
"#;

#[test]
fn psycopg3_queries_the_console_over_the_extended_protocol() {
    const DB: &str = "admin_drivers_psycopg";
    let driver = match psycopg() {
        Ok(d) => d,
        Err(why) => return skip("psycopg3_queries_the_console", &why),
    };
    let pooler = start(DB);
    let dsn = format!("postgresql://postgres@127.0.0.1:{}/pgbouncer", pooler.port);
    let out = driver
        .run("console.py", PSYCOPG, &[dsn, DB.to_string()])
        .unwrap_or_else(|e| panic!("psycopg: {e}"));
    assert_eq!(field(&out, "POOLS"), POOLS);
    // Binary cells decode to the declared types: cl_active is an int.
    assert_eq!(
        field(&out, "POOL"),
        format!("{DB} postgres int transaction")
    );
    assert!(field(&out, "STATS").starts_with(STATS_HEAD), "{out}");
    assert!(field(&out, "XACTS").parse::<u64>().unwrap() >= 1, "{out}");
    assert_eq!(field(&out, "ERROR"), "42601");
    // The session carries on after the error.
    assert_eq!(field(&out, "AFTER"), "PgBouncer");
}

const PGJDBC: &str = r#"
import java.sql.*;

public class Console {
    static String columns(ResultSetMetaData md) throws SQLException {
        StringBuilder b = new StringBuilder();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            if (i > 1) b.append(',');
            b.append(md.getColumnName(i));
        }
        return b.toString();
    }

    public static void main(String[] args) throws Exception {
        // Seeing the console's server_version (PgBouncer's "1.25.2/bouncer"), pgjdbc
        // takes it for an old server and connects as it would to one.
        try (Connection c = DriverManager.getConnection(args[0]);
             Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SHOW VERSION")) {
            rs.next();
            System.out.println("VERSION " + rs.getString(1).split(" ")[0]);
        }
        // Told the server is 9.0+, it puts them (application_name too) in the startup packet.
        try (Connection c = DriverManager.getConnection(
                args[0] + "&ApplicationName=jdbc-console&assumeMinServerVersion=9.0")) {
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SHOW POOLS")) {
                System.out.println("POOLS " + columns(rs.getMetaData()));
                String mode = "none";
                while (rs.next()) {
                    if (rs.getString("database").equals(args[1])) {
                        mode = rs.getInt("cl_active") + " " + rs.getString("pool_mode");
                    }
                }
                System.out.println("POOL " + mode);
            }
            try (PreparedStatement ps = c.prepareStatement("SHOW CLIENTS")) {
                for (int round = 0; round < 6; round++) {
                    try (ResultSet rs = ps.executeQuery()) {
                        String me = "none";
                        while (rs.next()) {
                            if ("jdbc-console".equals(rs.getString("application_name"))) {
                                me = rs.getString("database");
                            }
                        }
                        if (round == 5) System.out.println("ME " + me);
                    }
                }
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SHOW NOSUCH");
                System.out.println("ERROR none");
            } catch (SQLException e) {
                System.out.println("ERROR " + e.getSQLState());
            }
        }
    }
}
"#;

#[test]
fn pgjdbc_queries_the_console() {
    const DB: &str = "admin_drivers_jdbc";
    let driver = match pgjdbc() {
        Ok(d) => d,
        Err(why) => return skip("pgjdbc_queries_the_console", &why),
    };
    let pooler = start(DB);
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/pgbouncer?user=postgres",
        pooler.port
    );
    let out = driver
        .run("Console.java", PGJDBC, &[url, DB.to_string()])
        .unwrap_or_else(|e| panic!("pgjdbc: {e}"));
    assert_eq!(field(&out, "VERSION"), "PgBouncer");
    assert_eq!(field(&out, "POOLS"), POOLS);
    assert_eq!(field(&out, "POOL"), "0 transaction");
    // Its own row in SHOW CLIENTS, with the application_name it gave at connect time.
    assert_eq!(field(&out, "ME"), "pgbouncer", "{out}");
    assert_eq!(field(&out, "ERROR"), "42601");
}
