//! The table of SHOW listings: each name with its columns (for Describe) and the function
//! computing its rows, plus the names the parser resolves against it.

use super::{
    parse::{Command, Names},
    result::{Column, Kind, ResultSet, Row},
    show_config, show_databases, show_kernel_latency, show_kernel_sockets, show_kernel_stats,
    show_misc, show_pools, show_sockets,
    show_stats::{self, Stats},
    snapshot::Snapshot,
};
use crate::app::App;

/// One SHOW listing: its columns (for Describe) and how to compute its rows.
pub struct ShowEntry {
    pub name: &'static str,
    pub columns: &'static [Column],
    pub run: fn(&App) -> ResultSet,
}

fn snap(app: &App) -> Snapshot {
    Snapshot::take(app)
}

fn stats(app: &App) -> Stats {
    Stats {
        totals: app.periodic.totals(app),
        averages: app.periodic.averages(),
    }
}

/// Every SHOW listing. HELP has no columns: it answers with a NOTICE only.
pub const SHOWS: &[ShowEntry] = &[
    ShowEntry {
        name: "HELP",
        columns: &[],
        run: |_| ResultSet::of::<show_misc::VersionRow>(Vec::new()),
    },
    ShowEntry {
        name: "CONFIG",
        columns: show_config::ConfigRow::COLUMNS,
        run: |app| ResultSet::of(show_config::rows(&app.config())),
    },
    ShowEntry {
        name: "DATABASES",
        columns: show_databases::DatabaseRow::COLUMNS,
        run: |app| ResultSet::of(show_databases::databases(&snap(app))),
    },
    ShowEntry {
        name: "POOLS",
        columns: show_pools::PoolRow::COLUMNS,
        run: |app| ResultSet::of(show_pools::rows(&snap(app))),
    },
    ShowEntry {
        name: "CLIENTS",
        columns: show_sockets::SocketRow::COLUMNS,
        run: |app| ResultSet::of(show_sockets::clients(&snap(app))),
    },
    ShowEntry {
        name: "SERVERS",
        columns: show_sockets::SocketRow::COLUMNS,
        run: |app| ResultSet::of(show_sockets::servers(&snap(app))),
    },
    ShowEntry {
        name: "USERS",
        columns: show_databases::UserRow::COLUMNS,
        run: |app| ResultSet::of(show_databases::users(&snap(app))),
    },
    ShowEntry {
        name: "VERSION",
        columns: show_misc::VersionRow::COLUMNS,
        run: |_| ResultSet::of(show_misc::version()),
    },
    ShowEntry {
        name: "PEERS",
        columns: show_misc::PeerRow::COLUMNS,
        run: |_| ResultSet::of::<show_misc::PeerRow>(Vec::new()),
    },
    ShowEntry {
        name: "PEER_POOLS",
        columns: show_misc::PeerPoolRow::COLUMNS,
        run: |_| ResultSet::of::<show_misc::PeerPoolRow>(Vec::new()),
    },
    ShowEntry {
        name: "FDS",
        columns: show_misc::FdRow::COLUMNS,
        run: |_| ResultSet::of::<show_misc::FdRow>(Vec::new()),
    },
    ShowEntry {
        name: "SOCKETS",
        columns: show_sockets::SocketDebugRow::COLUMNS,
        run: |app| ResultSet::of(show_sockets::all_sockets(&snap(app))),
    },
    ShowEntry {
        name: "ACTIVE_SOCKETS",
        columns: show_sockets::SocketDebugRow::COLUMNS,
        run: |app| ResultSet::of(show_sockets::active_sockets(&snap(app))),
    },
    ShowEntry {
        name: "LISTS",
        columns: show_misc::ListRow::COLUMNS,
        run: |app| ResultSet::of(show_misc::lists(&snap(app))),
    },
    ShowEntry {
        name: "MEM",
        columns: show_misc::MemRow::COLUMNS,
        run: |app| ResultSet::of(show_misc::mem(&snap(app))),
    },
    ShowEntry {
        name: "STATE",
        columns: show_misc::KeyValueRow::COLUMNS,
        run: |app| ResultSet::of(show_misc::state(&snap(app))),
    },
    ShowEntry {
        name: "DNS_HOSTS",
        columns: show_misc::DnsHostRow::COLUMNS,
        run: |_| ResultSet::of::<show_misc::DnsHostRow>(Vec::new()),
    },
    ShowEntry {
        name: "DNS_ZONES",
        columns: show_misc::DnsZoneRow::COLUMNS,
        run: |_| ResultSet::of::<show_misc::DnsZoneRow>(Vec::new()),
    },
    ShowEntry {
        name: "STATS",
        columns: show_stats::StatsRow::COLUMNS,
        run: |app| ResultSet::of(show_stats::stats(&stats(app))),
    },
    ShowEntry {
        name: "STATS_TOTALS",
        columns: show_stats::TotalsRow::COLUMNS,
        run: |app| ResultSet::of(show_stats::stats_totals(&stats(app))),
    },
    ShowEntry {
        name: "STATS_AVERAGES",
        columns: show_stats::AveragesRow::COLUMNS,
        run: |app| ResultSet::of(show_stats::stats_averages(&stats(app))),
    },
    ShowEntry {
        name: "TOTALS",
        columns: show_stats::NameValueRow::COLUMNS,
        run: |app| ResultSet::of(show_stats::totals(&stats(app))),
    },
    ShowEntry {
        name: "CLIENT_STATS",
        columns: show_stats::ClientStatsRow::COLUMNS,
        run: |app| ResultSet::of(show_stats::client_stats(&snap(app))),
    },
    // Kernel-side statistics (eBPF); when it is off, `commands` adds a NOTICE saying why.
    ShowEntry {
        name: "KERNEL_CLIENTS",
        columns: show_kernel_sockets::KernelSocketRow::COLUMNS,
        run: |app| ResultSet::of(show_kernel_sockets::rows(app.kernel.clients(app))),
    },
    ShowEntry {
        name: "KERNEL_SERVERS",
        columns: show_kernel_sockets::KernelSocketRow::COLUMNS,
        run: |app| ResultSet::of(show_kernel_sockets::rows(app.kernel.servers(app))),
    },
    ShowEntry {
        name: "KERNEL_STATS",
        columns: show_kernel_stats::KernelStatsRow::COLUMNS,
        run: |app| ResultSet::of(show_kernel_stats::rows(app)),
    },
    ShowEntry {
        name: "KERNEL_LATENCY",
        columns: show_kernel_latency::KernelLatencyRow::COLUMNS,
        run: |app| ResultSet::of(show_kernel_latency::rows(app.kernel.latency())),
    },
];

pub fn show_entry(name: &str) -> Option<&'static ShowEntry> {
    SHOWS.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// The names the parser resolves.
pub const NAMES: Names = Names {
    show: |n| show_entry(n).map(|e| e.name),
    param: show_misc::param_name,
    setting: show_config::is_setting,
};

/// The columns a command will return (Describe), without running it; None = no rows.
pub fn describe(cmd: &Command) -> Option<Vec<Column>> {
    match cmd {
        Command::Show("HELP") => None,
        Command::Show(n) => show_entry(n).map(|e| e.columns.to_vec()),
        Command::Param(n) => Some(vec![Column {
            name: n,
            kind: Kind::Text,
        }]),
        _ => None,
    }
}
