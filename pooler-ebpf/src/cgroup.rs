//! Where the programs attach: the pooler's own cgroup v2 directory, or a child made for it
//! when that directory holds other processes (the root cgroup above all, which would make
//! the programs see every socket on the host).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Prefix of the child cgroups the pooler creates for itself: `pooler-<pid>`.
const CHILD_PREFIX: &str = "pooler-";

/// The cgroup the programs are attached to, and how to undo what was done to get there.
#[derive(Debug)]
pub struct Placement {
    /// The directory attached to.
    pub dir: PathBuf,
    /// The cgroup v2 path as /proc/self/cgroup spells it ("/pooler-123").
    pub path: String,
    /// Set when we created `dir` and moved the process into it: the cgroup to return to.
    created_under: Option<PathBuf>,
    /// A reason the figures may include other processes' sockets, to log once.
    pub warning: Option<String>,
}

/// Mount point of the cgroup v2 hierarchy, from /proc/self/mounts (fs type cgroup2).
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    parse_mounts(&mounts).ok_or_else(|| io::Error::other("no cgroup2 file system is mounted"))
}

fn parse_mounts(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(dir)))
    })
}

/// /proc/self/mounts writes spaces and the like as \ooo octal escapes.
fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The process's cgroup v2 path: the "0::/path" line of /proc/self/cgroup.
pub fn own_cgroup() -> io::Result<String> {
    let text = fs::read_to_string("/proc/self/cgroup")?;
    parse_own_cgroup(&text)
        .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))
}

fn parse_own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

/// Whether `dir` holds processes other than us, or child cgroups (which the programs
/// would see too, attached above them).
fn is_shared(dir: &Path, me: u32) -> io::Result<bool> {
    let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
    if procs
        .lines()
        .any(|l| l.trim().parse::<u32>().is_ok_and(|p| p != me))
    {
        return Ok(true);
    }
    for entry in fs::read_dir(dir)? {
        if entry?.file_type()?.is_dir() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes `pooler-<pid>` children left by poolers that died without cleaning up (a
/// SIGKILL); rmdir fails harmlessly on one still in use.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CHILD_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// Finds (or makes) the cgroup to attach to. Must run before any socket the programs
/// should see is created: a socket stays in the cgroup it was created in.
pub fn place() -> io::Result<Placement> {
    let mount = cgroup2_mount()?;
    let own = own_cgroup()?;
    let dir = mount.join(own.trim_start_matches('/'));
    let me = std::process::id();
    let is_root = own == "/";
    if !is_root && !is_shared(&dir, me)? {
        return Ok(Placement {
            dir,
            path: own,
            created_under: None,
            warning: None,
        });
    }
    match make_child(&dir, me) {
        Ok(child) => {
            let path = format!("{}/{CHILD_PREFIX}{me}", own.trim_end_matches('/'));
            Ok(Placement {
                dir: child,
                path,
                created_under: Some(dir),
                warning: None,
            })
        }
        // Attaching to the root would count every socket of the host: refuse.
        Err(e) if is_root => Err(io::Error::new(
            e.kind(),
            format!(
                "the pooler runs in the root cgroup and cannot move into its own child cgroup under {}: {e}",
                dir.display()
            ),
        )),
        Err(e) => Ok(Placement {
            warning: Some(format!(
                "cgroup {own} holds other processes and a child cgroup could not be made ({e}): their TCP sockets are counted too"
            )),
            dir,
            path: own,
            created_under: None,
        }),
    }
}

fn make_child(parent: &Path, me: u32) -> io::Result<PathBuf> {
    sweep_stale(parent);
    let child = parent.join(format!("{CHILD_PREFIX}{me}"));
    match fs::create_dir(&child) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Moves every thread of the process; sockets created from now on belong to `child`.
    if let Err(e) = fs::write(child.join("cgroup.procs"), me.to_string()) {
        let _ = fs::remove_dir(&child);
        return Err(e);
    }
    Ok(child)
}

impl Placement {
    /// Moves the process back and removes the child cgroup, if one was made.
    pub fn undo(&mut self) {
        if let Some(parent) = self.created_under.take() {
            let _ = fs::write(parent.join("cgroup.procs"), std::process::id().to_string());
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_among_v1_ones() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            parse_mounts(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_mounts("proc /proc proc rw 0 0\n"), None);
        assert_eq!(
            parse_mounts("none /mnt/my\\040cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/my cg"))
        );
    }

    #[test]
    fn reads_the_v2_line_of_proc_self_cgroup() {
        let text = "4:memory:/x\n1:cpu:/\n0::/system.slice/pooler.service\n";
        assert_eq!(
            parse_own_cgroup(text).as_deref(),
            Some("/system.slice/pooler.service")
        );
        assert_eq!(parse_own_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(parse_own_cgroup("1:cpu:/\n"), None);
    }
}
