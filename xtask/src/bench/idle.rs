//! Idle memory: N clients that complete the startup (trust) and sit idle; RSS per idle client =
//! (RSS with N clients - RSS idle) / N, for our pooler and for PgBouncer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::json::{IdleResult, IdleTarget};
use super::sys;
use super::targets::{Env, Target};

/// Opens a connection and completes the startup as postgres/postgres (trust): returns it once
/// ReadyForQuery has arrived.
pub fn login(port: u16) -> Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for part in ["user", "postgres", "database", "postgres", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend(body);
    s.write_all(&msg).context("send the startup message")?;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).context("read a message header")?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            bail!("bad message length {len}");
        }
        let mut payload = vec![0u8; len - 4];
        s.read_exact(&mut payload).context("read a message")?;
        match head[0] {
            b'R' if payload.get(..4) != Some(&[0, 0, 0, 0]) => {
                bail!("the server asks for authentication (trust expected)")
            }
            b'E' => bail!(
                "error at login: {}",
                String::from_utf8_lossy(&payload).replace('\0', " ")
            ),
            b'Z' => return Ok(s),
            _ => {}
        }
    }
}

/// `clients` logins from `threads` threads; the connections and the first error, if any.
fn open_many(port: u16, clients: u32, threads: u32) -> (Vec<TcpStream>, Option<String>) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let n = clients / threads + u32::from(t < clients % threads);
            std::thread::spawn(move || {
                let mut conns = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    match login(port) {
                        Ok(c) => conns.push(c),
                        Err(e) => return (conns, Some(format!("{e:#}"))),
                    }
                }
                (conns, None)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut error = None;
    for h in handles {
        let (conns, e) = h
            .join()
            .unwrap_or_else(|_| (Vec::new(), Some("panic".into())));
        all.extend(conns);
        error = error.or(e);
    }
    (all, error)
}

/// Measures each target with `clients` idle clients; failures become notes.
pub fn measure(env: &Env, clients: u32, notes: &mut Vec<String>) -> IdleResult {
    let mut result = IdleResult {
        clients,
        targets: Vec::new(),
    };
    let mut targets = vec![Target::PgBouncer];
    targets.extend(
        env.variants()
            .into_iter()
            .filter(|v| v.name == "us" || v.name == "us-epoll")
            .map(Target::Us),
    );
    for target in targets {
        let name = target.name();
        println!("-- idle memory: {name}, {clients} clients");
        match measure_one(env, &target, clients) {
            Ok(t) => {
                println!(
                    "   RSS idle {:.1} MB, with {} clients {:.1} MB: {:.0} bytes per client",
                    t.rss_idle_kb as f64 / 1024.0,
                    t.connected,
                    t.rss_loaded_kb as f64 / 1024.0,
                    t.bytes_per_client
                );
                result.targets.push(t);
            }
            Err(e) => {
                let note = format!("idle memory, {name}: {e:#}");
                eprintln!("   {note}");
                notes.push(note);
            }
        }
    }
    result
}

fn measure_one(env: &Env, target: &Target, clients: u32) -> Result<IdleTarget> {
    let mut server = env
        .start(target, clients + 100)?
        .context("a pooler target")?;
    let pid = server.pid();
    // One login first: the pooler connects its first server and caches its parameters.
    drop(login(server.port)?);
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle_kb = sys::status_kb(pid, "VmRSS").context("VmRSS")?;
    let (conns, error) = open_many(server.port, clients, 4);
    std::thread::sleep(Duration::from_secs(2));
    let rss_loaded_kb = sys::status_kb(pid, "VmRSS").context("VmRSS (the pooler died?)")?;
    let connected = conns.len() as u32;
    drop(conns);
    server.stop();
    if let Some(e) = error {
        bail!(
            "only {connected} of {clients} clients logged in ({e}); log:\n{}",
            crate::tail(&server.log, 10)
        );
    }
    Ok(IdleTarget {
        name: target.name(),
        connected,
        rss_idle_kb,
        rss_loaded_kb,
        bytes_per_client: (rss_loaded_kb as f64 - rss_idle_kb as f64) * 1024.0
            / f64::from(connected),
    })
}
