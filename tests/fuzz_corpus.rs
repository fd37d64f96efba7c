//! The fuzz targets' regression corpus (pooler/fuzz/corpus/<target>/*) run as plain tests through the same target bodies, without libFuzzer.

#[path = "../pooler/fuzz/targets.rs"]
mod targets;

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs every file of one target's corpus; each input gets 10 s (a hang is a finding too).
fn run_corpus(target: &'static str, body: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: corpus too small", dir.display());
    for file in files {
        let data = fs::read(&file).unwrap();
        let (tx, rx) = mpsc::channel();
        let name = file.display().to_string();
        let worker = thread::Builder::new()
            .name(format!("{target}:{name}"))
            .stack_size(8 << 20)
            .spawn(move || {
                body(&data);
                let _ = tx.send(());
            })
            .unwrap();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = worker.join();
                panic!("fuzz target {target} panicked on {name}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("fuzz target {target} ran over 10 s on {name}")
            }
        }
    }
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let on_disk: Vec<String> = fs::read_dir(corpus_dir(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for (name, _) in targets::TARGETS {
        assert!(on_disk.iter().any(|d| d == name), "no corpus for {name}");
    }
    for d in &on_disk {
        assert!(
            targets::TARGETS.iter().any(|(n, _)| n == d),
            "corpus/{d} belongs to no target"
        );
    }
}

#[test]
fn startup_corpus() {
    run_corpus("startup", targets::startup);
}

#[test]
fn frame_corpus() {
    run_corpus("frame", targets::frame);
}

#[test]
fn scram_corpus() {
    run_corpus("scram", targets::scram);
}

#[test]
fn config_corpus() {
    run_corpus("config", targets::config);
}

#[test]
fn client_stream_corpus() {
    run_corpus("client_stream", targets::client_stream);
}
