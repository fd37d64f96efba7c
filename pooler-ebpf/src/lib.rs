//! Kernel-side socket statistics for the pooler: the C programs in bpf/ (built by build.rs
//! and embedded), the `#[repr(C)]` types they share with userspace, and the aya loader
//! that attaches them to the pooler's cgroup and reads their maps.
//!
//! Maps: `pooler_conns` (hash, socket cookie -> [`Conn`], live connections only),
//! `pooler_globals` (per-CPU [`Globals`]), `pooler_latency` (per-CPU [`types::Latency`]:
//! count and sum, client side then server side), `pooler_buckets` (per-CPU u64: the log2
//! histogram, client side's [`HIST_BUCKETS`] then the server side's) and
//! `pooler_closed_ring` (ring buffer of [`Closed`] records: the kernel deletes a
//! connection's entry when it closes and leaves its final figures there for the pooler to
//! harvest).

pub mod cgroup;
mod privilege;
pub mod types;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SockOps},
};

pub use types::{Closed, Conn, Globals, HIST_BUCKETS, Hist};

/// The compiled object, empty when the build had no clang.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pooler.bpf.o"));

/// "built", or why the object is missing.
const BUILD_STATUS: &str = env!("POOLER_EBPF_BUILD");

const MAP_CONNS: &str = "pooler_conns";
const MAP_GLOBALS: &str = "pooler_globals";
const MAP_LATENCY: &str = "pooler_latency";
const MAP_BUCKETS: &str = "pooler_buckets";
const MAP_CLOSED: &str = "pooler_closed_ring";
const PROG_SOCKOPS: &str = "pooler_sockops";
const PROG_INGRESS: &str = "pooler_ingress";
const PROG_EGRESS: &str = "pooler_egress";

/// Why the programs are not running, as one line for the log and SHOW KERNEL_STATS.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("eBPF object not built ({0})")]
    NotBuilt(&'static str),
    /// A capability is missing (EPERM); the message names it.
    #[error("{0}")]
    Privilege(String),
    /// The verifier refused a program (EACCES/EINVAL): a bug in the program or a kernel
    /// without a feature it uses, not a privilege problem.
    #[error("{0}")]
    Rejected(String),
    /// No cgroup v2 to attach to, or the pooler cannot get a cgroup of its own.
    #[error("{0}")]
    Cgroup(String),
    #[error("{0}")]
    Other(String),
}

/// What the loader is asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Turn on the RTT callback (it fires on nearly every ACK).
    pub rtt_sampling: bool,
    /// Connections accepted on this local port are not tracked (the monitoring
    /// listener); 0 = none.
    pub ignored_port: u16,
    /// Capacity of the live-connection map.
    pub max_connections: u32,
    /// Pin the maps in this bpffs directory.
    pub pin_path: Option<PathBuf>,
}

/// The loaded and attached programs with their maps. Dropping it detaches everything,
/// removes the pins and leaves the child cgroup if one was made.
pub struct Loaded {
    conns: HashMap<MapData, u64, Conn>,
    globals: PerCpuArray<MapData, Globals>,
    latency: PerCpuArray<MapData, types::Latency>,
    buckets: PerCpuArray<MapData, u64>,
    closed: RingBuf<MapData>,
    pinned: Vec<PathBuf>,
    max_connections: u32,
    // Declared after the maps and before the placement: fields drop in order, and the
    // links must go before the process leaves the cgroup they are attached to.
    _ebpf: Ebpf,
    placement: cgroup::Placement,
}

/// Whether the build embedded the object ("built", or the reason it did not).
pub fn build_status() -> &'static str {
    BUILD_STATUS
}

fn check_built() -> Result<(), LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NotBuilt(BUILD_STATUS));
    }
    Ok(())
}

/// Refuses early, naming the capability, rather than letting a map creation fail with
/// a bare EPERM.
fn check_privileges() -> Result<(), LoadError> {
    let missing = privilege::missing(privilege::effective());
    if missing.is_empty() {
        return Ok(());
    }
    Err(LoadError::Privilege(format!(
        "missing {} (needed to create eBPF maps and load sockops/cgroup_skb programs): \
         run as root or grant the capabilities (AmbientCapabilities= in config/pooler.service)",
        missing.join(" and ")
    )))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// EPERM although the capabilities are held: something above them said no.
fn eperm(what: &str) -> LoadError {
    let caps = privilege::effective();
    let mut m = format!("{what} refused with EPERM");
    if privilege::missing(caps).is_empty() {
        m.push_str(
            " although CAP_BPF and CAP_NET_ADMIN are held (kernel lockdown or a security module?)",
        );
        if !privilege::has_perfmon(caps) {
            m.push_str("; CAP_PERFMON is not held either");
        }
    } else {
        m.push_str(&format!(
            ": missing {}",
            privilege::missing(caps).join(" and ")
        ));
    }
    LoadError::Privilege(m)
}

fn from_program(name: &str, e: ProgramError) -> LoadError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match errno(&io_error) {
            libc::EPERM => eperm(&format!("loading {name}")),
            code => {
                // The verifier ends with statistics; the reason is the line before them.
                let log = verifier_log.to_string();
                let stats = [
                    "verification time",
                    "stack depth",
                    "processed ",
                    "max_states",
                ];
                let tail = log
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s)))
                    .unwrap_or("(no verifier log)");
                let kind = if code == libc::EACCES {
                    "EACCES is a verifier rejection, not a missing privilege"
                } else {
                    "a verifier or kernel rejection"
                };
                LoadError::Rejected(format!(
                    "the kernel rejected program {name} ({io_error}; {kind}): {tail}"
                ))
            }
        },
        ProgramError::SyscallError(s) if errno(&s.io_error) == libc::EPERM => {
            eperm(&format!("{} for {name}", s.call))
        }
        other => LoadError::Other(format!("program {name}: {other}")),
    }
}

fn from_ebpf(e: EbpfError) -> LoadError {
    match e {
        EbpfError::MapError(MapError::CreateError { name, io_error })
            if errno(&io_error) == libc::EPERM =>
        {
            eperm(&format!("creating map {name}"))
        }
        EbpfError::ProgramError(p) => from_program("?", p),
        other => LoadError::Other(format!("loading the eBPF object: {other}")),
    }
}

fn open_object(opts: &Options) -> Result<Ebpf, LoadError> {
    let rtt = u8::from(opts.rtt_sampling);
    let mut loader = EbpfLoader::new();
    loader.override_global("rtt_sampling", &rtt, true);
    loader.override_global("ignored_port", &opts.ignored_port, true);
    if opts.max_connections > 0 {
        loader.map_max_entries(MAP_CONNS, opts.max_connections);
    }
    let mut ebpf = loader.load(OBJECT).map_err(from_ebpf)?;
    for name in [PROG_SOCKOPS, PROG_INGRESS, PROG_EGRESS] {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::Other(format!("program {name} missing from the object")))?;
        let loaded = match name {
            PROG_SOCKOPS => <&mut SockOps>::try_from(prog).and_then(|p| p.load()),
            _ => <&mut CgroupSkb>::try_from(prog).and_then(|p| p.load()),
        };
        loaded.map_err(|e| from_program(name, e))?;
    }
    Ok(ebpf)
}

/// Can this process load the programs at all? Loads them without attaching anything,
/// for tests that must skip where the kernel refuses.
pub fn probe() -> Result<(), LoadError> {
    check_built()?;
    check_privileges()?;
    open_object(&Options::default()).map(drop)
}

fn attach(ebpf: &mut Ebpf, dir: &Path) -> Result<(), LoadError> {
    let cgroup = fs::File::open(dir)
        .map_err(|e| LoadError::Cgroup(format!("cannot open {}: {e}", dir.display())))?;
    let missing = |name: &str| LoadError::Other(format!("program {name} missing from the object"));
    let sockops = ebpf
        .program_mut(PROG_SOCKOPS)
        .ok_or_else(|| missing(PROG_SOCKOPS))?;
    <&mut SockOps>::try_from(sockops)
        .and_then(|p| p.attach(&cgroup, CgroupAttachMode::Single))
        .map_err(|e| from_program(PROG_SOCKOPS, e))?;
    for (name, kind) in [
        (PROG_INGRESS, CgroupSkbAttachType::Ingress),
        (PROG_EGRESS, CgroupSkbAttachType::Egress),
    ] {
        let prog = ebpf.program_mut(name).ok_or_else(|| missing(name))?;
        <&mut CgroupSkb>::try_from(prog)
            .and_then(|p| p.attach(&cgroup, kind, CgroupAttachMode::Single))
            .map_err(|e| from_program(name, e))?;
    }
    Ok(())
}

/// Pins the maps as `<dir>/<map name>`, replacing pins a previous run left behind.
fn pin_maps(ebpf: &Ebpf, dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    fs::create_dir_all(dir)
        .map_err(|e| LoadError::Other(format!("ebpf_pin_path {}: {e}", dir.display())))?;
    let mut pinned = Vec::new();
    for name in [MAP_CONNS, MAP_GLOBALS, MAP_LATENCY, MAP_BUCKETS, MAP_CLOSED] {
        let path = dir.join(name);
        let _ = fs::remove_file(&path);
        let map = ebpf
            .map(name)
            .ok_or_else(|| LoadError::Other(format!("map {name} missing from the object")))?;
        if let Err(e) = map.pin(&path) {
            for p in &pinned {
                let _ = fs::remove_file(p);
            }
            return Err(LoadError::Other(format!(
                "cannot pin {name} at {} (is it on a bpffs mount?): {e}",
                path.display()
            )));
        }
        pinned.push(path);
    }
    Ok(pinned)
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, LoadError> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| LoadError::Other(format!("map {name} missing from the object")))?;
    convert(map).map_err(|e| LoadError::Other(format!("map {name}: {e}")))
}

/// Loads the programs, moves the process into its own cgroup if needed, and attaches
/// there. Call before creating any socket the statistics should cover.
pub fn load(opts: &Options) -> Result<Loaded, LoadError> {
    check_built()?;
    check_privileges()?;
    let mut ebpf = open_object(opts)?;
    let placement = cgroup::place().map_err(|e| LoadError::Cgroup(e.to_string()))?;
    attach(&mut ebpf, &placement.dir)?;
    let pinned = match &opts.pin_path {
        Some(dir) => pin_maps(&ebpf, dir)?,
        None => Vec::new(),
    };
    let max_connections = ebpf
        .map(MAP_CONNS)
        .and_then(|m| match m {
            aya::maps::Map::HashMap(d) => d.info().ok().map(|i| i.max_entries()),
            _ => None,
        })
        .unwrap_or(opts.max_connections);
    Ok(Loaded {
        conns: take(&mut ebpf, MAP_CONNS, HashMap::try_from)?,
        globals: take(&mut ebpf, MAP_GLOBALS, PerCpuArray::try_from)?,
        latency: take(&mut ebpf, MAP_LATENCY, PerCpuArray::try_from)?,
        buckets: take(&mut ebpf, MAP_BUCKETS, PerCpuArray::try_from)?,
        closed: take(&mut ebpf, MAP_CLOSED, RingBuf::try_from)?,
        pinned,
        max_connections,
        _ebpf: ebpf,
        placement,
    })
}

impl Loaded {
    /// The cgroup v2 path attached to ("/pooler-1234").
    pub fn cgroup(&self) -> &str {
        &self.placement.path
    }

    /// Why the figures may include sockets that are not the pooler's, if they may.
    pub fn warning(&self) -> Option<&str> {
        self.placement.warning.as_deref()
    }

    /// Capacity of the live-connection map.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Where the maps are pinned (empty when not pinned).
    pub fn pinned(&self) -> &[PathBuf] {
        &self.pinned
    }

    /// The global counters, summed over CPUs.
    pub fn globals(&self) -> Result<Globals, String> {
        let per_cpu = self.globals.get(&0, 0).map_err(|e| e.to_string())?;
        let mut sum = Globals::default();
        for g in per_cpu.iter() {
            sum.add(g);
        }
        Ok(sum)
    }

    /// The client-side and server-side latency histograms, summed over CPUs (a syscall per
    /// bucket: for the console).
    pub fn histograms(&self) -> Result<[Hist; 2], String> {
        let sum = |per_cpu: aya::maps::PerCpuValues<u64>| per_cpu.iter().sum::<u64>();
        let mut out = [Hist::default(); 2];
        for (side, slot) in [types::HIST_CLIENT, types::HIST_SERVER]
            .into_iter()
            .zip(out.iter_mut())
        {
            let per_cpu = self.latency.get(&side, 0).map_err(|e| e.to_string())?;
            for l in per_cpu.iter() {
                slot.count += l.count;
                slot.sum_ns += l.sum_ns;
            }
            for (b, bucket) in slot.buckets.iter_mut().enumerate() {
                let index = side * HIST_BUCKETS as u32 + b as u32;
                *bucket = sum(self.buckets.get(&index, 0).map_err(|e| e.to_string())?);
            }
        }
        Ok(out)
    }

    /// Every live connection (cookie, figures). Two syscalls per entry: for the console,
    /// not for a hot path. Entries that vanish while iterating are skipped.
    pub fn connections(&self) -> Vec<(u64, Conn)> {
        self.conns.iter().filter_map(Result::ok).collect()
    }

    /// Hands every close record waiting in the ring buffer to `f`; returns how many.
    /// Reading the ring is a memory access, no syscall.
    pub fn drain_closed(&mut self, mut f: impl FnMut(&Closed)) -> usize {
        let mut n = 0;
        while let Some(item) = self.closed.next() {
            if item.len() >= size_of::<Closed>() {
                // SAFETY: the record holds at least size_of::<Closed>() bytes written by
                // the kernel as a struct pooler_closed; Closed is Pod and read unaligned.
                let rec = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Closed>()) };
                f(&rec);
                n += 1;
            }
        }
        n
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        for p in &self.pinned {
            let _ = fs::remove_file(p);
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns(), to age kernel timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    fn assert_send<T: Send>() {}

    #[test]
    fn loaded_can_move_between_threads() {
        assert_send::<super::Loaded>();
    }
}
