//! Which capabilities the process holds, so a refusal can name the one that is missing.

use std::fs;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set (CapEff of /proc/self/status); 0 when unreadable.
pub fn effective() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// The capabilities the programs need and `caps` lacks: CAP_BPF for maps and programs,
/// CAP_NET_ADMIN for sockops/cgroup_skb and the cgroup attach. CAP_SYS_ADMIN covers both.
pub fn missing(caps: u64) -> Vec<&'static str> {
    if has(caps, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !has(caps, CAP_BPF) {
        out.push("CAP_BPF");
    }
    if !has(caps, CAP_NET_ADMIN) {
        out.push("CAP_NET_ADMIN");
    }
    out
}

/// Whether CAP_PERFMON is held (only worth mentioning when everything else is).
pub fn has_perfmon(caps: u64) -> bool {
    has(caps, CAP_PERFMON) || has(caps, CAP_SYS_ADMIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_NET_ADMIN"]);
        assert_eq!(missing(1 << CAP_BPF), vec!["CAP_NET_ADMIN"]);
        assert!(missing((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)).is_empty());
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
        let status = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert!(missing(0x1ff_ffff_ffff).is_empty());
    }
}
