//! Kernel-side stats (eBPF) and privileges: without capabilities `ebpf = "auto"` logs one
//! line and serves anyway (the console answers a NOTICE), `ebpf = "on"` refuses to start;
//! a non-root user holding CAP_BPF + CAP_NET_ADMIN (as config/pooler.service grants) gets
//! them; `ebpf_pin_path` pins the maps for bpftool while the pooler runs.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The pooler binary run under a wrapper (setpriv, sh), which the harness's Pooler cannot do.
struct Wrapped {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Wrapped {
    /// Starts `wrapper... pooler -c CONFIG` with `extra` appended to [pooler]; the files are
    /// world-readable so an unprivileged user can read them.
    fn start(wrapper: &[&str], extra: &str) -> Wrapped {
        let pg = Postgres::shared();
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let port = free_port();
        let config = TRUST_TRANSACTION_CONFIG
            .replace("{port}", &port.to_string())
            .replace("{unix_dir}", "")
            .replace("{pg_host}", &pg.host)
            .replace("{pg_port}", &pg.port.to_string())
            .replace(
                "default_pool_size = 5",
                &format!("default_pool_size = 5\n{extra}"),
            );
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config).expect("write config");
        fs::set_permissions(&config_path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let log = dir.path().join("pooler.log");
        let log_file = fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_pooler"))
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file);
        let child = cmd.spawn().expect("spawn the wrapped pooler");
        Wrapped {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it listens (true) or exits (false).
    fn listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn exit_status(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- wrapped pooler log ---\n{}", self.log());
        }
    }
}

const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    "--",
];

fn notices(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.tag == b'N')
        .filter_map(|m| m.field(b'M'))
        .collect()
}

#[test]
fn without_capabilities_auto_logs_one_line_and_serves() {
    let pg = Postgres::shared();
    pg.create_database("ebpf_unprivileged");
    let mut pooler = Wrapped::start(&AS_NOBODY, "");
    assert!(pooler.listening(), "did not start:\n{}", pooler.log());
    let (mut client, _) = RawClient::login_trust(pooler.port, TRUST_USER, "ebpf_unprivileged");
    let msgs = client.query("SELECT 41 + 1");
    assert_eq!(data_rows(&msgs), vec![vec![Some("42".to_string())]]);

    let log = pooler.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kernel stats off"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one line about eBPF:\n{log}");
    assert!(
        lines[0].contains("missing CAP_BPF and CAP_NET_ADMIN"),
        "{}",
        lines[0]
    );

    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    for cmd in [
        "SHOW KERNEL_CLIENTS",
        "SHOW KERNEL_SERVERS",
        "SHOW KERNEL_LATENCY",
    ] {
        let msgs = console.query(cmd);
        assert!(!msgs.iter().any(Msg::is_error), "{cmd}: {msgs:?}");
        let n = notices(&msgs);
        assert!(
            n.len() == 1 && n[0].starts_with("kernel stats are off: missing CAP_BPF"),
            "{cmd}: {n:?}"
        );
        assert!(data_rows(&msgs).is_empty(), "{cmd}");
    }
    let msgs = console.query("SHOW KERNEL_STATS");
    assert_eq!(notices(&msgs).len(), 1);
    let row = &data_rows(&msgs)[0];
    assert_eq!(row[0].as_deref(), Some("no"), "active: {row:?}");
    assert!(
        row[1].as_deref().unwrap_or("").contains("CAP_BPF"),
        "reason: {row:?}"
    );
}

#[test]
fn without_capabilities_on_refuses_to_start() {
    let mut pooler = Wrapped::start(&AS_NOBODY, "ebpf = \"on\"");
    let status = pooler
        .exit_status(Duration::from_secs(15))
        .expect("it must exit");
    assert!(!status.success());
    let log = pooler.log();
    assert!(
        log.contains("ebpf = \"on\" but the kernel stats cannot run: missing CAP_BPF"),
        "{log}"
    );
}

/// A cgroup made for one test, like systemd makes one per service; removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let mount = pooler_ebpf::cgroup::cgroup2_mount().expect("a cgroup2 mount");
        let dir = mount.join(format!("{name}-{}", std::process::id()));
        fs::create_dir(&dir).expect("create test cgroup");
        TestCgroup(dir)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn capabilities_without_root_suffice() {
    if !kernel_allows() {
        return;
    }
    let pg = Postgres::shared();
    pg.create_database("ebpf_capabilities");
    let cgroup = TestCgroup::new("pooler-ebpf-test");
    // Enter the cgroup as root, then become nobody keeping only two capabilities
    // (what config/pooler.service does with AmbientCapabilities=).
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec \"$@\"",
        cgroup.0.display()
    );
    // The minimum: the programs use no helper that needs CAP_PERFMON.
    let caps = "+bpf,+net_admin";
    let wrapper = [
        "sh",
        "-c",
        &script,
        "sh",
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        "--",
    ];
    let mut pooler = Wrapped::start(&wrapper, "ebpf = \"on\"");
    assert!(pooler.listening(), "did not start:\n{}", pooler.log());
    let (mut console, _) = RawClient::login_trust(pooler.port, "postgres", "pgbouncer");
    let stats = console.query("SHOW KERNEL_STATS");
    let row = &data_rows(&stats)[0];
    assert_eq!(row[0].as_deref(), Some("yes"), "{row:?}");
    let name = cgroup.0.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert_eq!(
        row[2].as_deref(),
        Some(format!("/{name}").as_str()),
        "{row:?}"
    );
    let (mut client, _) = RawClient::login_trust(pooler.port, TRUST_USER, "ebpf_capabilities");
    assert!(!client.query("SELECT 1").iter().any(Msg::is_error));
    let msgs = console.query("SHOW KERNEL_CLIENTS");
    assert_eq!(data_rows(&msgs).len(), 2, "the console and the client");
    drop(pooler);
}

/// A bpffs mounted for one test; unmounted on drop.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn mount() -> Option<Bpffs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Bpffs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn pinned_maps_are_readable_while_running_and_removed_at_exit() {
    if !kernel_allows() {
        return;
    }
    let Some(bpffs) = Bpffs::mount() else {
        eprintln!("SKIPPED: the kernel refuses to mount a bpffs here");
        return;
    };
    let pins = bpffs.path().join("pooler");
    let config = TRUST_TRANSACTION_CONFIG.replace(
        "default_pool_size = 5",
        &format!(
            "default_pool_size = 5\nebpf = \"on\"\nebpf_pin_path = \"{}\"",
            pins.display()
        ),
    );
    let mut pooler = Pooler::start(&config);
    for map in [
        "pooler_conns",
        "pooler_globals",
        "pooler_latency",
        "pooler_buckets",
        "pooler_closed_ring",
    ] {
        assert!(pins.join(map).exists(), "{map} is not pinned");
    }
    if let Ok(out) = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pins.join("pooler_globals"))
        .output()
    {
        assert!(out.status.success(), "bpftool: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("client_established"),
            "BTF names the fields: {text}"
        );
    } else {
        eprintln!("bpftool not installed: checked the pins exist only");
    }
    pooler.signal(libc::SIGINT);
    assert!(pooler.wait_exit(Duration::from_secs(15)).is_some());
    assert!(!pins.join("pooler_conns").exists(), "pins left behind");
}
