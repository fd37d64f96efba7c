//! SHOW KERNEL_CLIENTS and KERNEL_SERVERS: what the kernel counted for each live TCP
//! connection (eBPF, keyed by socket cookie), with the pooler's `id` of SHOW CLIENTS /
//! SHOW SERVERS (NULL for a connection not logged in yet).

use super::result::{Cell, Column, Kind, Row};
use crate::kernel::ConnRow;

/// The columns, in order; `id` first so the row lines up with SHOW CLIENTS by eye.
pub struct KernelSocketRow(pub ConnRow);

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

impl Row for KernelSocketRow {
    const COLUMNS: &'static [Column] = &[
        col("id", Kind::Int8),
        col("cookie", Kind::Numeric),
        col("addr", Kind::Text),
        col("port", Kind::Int4),
        col("local_port", Kind::Int4),
        col("connect_time", Kind::Time),
        col("tcp_state", Kind::Text),
        col("srtt_us", Kind::Numeric),
        col("rtt_samples", Kind::Numeric),
        col("retransmits", Kind::Numeric),
        col("bytes_received", Kind::Numeric),
        col("bytes_acked", Kind::Numeric),
        col("segs_in", Kind::Numeric),
        col("segs_out", Kind::Numeric),
        col("requests", Kind::Numeric),
        col("avg_latency_us", Kind::Numeric),
        col("max_latency_us", Kind::Numeric),
    ];

    fn cells(self) -> Vec<Cell> {
        let r = self.0;
        vec![
            r.id.map_or(Cell::Null, |id| {
                Cell::Int(i64::try_from(id).unwrap_or(i64::MAX))
            }),
            Cell::UInt(r.cookie),
            Cell::Text(r.addr),
            Cell::Int(r.port.into()),
            Cell::Int(r.local_port.into()),
            Cell::Time(r.connect_time),
            Cell::Text(r.state.to_string()),
            Cell::UInt(r.srtt_us),
            Cell::UInt(r.rtt_samples),
            Cell::UInt(r.retransmits),
            Cell::UInt(r.bytes_received),
            Cell::UInt(r.bytes_acked),
            Cell::UInt(r.segs_in),
            Cell::UInt(r.segs_out),
            Cell::UInt(r.requests),
            Cell::UInt(r.avg_latency_us),
            Cell::UInt(r.max_latency_us),
        ]
    }
}

/// Rows for the listing; none when eBPF is off (the NOTICE says why).
pub fn rows(kernel_rows: Result<Vec<ConnRow>, String>) -> Vec<KernelSocketRow> {
    kernel_rows
        .unwrap_or_default()
        .into_iter()
        .map(KernelSocketRow)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::result::ResultSet;

    #[test]
    fn cells_follow_columns() {
        let row = ConnRow {
            id: None,
            cookie: 9,
            addr: "127.0.0.1".into(),
            port: 5000,
            local_port: 6432,
            connect_time: 0,
            state: "ESTAB",
            srtt_us: 1,
            rtt_samples: 2,
            retransmits: 3,
            bytes_received: 4,
            bytes_acked: 5,
            segs_in: 6,
            segs_out: 7,
            requests: 8,
            avg_latency_us: 9,
            max_latency_us: 10,
        };
        let set = ResultSet::of(rows(Ok(vec![row])));
        assert_eq!(set.rows[0].len(), KernelSocketRow::COLUMNS.len());
        assert_eq!(set.text(0, "id"), None);
        assert_eq!(set.text(0, "retransmits").as_deref(), Some("3"));
        assert_eq!(set.text(0, "max_latency_us").as_deref(), Some("10"));
        assert!(rows(Err("off".into())).is_empty());
    }
}
