//! Shared by tests/metrics.rs and tests/metrics_exporter.rs: a strict parser of Prometheus'
//! text exposition format (0.0.4), rejecting what Prometheus would reject and what it
//! tolerates but a well-made exporter does not emit (interleaved families, duplicate series,
//! broken histograms), and plain HTTP requests to the monitoring listener.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::TRUST_TRANSACTION_CONFIG;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Family {
    pub help: Option<String>,
    pub kind: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The value of series `name{labels}` (name as written, e.g. with `_bucket`).
    pub fn value(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && &s.labels == labels)
            .map(|s| s.value)
    }

    /// Sum over every series of a family.
    pub fn sum(&self, family: &str) -> f64 {
        self.families
            .get(family)
            .map_or(0.0, |f| f.samples.iter().map(|s| s.value).sum())
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `name{k="v",...} value [timestamp]`.
fn sample(line: &str) -> Result<Sample, String> {
    let end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..end];
    if !valid_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        loop {
            let Some(&(i, c)) = chars.peek() else {
                return Err("unterminated labels".into());
            };
            if c == '}' {
                rest = &r[i + 1..];
                break;
            }
            let eq = r[i..].find('=').ok_or("label without =")? + i;
            let key = &r[i..eq];
            if !valid_name(key, false) {
                return Err(format!("bad label name {key:?}"));
            }
            if !r[eq + 1..].starts_with('"') {
                return Err("label value not quoted".into());
            }
            while chars.peek().is_some_and(|&(j, _)| j <= eq + 1) {
                chars.next();
            }
            let mut val = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => val.push('\\'),
                        Some('"') => val.push('"'),
                        Some('n') => val.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some('\n') | None => return Err("unterminated label value".into()),
                    Some(c) => val.push(c),
                }
            }
            if labels.insert(key.to_string(), val).is_some() {
                return Err(format!("label {key} twice"));
            }
            if chars.peek().map(|&(_, c)| c) == Some(',') {
                chars.next();
            }
        }
    }
    let mut parts = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let v = value(parts.next().ok_or("no value")?)?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: v,
    })
}

/// The family a sample belongs to: its own name, or the histogram/summary it is part of.
fn family_of(families: &BTreeMap<String, Family>, name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families
                .get(base)
                .is_some_and(|f| matches!(f.kind.as_deref(), Some("histogram" | "summary")))
        {
            return base.to_string();
        }
    }
    name.to_string()
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut e = Exposition::default();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current = String::new();
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(c) = line.strip_prefix("# ") {
            let mut w = c.splitn(3, ' ');
            let (kw, name, rest) = (w.next(), w.next().unwrap_or(""), w.next().unwrap_or(""));
            if !matches!(kw, Some("HELP" | "TYPE")) {
                continue;
            }
            if !valid_name(name, true) || done.contains(name) {
                return Err(at("bad or repeated family".into()));
            }
            let f = e.families.entry(name.to_string()).or_default();
            if kw == Some("HELP") {
                if f.help.replace(rest.replace("\\n", "\n")).is_some() {
                    return Err(at("second HELP".into()));
                }
            } else if !f.samples.is_empty()
                || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest)
                || f.kind.replace(rest.to_string()).is_some()
            {
                return Err(at("bad, late or second TYPE".into()));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let s = sample(line).map_err(at)?;
        let fam = family_of(&e.families, &s.name);
        if fam != current {
            if done.contains(&fam) {
                return Err(at(format!("family {fam} interleaved with another")));
            }
            done.insert(std::mem::replace(&mut current, fam.clone()));
        }
        if !series.insert((s.name.clone(), s.labels.clone())) {
            return Err(at("duplicate series".into()));
        }
        e.families.entry(fam).or_default().samples.push(s);
    }
    for (name, f) in &e.families {
        if f.kind.as_deref() == Some("histogram") {
            check_histogram(name, f)?;
        }
    }
    Ok(e)
}

/// Buckets cumulative and ending in +Inf, which equals _count, per label set.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in f.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut l = s.labels.clone();
        let le = value(&l.remove("le").ok_or(format!("{name}: bucket without le"))?)?;
        groups.entry(l).or_default().push((le, s.value));
    }
    for (l, buckets) in groups {
        let ordered = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let last = buckets.last().copied().unwrap_or((0.0, 0.0));
        let count = f
            .samples
            .iter()
            .find(|s| s.name == format!("{name}_count") && s.labels == l)
            .map(|s| s.value);
        if !ordered || last.0 != f64::INFINITY || count != Some(last.1) {
            return Err(format!(
                "{name}{l:?}: bad buckets {buckets:?} / count {count:?}"
            ));
        }
    }
    Ok(())
}

/// TRUST_TRANSACTION_CONFIG with /metrics on `mport` and `dbs` added under [databases].
pub fn config(mport: u16, dbs: &str) -> String {
    TRUST_TRANSACTION_CONFIG
        .replace(
            "[pooler]\n",
            &format!("[pooler]\nmetrics_addr = \"127.0.0.1:{mport}\"\nworkers = 2\n"),
        )
        .replace("[databases]\n", &format!("[databases]\n{dbs}\n"))
}

/// Sends `request` as is; (status, body) of the answer.
pub fn http_raw(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics_addr");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, body.to_string())
}

pub fn get(port: u16, path: &str) -> (u16, String) {
    http_raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

pub fn scrape(port: u16) -> Exposition {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    parse(&body).unwrap_or_else(|e| panic!("/metrics is not valid exposition text: {e}\n{body}"))
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
