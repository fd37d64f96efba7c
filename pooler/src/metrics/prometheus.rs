//! /metrics in Prometheus' text exposition format (0.0.4): the encoder, the page, and our
//! own `pooler_*` families (the exporter-compatible ones are in `exporter.rs`).

use std::fmt::Write;

use super::exporter;
use crate::{admin::snapshot::Snapshot, app::App};

/// Builds the text, one family at a time (the format wants each family's samples together).
pub(super) struct Out(pub String);

pub(super) type Labels<'a> = [(&'a str, &'a str)];

impl Out {
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &Labels<'_>, value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    /// A family with one sample per row.
    pub fn rows<R>(
        &mut self,
        (name, help, kind): (&str, &str, &str),
        rows: &[R],
        labels: impl Fn(&R) -> Vec<(&'static str, String)>,
        value: impl Fn(&R) -> f64,
    ) {
        self.family(name, help, kind);
        for r in rows {
            let owned = labels(r);
            let l: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &l, value(r));
        }
    }
}

pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The whole page.
pub(super) fn render(app: &App) -> String {
    let snap = Snapshot::take(app);
    let mut out = Out(String::with_capacity(16 * 1024));
    exporter::families(&mut out, app, &snap);
    pooler_families(&mut out, app);
    super::kernel::families(&mut out, app);
    out.0
}

/// Ours: per-pool wait histograms and per-worker counters.
fn pooler_families(out: &mut Out, app: &App) {
    out.family(
        "pooler_build_info",
        "The pooler's version (always 1)",
        "gauge",
    );
    out.sample(
        "pooler_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let name = "pooler_pool_wait_seconds";
    out.family(
        name,
        "Time clients queued for a server connection before getting one, per pool",
        "histogram",
    );
    for p in app.pools.all() {
        let h = p.wait_hist.snapshot();
        let (db, user) = (p.key.db.as_str(), p.key.user.as_str());
        for (le, n) in &h.buckets {
            let le = number(*le);
            let labels = [("database", db), ("le", le.as_str()), ("user", user)];
            out.sample(&format!("{name}_bucket"), &labels, *n as f64);
        }
        let inf = [("database", db), ("le", "+Inf"), ("user", user)];
        out.sample(&format!("{name}_bucket"), &inf, h.count as f64);
        let labels = [("database", db), ("user", user)];
        out.sample(&format!("{name}_sum"), &labels, h.sum_seconds);
        out.sample(&format!("{name}_count"), &labels, h.count as f64);
    }
    let workers: Vec<(String, &crate::metrics::WorkerStats)> = app
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| (i.to_string(), w))
        .collect();
    let name = "pooler_worker_accepted_connections_total";
    out.family(
        name,
        "Client connections accepted by each worker thread",
        "counter",
    );
    for (i, w) in &workers {
        out.sample(name, &[("worker", i)], w.accepted() as f64);
    }
    let name = "pooler_worker_sessions";
    out.family(
        name,
        "Client connections each worker thread serves now",
        "gauge",
    );
    for (i, w) in &workers {
        out.sample(name, &[("worker", i)], w.sessions() as f64);
    }
    let name = "pooler_recv_ring_fallbacks_total";
    out.family(
        name,
        "Client receives that found the provided-buffer ring empty and used a buffer of their own (recv_ring_buffers too small if it keeps rising)",
        "counter",
    );
    out.sample(name, &[], crate::net::ring::fallbacks() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        let mut out = Out(String::new());
        out.family("m", "a\\b\nc", "gauge");
        out.sample("m", &[("l", "q\"u\\o\nte")], 0.5);
        out.sample("m", &[], f64::INFINITY);
        assert_eq!(
            out.0,
            "# HELP m a\\\\b\\nc\n# TYPE m gauge\nm{l=\"q\\\"u\\\\o\\nte\"} 0.5\nm +Inf\n"
        );
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.000064), "0.000064");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
