//! SHOW KERNEL_STATS: the kernel programs' global counters in one row, whether they run and
//! why not; and the NOTICE every SHOW KERNEL_* command adds when they do not run.

use super::{
    commands::Notice,
    result::{Cell, Column, Kind, Row},
};
use crate::{app::App, kernel::StatsRow};

pub struct KernelStatsRow(pub StatsRow);

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

impl Row for KernelStatsRow {
    const COLUMNS: &'static [Column] = &[
        col("active", Kind::Text),
        col("reason", Kind::Text),
        col("cgroup", Kind::Text),
        col("rtt_sampling", Kind::Text),
        col("client_established", Kind::Numeric),
        col("server_established", Kind::Numeric),
        col("client_closed", Kind::Numeric),
        col("server_closed", Kind::Numeric),
        col("tracked", Kind::Numeric),
        col("capacity", Kind::Numeric),
        col("retransmits", Kind::Numeric),
        col("rtt_samples", Kind::Numeric),
        col("client_requests", Kind::Numeric),
        col("server_requests", Kind::Numeric),
        col("dup_requests", Kind::Numeric),
        col("map_full", Kind::Numeric),
        col("ring_full", Kind::Numeric),
        col("harvested", Kind::Numeric),
        col("bytes_received", Kind::Numeric),
        col("bytes_acked", Kind::Numeric),
        col("avg_client_latency_us", Kind::Numeric),
        col("avg_server_latency_us", Kind::Numeric),
        col("avg_overhead_us", Kind::Int8),
    ];

    fn cells(self) -> Vec<Cell> {
        let r = self.0;
        let yes_no = |b: bool| Cell::Text(if b { "yes" } else { "no" }.to_string());
        vec![
            yes_no(r.active),
            Cell::Text(r.reason),
            Cell::Text(r.cgroup),
            yes_no(r.rtt_sampling),
            Cell::UInt(r.client_established),
            Cell::UInt(r.server_established),
            Cell::UInt(r.client_closed),
            Cell::UInt(r.server_closed),
            Cell::UInt(r.tracked),
            Cell::UInt(r.capacity),
            Cell::UInt(r.retransmits),
            Cell::UInt(r.rtt_samples),
            Cell::UInt(r.client_requests),
            Cell::UInt(r.server_requests),
            Cell::UInt(r.dup_requests),
            Cell::UInt(r.map_full),
            Cell::UInt(r.ring_full),
            Cell::UInt(r.harvested),
            Cell::UInt(r.bytes_received),
            Cell::UInt(r.bytes_acked),
            Cell::UInt(r.avg_client_latency_us),
            Cell::UInt(r.avg_server_latency_us),
            Cell::Int(r.avg_overhead_us),
        ]
    }
}

pub fn rows(app: &App) -> Vec<KernelStatsRow> {
    vec![KernelStatsRow(app.kernel.stats())]
}

/// The NOTICE a SHOW KERNEL_* command answers with when eBPF is off: a notice, not an
/// error, so scripts polling the console keep working on hosts without eBPF.
pub fn notices(show_name: &str, app: &App) -> Vec<Notice> {
    if !show_name.starts_with("KERNEL_") {
        return Vec::new();
    }
    match app.kernel.off_reason() {
        None => Vec::new(),
        Some(reason) => vec![Notice {
            message: format!("kernel stats are off: {reason}"),
            detail: Some(
                "They need eBPF: ebpf = \"auto\" or \"on\" in [pooler], and root or CAP_BPF + \
                 CAP_NET_ADMIN (see config/pooler.service)."
                    .to_string(),
            ),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::result::ResultSet;

    #[test]
    fn off_row_says_why() {
        let set = ResultSet::of(vec![KernelStatsRow(StatsRow {
            reason: "missing CAP_BPF".into(),
            ..Default::default()
        })]);
        assert_eq!(set.rows[0].len(), KernelStatsRow::COLUMNS.len());
        assert_eq!(set.text(0, "active").as_deref(), Some("no"));
        assert_eq!(set.text(0, "reason").as_deref(), Some("missing CAP_BPF"));
        assert_eq!(set.text(0, "avg_overhead_us").as_deref(), Some("0"));
    }
}
