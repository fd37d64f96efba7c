//! SHOW KERNEL_LATENCY: request -> first-reply-byte latency measured in the kernel, as log2
//! histograms for the client side and the server side, then summary rows (requests, avg,
//! p50, p90, p99) whose `overhead_us` is client minus server: the pooler's own share.

use super::result::{Cell, Column, Kind, Row};
use crate::kernel::LatencyRow;

pub struct KernelLatencyRow(pub LatencyRow);

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

impl Row for KernelLatencyRow {
    const COLUMNS: &'static [Column] = &[
        col("bucket", Kind::Text),
        col("lower_us", Kind::Numeric),
        col("upper_us", Kind::Numeric),
        col("client", Kind::Numeric),
        col("server", Kind::Numeric),
        col("overhead_us", Kind::Int8),
    ];

    fn cells(self) -> Vec<Cell> {
        let r = self.0;
        let opt = |v: Option<u64>| v.map_or(Cell::Null, Cell::UInt);
        vec![
            Cell::Text(r.bucket),
            opt(r.lower_us),
            opt(r.upper_us),
            Cell::UInt(r.client),
            Cell::UInt(r.server),
            r.overhead_us.map_or(Cell::Null, Cell::Int),
        ]
    }
}

/// Rows for the listing; none when eBPF is off (the NOTICE says why).
pub fn rows(kernel_rows: Result<Vec<LatencyRow>, String>) -> Vec<KernelLatencyRow> {
    kernel_rows
        .unwrap_or_default()
        .into_iter()
        .map(KernelLatencyRow)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::result::ResultSet;

    #[test]
    fn summary_rows_have_no_bounds() {
        let set = ResultSet::of(rows(Ok(vec![LatencyRow {
            bucket: "avg_us".into(),
            lower_us: None,
            upper_us: None,
            client: 50_400,
            server: 50_100,
            overhead_us: Some(300),
        }])));
        assert_eq!(set.text(0, "lower_us"), None);
        assert_eq!(set.text(0, "overhead_us").as_deref(), Some("300"));
        assert!(rows(Err("off".into())).is_empty());
    }
}
