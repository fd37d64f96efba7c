//! Process and machine accounting from /proc, child processes with a deadline and their rusage.

use std::ffi::CString;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Clock ticks per second of the utime/stime fields of /proc (USER_HZ).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The fields after the command name of /proc/PID/stat (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // The state is a letter: keep a placeholder so that indexes stay the man page's minus 3.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// (utime, stime) of a process (all its threads) in µs; None when it is gone.
pub fn process_cpu_split_us(pid: u32) -> Option<(f64, f64)> {
    let f = stat_fields(pid)?;
    let k = 1e6 / ticks_per_sec();
    Some((*f.get(11)? as f64 * k, *f.get(12)? as f64 * k))
}

/// A kB field of /proc/PID/status (VmRSS, VmHWM, ...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The postmaster's pid, from the first line of postmaster.pid.
pub fn postmaster_pid(data_dir: &Path) -> Result<u32> {
    let text =
        std::fs::read_to_string(data_dir.join("postmaster.pid")).context("read postmaster.pid")?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("postmaster.pid has no pid")
}

/// CPU of a PostgreSQL instance in µs: the postmaster's own and reaped children's time plus the
/// live children's, and the number of live children.
pub fn postgres_cpu_us(postmaster: u32) -> (f64, usize) {
    let hz = ticks_per_sec();
    let mut ticks = stat_fields(postmaster)
        .map(|f| f[11..15].iter().sum::<u64>())
        .unwrap_or(0);
    let mut children = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(f) = stat_fields(pid)
                && f.get(1) == Some(&(postmaster as u64))
            {
                ticks += f[11] + f[12];
                children += 1;
            }
        }
    }
    (ticks as f64 * 1e6 / hz, children)
}

/// (busy, total) CPU time of the whole machine in µs, from the first line of /proc/stat.
pub fn machine_cpu_us() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let k = 1e6 / ticks_per_sec();
    ((total - idle) as f64 * k, total as f64 * k)
}

/// How a child ended, with its CPU time (user + sys, µs) from wait4's rusage.
pub struct Ended {
    pub code: Option<i32>,
    pub timed_out: bool,
    pub cpu_us: f64,
    pub wall: Duration,
}

/// Waits for `child` with wait4, killing it (SIGKILL) after `limit`.
pub fn wait_with_deadline(child: Child, limit: Duration) -> Result<Ended> {
    let pid = child.id() as libc::pid_t;
    let started = Instant::now();
    let mut timed_out = false;
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage owned by this frame; pid is our own unreaped child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        let rc = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if rc == pid {
            let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
            return Ok(Ended {
                code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
                timed_out,
                cpu_us: tv(usage.ru_utime) + tv(usage.ru_stime),
                wall: started.elapsed(),
            });
        }
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                bail!("wait4({pid}): {e}");
            }
        }
        if !timed_out && started.elapsed() > limit {
            timed_out = true;
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Raise the open-files limit (soft and hard; the hard one only as root) to `want`.
/// Children inherit it: PgBouncer, the pooler and pgbench.
pub fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let mut new = lim;
        new.rlim_max = lim.rlim_max.max(want);
        new.rlim_cur = want.min(new.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
            new.rlim_max = lim.rlim_max;
            new.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &new);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// uid/gid of a local account.
pub fn account(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: NUL-terminated name; the fields are copied out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    // SAFETY: pw is checked for null and points to getpwnam's static buffer.
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// SIGTERM, up to `grace` for an exit, then SIGKILL; always reaps.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill on our own unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The first line of a command's output, or "" (for version strings).
pub fn first_line_of(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// "2026-05-01T12:34:56Z" and "20260501-123456" for the current UTC time.
pub fn utc_now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        format!("{y:04}{m:02}{d:02}-{h:02}{mi:02}{s:02}"),
    )
}
