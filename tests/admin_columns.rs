//! Admin console surface: every SHOW command's columns (names, order, types) against PgBouncer
//! 1.25.2's recorded answers, SHOW HELP, SHOW CONFIG keys, roles, errors, extended protocol.

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

/// (command, PgBouncer's RowDescription type letters, header line). Headers as recorded from
/// PgBouncer 1.25.2 with `psql -A -F,` (shared/docs/pgbouncer-console.md); type letters learnt
/// from its admin.c / stats.c: s text, i int4, q int8, N numeric, T timestamp as text, b bytea.
const SHOWS: [(&str, &str, &str); 21] = [
    (
        "POOLS",
        "ssiiiiiiiiiiiiiss",
        "database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,sv_active,sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us,pool_mode,load_balance_hosts",
    ),
    (
        "STATS",
        "sNNNNNNNNNNNNNNNNNNNNNN",
        "database,total_server_assignment_count,total_xact_count,total_query_count,total_received,total_sent,total_xact_time,total_query_time,total_wait_time,total_client_parse_count,total_server_parse_count,total_bind_count,avg_server_assignment_count,avg_xact_count,avg_query_count,avg_recv,avg_sent,avg_xact_time,avg_query_time,avg_wait_time,avg_client_parse_count,avg_server_parse_count,avg_bind_count",
    ),
    (
        "STATS_TOTALS",
        "sNNNNNNNNNNN",
        "database,server_assignment_count,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time,client_parse_count,server_parse_count,bind_count",
    ),
    (
        "STATS_AVERAGES",
        "sNNNNNNNNNNN",
        "database,server_assignment_count,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time,avg_client_parse_count,avg_server_parse_count,avg_bind_count",
    ),
    ("TOTALS", "sN", "name,value"),
    (
        "CLIENTS",
        "ssssssisiTTiiississii",
        "type,user,database,replication,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,prepared_statements,id",
    ),
    (
        "SERVERS",
        "ssssssisiTTiiississii",
        "type,user,database,replication,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,prepared_statements,id",
    ),
    (
        "DATABASES",
        "ssissiiiissiiiiii",
        "name,host,port,database,force_user,pool_size,min_pool_size,reserve_pool_size,server_lifetime,pool_mode,load_balance_hosts,max_connections,current_connections,max_client_connections,current_client_connections,paused,disabled",
    ),
    (
        "USERS",
        "ssssiiii",
        "name,pool_size,reserve_pool_size,pool_mode,max_user_connections,current_connections,max_user_client_connections,current_client_connections",
    ),
    ("LISTS", "si", "list,items"),
    ("STATE", "ss", "key,value"),
    ("VERSION", "s", "version"),
    ("DNS_HOSTS", "sqs", "hostname,ttl,addrs"),
    ("DNS_ZONES", "sqi", "zonename,serial,count"),
    (
        "SOCKETS",
        "ssssssisiTTiiississiiiiiiiii",
        "type,user,database,replication,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,prepared_statements,id,recv_pos,pkt_pos,pkt_remain,send_pos,send_remain,pkt_avail,send_avail",
    ),
    (
        "ACTIVE_SOCKETS",
        "ssssssisiTTiiississiiiiiiiii",
        "type,user,database,replication,state,addr,port,local_addr,local_port,connect_time,request_time,wait,wait_us,close_needed,ptr,link,remote_pid,tls,application_name,prepared_statements,id,recv_pos,pkt_pos,pkt_remain,send_pos,send_remain,pkt_avail,send_avail",
    ),
    ("MEM", "siiii", "name,size,used,free,memtotal"),
    (
        "FDS",
        "issssiqisssssbb",
        "fd,task,user,database,addr,port,cancel,link,client_encoding,std_strings,datestyle,timezone,password,scram_client_key,scram_server_key",
    ),
    ("PEERS", "isii", "peer_id,host,port,pool_size"),
    (
        "PEER_POOLS",
        "iiiii",
        "peer_id,cl_active_cancel_req,cl_waiting_cancel_req,sv_active_cancel,sv_login",
    ),
    ("CONFIG", "ssss", "key,value,default,changeable"),
];

/// SHOW HELP's DETAIL as PgBouncer 1.25.2 sends it.
const HELP_DETAIL: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\tSHOW PEERS|PEER_POOLS\n\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\tSHOW DNS_HOSTS|DNS_ZONES\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\tSET key = arg\n\tRELOAD\n\tPAUSE [<db>]\n\tRESUME [<db>]\n\tDISABLE <db>\n\tENABLE <db>\n\tRECONNECT [<db>]\n\tKILL [<db>]\n\tKILL_CLIENT <client_id>\n\tSUSPEND\n\tSHUTDOWN\n\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\tWAIT_CLOSE [<db>]";

/// SHOW CONFIG rows of PgBouncer 1.25.2 as recorded (key,default,changeable), ';'-separated.
/// admin_users and auth_query are garbled in the recording by commas in values; fixed here.
const CONFIG_DEFAULTS: &str = "admin_users,,yes;application_name_add_host,0,yes;auth_dbname,,yes;\
auth_file,,yes;auth_hba_file,,yes;auth_ident_file,,yes;auth_ldap_options,,yes;auth_type,md5,yes;\
auth_user,,yes;autodb_idle_timeout,3600,yes;cancel_wait_timeout,10,yes;client_idle_timeout,0,yes;\
client_login_timeout,60,yes;client_tls13_ciphers,,yes;client_tls_ca_file,,yes;client_tls_cert_file,,yes;\
client_tls_ciphers,default,yes;client_tls_dheparams,auto,yes;client_tls_ecdhcurve,auto,yes;\
client_tls_key_file,,yes;client_tls_protocols,secure,yes;client_tls_sslmode,disable,yes;conffile,,yes;\
default_pool_size,20,yes;disable_pqexec,0,no;dns_max_ttl,15,yes;dns_nxdomain_ttl,15,yes;\
dns_zone_check_period,0,yes;idle_transaction_timeout,0,yes;ignore_startup_parameters,,yes;\
job_name,pgbouncer,no;listen_addr,,no;listen_backlog,128,no;listen_port,6432,no;log_connections,1,yes;\
log_disconnections,1,yes;log_pooler_errors,1,yes;log_stats,1,yes;logfile,,yes;max_client_conn,100,yes;\
max_db_client_connections,0,yes;max_db_connections,0,yes;max_packet_size,2147483647,yes;\
max_prepared_statements,200,yes;max_user_client_connections,0,yes;max_user_connections,0,yes;\
min_pool_size,0,yes;peer_id,0,yes;pidfile,,no;pkt_buf,4096,no;pool_mode,session,yes;query_timeout,0,yes;\
query_wait_notify,5,yes;query_wait_timeout,120,yes;reserve_pool_size,0,yes;reserve_pool_timeout,5,yes;\
resolv_conf,,no;sbuf_loopcnt,5,yes;scram_iterations,4096,yes;server_check_delay,30,yes;\
server_check_query,<empty>,yes;server_connect_timeout,15,yes;server_fast_close,0,yes;\
server_idle_timeout,600,yes;server_lifetime,3600,yes;server_login_retry,15,yes;\
server_reset_query,DISCARD ALL,yes;server_reset_query_always,0,yes;server_round_robin,0,yes;\
server_tls13_ciphers,,yes;server_tls_ca_file,,yes;server_tls_cert_file,,yes;server_tls_ciphers,default,yes;\
server_tls_key_file,,yes;server_tls_protocols,secure,yes;server_tls_sslmode,prefer,yes;so_reuseport,0,no;\
stats_period,60,yes;stats_users,,yes;suspend_timeout,10,yes;syslog,0,yes;syslog_facility,daemon,yes;\
syslog_ident,pgbouncer,yes;tcp_defer_accept,1,yes;tcp_keepalive,1,yes;tcp_keepcnt,0,yes;tcp_keepidle,0,yes;\
tcp_keepintvl,0,yes;tcp_socket_buffer,0,yes;tcp_user_timeout,0,yes;track_extra_parameters,IntervalStyle,no;\
transaction_timeout,0,yes;unix_socket_dir,/tmp,no;unix_socket_group,,no;unix_socket_mode,0777,no;user,,no;\
verbose,,yes";

fn start() -> Pooler {
    let config = TRUST_TRANSACTION_CONFIG.replace(
        "admin_users = \"postgres\"",
        &format!("admin_users = \"postgres\"\nstats_users = \"{TRUST_USER}\""),
    );
    Pooler::start(&config)
}

/// psql -A -F, with headers (no -t): the output's first line is the header.
fn psql_header(pooler: &Pooler, sql: &str) -> String {
    let mut cmd = Command::new("psql");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["-X", "-A", "-F,", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(pooler.connstr("postgres", "pgbouncer"))
        .arg("-c")
        .arg(sql);
    let out = cmd.output().expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn oid(letter: char) -> u32 {
    match letter {
        's' | 'T' => 25,
        'i' => 23,
        'q' => 20,
        'N' => 1700,
        'b' => 17,
        other => panic!("type letter {other}"),
    }
}

/// (name, type oid, format) of each RowDescription field.
fn row_description(m: &Msg) -> Vec<(String, u32, i16)> {
    assert_eq!(m.tag, b'T', "{m:?}");
    let b = &m.body;
    let n = i16::from_be_bytes([b[0], b[1]]) as usize;
    let mut pos = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let end = pos + b[pos..].iter().position(|&x| x == 0).unwrap();
        let name = String::from_utf8_lossy(&b[pos..end]).into_owned();
        pos = end + 1 + 6;
        let oid = u32::from_be_bytes(b[pos..pos + 4].try_into().unwrap());
        pos += 4 + 2 + 4;
        let fmt = i16::from_be_bytes([b[pos], b[pos + 1]]);
        pos += 2;
        out.push((name, oid, fmt));
    }
    out
}

#[test]
fn every_show_has_pgbouncers_columns() {
    let pooler = start();
    for (cmd, _, header) in SHOWS {
        assert_eq!(
            psql_header(&pooler, &format!("SHOW {cmd}")),
            header,
            "SHOW {cmd}"
        );
    }
    let (mut raw, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    for (cmd, letters, header) in SHOWS {
        let msgs = raw.query(&format!("show {}", cmd.to_lowercase()));
        let fields = row_description(&msgs[0]);
        let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names.join(","), header, "SHOW {cmd}");
        let oids: Vec<u32> = fields.iter().map(|f| f.1).collect();
        let want: Vec<u32> = letters.chars().map(oid).collect();
        assert_eq!(oids, want, "types of SHOW {cmd}");
        let done = &msgs[msgs.len() - 2];
        assert_eq!(
            (done.tag, done.body.as_slice()),
            (b'C', &b"SHOW\0"[..]),
            "SHOW {cmd}"
        );
    }
    // Our own listing: one row per client, the same ids as SHOW CLIENTS.
    let msgs = raw.query("SHOW CLIENT_STATS");
    let names: Vec<String> = row_description(&msgs[0]).into_iter().map(|f| f.0).collect();
    assert_eq!(
        names.join(","),
        "id,user,database,application_name,addr,port,connect_time,xact_count,query_count,bytes_received,bytes_sent,total_wait_time,total_query_time,total_xact_time"
    );
    assert!(!data_rows(&msgs).is_empty());
    let ids = |rows: Vec<Vec<Option<String>>>, col: usize| {
        let mut v: Vec<String> = rows.into_iter().map(|r| r[col].clone().unwrap()).collect();
        v.sort();
        v
    };
    // Earlier psql sessions may still be leaving: compare once the list is stable.
    let same = wait_until(Duration::from_secs(5), || {
        ids(data_rows(&raw.query("SHOW CLIENT_STATS")), 0)
            == ids(data_rows(&raw.query("SHOW CLIENTS")), 20)
    });
    assert!(same, "SHOW CLIENT_STATS ids differ from SHOW CLIENTS ids");
}

#[test]
fn help_is_pgbouncers_notice() {
    let pooler = start();
    let (mut raw, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let msgs = raw.query("SHOW HELP;");
    let tags: Vec<char> = msgs.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, ['N', 'C', 'Z'], "{msgs:?}");
    assert_eq!(msgs[0].field(b'M').as_deref(), Some("Console usage"));
    assert_eq!(msgs[0].field(b'D').as_deref(), Some(HELP_DETAIL));
    assert_eq!(msgs[0].field(b'S').as_deref(), Some("NOTICE"));
}

#[test]
fn config_lists_pgbouncers_settings() {
    let pooler = start();
    let out = pooler.admin("SHOW CONFIG").unwrap();
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    for want in CONFIG_DEFAULTS.split(';') {
        let w: Vec<&str> = want.split(',').collect();
        let row = rows
            .iter()
            .find(|r| r[0] == w[0])
            .unwrap_or_else(|| panic!("{want}"));
        assert_eq!((row[2], row[3]), (w[1], w[2]), "{}", w[0]);
    }
    let value = |k: &str| rows.iter().find(|r| r[0] == k).map(|r| r[1].to_string());
    assert_eq!(value("pool_mode").as_deref(), Some("transaction"));
    assert_eq!(value("default_pool_size").as_deref(), Some("5"));
    assert_eq!(value("auth_type").as_deref(), Some("trust"));
    assert_eq!(value("listen_port"), Some(pooler.port.to_string()));
    for ours in [
        "workers",
        "io_backend",
        "log_level",
        "metrics_addr",
        "ebpf",
        "max_client_prepared_statements",
        "server_login_concurrency",
    ] {
        assert!(value(ours).is_some(), "{ours}");
    }
    assert_eq!(rows.len(), 98 + 9);
}

#[test]
fn roles_and_errors() {
    let pg = Postgres::shared();
    pg.create_database("admin_columns_roles");
    let pooler = start();
    let stats = |sql: &str| pooler.psql(TRUST_USER, "pgbouncer", None, sql);
    assert!(stats("SHOW POOLS").is_ok());
    assert!(stats("SHOW STATS").is_ok());
    let (mut raw, _) = RawClient::login_trust(pooler.port, TRUST_USER, "pgbouncer");
    for cmd in [
        "PAUSE",
        "RESUME",
        "RELOAD",
        "KILL admin_columns_roles",
        "SET default_pool_size = 3",
    ] {
        let msgs = raw.query(cmd);
        assert_eq!(
            msgs[0].field(b'C').as_deref(),
            Some("42501"),
            "{cmd}: {msgs:?}"
        );
        let word = cmd.split_whitespace().next().unwrap();
        assert!(msgs[0].field(b'M').unwrap().contains(word), "{msgs:?}");
    }
    // A user in neither list is refused at login, with the console's SQLSTATE.
    let mut other = RawClient::connect(pooler.port);
    other.startup(MD5_USER, "pgbouncer", &[]);
    let refused = loop {
        match other.recv() {
            Some(m) if m.is_error() => break m,
            Some(_) => {}
            None => panic!("closed without an error"),
        }
    };
    assert_eq!(refused.field(b'C').as_deref(), Some("42501"), "{refused:?}");
    // Unknown commands name themselves and point at SHOW HELP.
    let msgs = raw.query("SHOW FOO");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("42601"));
    assert_eq!(
        msgs[0].field(b'M').as_deref(),
        Some("unknown command \"SHOW FOO\"; SHOW HELP lists the commands")
    );
    // Nothing of this touched PostgreSQL.
    assert_eq!(pg.backend_count("admin_columns_roles", None), 0);
}

#[test]
fn simple_and_extended_protocol_by_hand() {
    let pooler = start();
    let (mut raw, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let msgs = raw.query("SHOW VERSION; SHOW STATE");
    let tags: String = msgs.iter().map(|m| m.tag as char).collect();
    assert_eq!(tags, "TDCTDDDCZ");
    assert!(
        data_rows(&msgs)[0][0]
            .as_deref()
            .unwrap()
            .starts_with("PgBouncer 1.25.2")
    );
    assert_eq!(
        raw.query("").iter().map(|m| m.tag).collect::<Vec<_>>(),
        b"IZ"
    );
    assert_eq!(raw.query("BEGIN")[0].body, b"BEGIN\0");
    // Parse/Bind/Describe/Execute with a binary result column, then an error that skips
    // everything up to Sync.
    raw.send(&fe::parse("st", "SHOW LISTS", &[]));
    raw.send(&fe::describe(b'S', "st"));
    let mut bind = fe::bind("", "st", &[]);
    let n = bind.len();
    bind[n - 2..].copy_from_slice(&1i16.to_be_bytes());
    bind[1..5].copy_from_slice(&((n - 1 + 2) as i32).to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    raw.send(&bind);
    raw.send(&fe::describe(b'P', ""));
    raw.send(&fe::execute("", 0));
    raw.send(&fe::parse("", "PAUSE nope nope", &[]));
    raw.send(&fe::bind("", "", &[]));
    raw.send(&fe::execute("", 0));
    raw.send(&fe::sync());
    let msgs = raw.recv_until_ready();
    let tags: String = msgs.iter().map(|m| m.tag as char).collect();
    assert!(tags.starts_with("1tT2T"), "{tags}");
    assert!(tags.ends_with("CEZ"), "{tags}");
    let described = row_description(&msgs[4]);
    assert_eq!(described[1], ("items".to_string(), 23, 1));
    let first = msgs.iter().find(|m| m.tag == b'D').unwrap();
    // "items" in binary: 4-byte length 4, then a big-endian int4.
    let b = &first.body;
    let name_len = u32::from_be_bytes(b[2..6].try_into().unwrap()) as usize;
    assert_eq!(&b[6 + name_len..10 + name_len], &4i32.to_be_bytes());
    assert_eq!(msgs[msgs.len() - 2].field(b'C').as_deref(), Some("42601"));
    // A malformed message ends the session with FATAL 08P01.
    raw.send(&[b'B', 0, 0, 0, 6, 0, 0]);
    let fatal = raw.recv().expect("an error");
    assert_eq!(fatal.field(b'C').as_deref(), Some("08P01"), "{fatal:?}");
    assert_eq!(fatal.field(b'S').as_deref(), Some("FATAL"));
    assert!(raw.try_recv(Duration::from_secs(5)).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_use_the_extended_protocol() {
    let pooler = start();
    let client = pg_connect(&pooler.connstr("postgres", "pgbouncer"))
        .await
        .unwrap();
    client
        .execute("SET extra_float_digits = 3", &[])
        .await
        .unwrap();
    client
        .execute("SET application_name = 'x'", &[])
        .await
        .unwrap();
    client
        .simple_query("SET application_name = 'driver test'")
        .await
        .unwrap();
    let rows = client.query("SHOW POOLS", &[]).await.unwrap();
    let console = rows
        .iter()
        .find(|r| r.get::<_, String>("database") == "pgbouncer")
        .unwrap();
    assert_eq!(console.get::<_, i32>("cl_active"), 1);
    assert_eq!(console.get::<_, String>("pool_mode"), "statement");
    let clients = client.query("SHOW CLIENTS", &[]).await.unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(
        clients[0].get::<_, String>("application_name"),
        "driver test"
    );
    let version = client.query_one("SHOW VERSION", &[]).await.unwrap();
    assert!(
        version
            .get::<_, String>("version")
            .starts_with("PgBouncer 1.25.2")
    );
    let err = client.query("SHOW NOTHING", &[]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42601"));
    // The session is still usable after the error.
    let lists = client.query("SHOW LISTS", &[]).await.unwrap();
    assert_eq!(lists.len(), 14);
    assert_eq!(lists[0].get::<_, String>("list"), "databases");
}

#[test]
fn pipelined_queries_are_all_answered() {
    let pooler = start();
    let (mut raw, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    // Far more output than the console buffers: it must stop reading, not stall or drop.
    const N: usize = 300;
    let mut writer = raw.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let batch: Vec<u8> = (0..N).flat_map(|_| fe::query("SHOW CONFIG")).collect();
        writer.write_all(&batch).unwrap();
    });
    for i in 0..N {
        let msgs = raw.recv_until_ready();
        assert_eq!(data_rows(&msgs).len(), 107, "reply {i}");
    }
    sender.join().unwrap();
    assert_eq!(raw.query("SHOW VERSION").len(), 4);
}
