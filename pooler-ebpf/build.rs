//! Compiles bpf/pooler.bpf.c with clang into OUT_DIR for embedding; without clang (or the
//! libbpf headers) the crate still builds, empty, and the loader says why at run time.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=POOLER_EBPF_CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("pooler.bpf.o");
    let clang = env::var("POOLER_EBPF_CLANG").unwrap_or_else(|_| "clang".to_string());
    // Watch the toolchain too, so installing clang or libbpf-dev after a build without
    // them rebuilds the object (a path that does not exist yet always counts as changed).
    println!("cargo:rerun-if-changed={}", find_in_path(&clang).display());
    println!("cargo:rerun-if-changed=/usr/include/bpf/bpf_helpers.h");
    let status = match build_object(&clang, &object) {
        Ok(()) => "built".to_string(),
        Err(why) => {
            println!("cargo:warning=pooler-ebpf: {why}; the pooler is built without kernel stats");
            fs::write(&object, b"").expect("write the empty object");
            why
        }
    };
    println!("cargo:rustc-env=POOLER_EBPF_BUILD={status}");
    write_layout(&clang, &out);
}

/// Where `program` would be run from: the first PATH entry holding it, else the usual
/// place (watched for its appearance).
fn find_in_path(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    env::var_os("PATH")
        .and_then(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| Path::new("/usr/bin").join(program))
}

/// Ok when the object was written; Err(reason) when the toolchain is missing. A C error
/// with the toolchain present fails the build: a broken program must not ship silently.
fn build_object(clang: &str, object: &Path) -> Result<(), String> {
    if Command::new(clang).arg("--version").output().is_err() {
        return Err("clang missing at build time".to_string());
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    // asm/types.h lives in the multiarch directory, which -target bpf does not search.
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let result = Command::new(clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "bpf/pooler.bpf.c", "-o"])
        .arg(object)
        .output()
        .map_err(|e| format!("cannot run {clang}: {e}"))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        if stderr.contains("bpf/bpf_helpers.h") && stderr.contains("not found") {
            return Err("libbpf-dev headers missing at build time".to_string());
        }
        panic!("clang failed on bpf/pooler.bpf.c:\n{stderr}");
    }
    // Debug info is needed only as BTF; `-g` on strip keeps .BTF and .BTF.ext.
    for strip in ["llvm-strip", "llvm-strip-14"] {
        if Command::new(strip)
            .arg("-g")
            .arg(object)
            .status()
            .is_ok_and(|s| s.success())
        {
            break;
        }
    }
    Ok(())
}

/// OUT_DIR/layout.rs: the C compiler's offsets and sizes of common.h, for the layout test.
fn write_layout(clang: &str, out: &Path) {
    let exe = out.join("layout");
    let none = "pub const C_LAYOUT: Option<&[(&str, usize)]> = None;\n".to_string();
    let generated = Command::new(clang)
        .args(["-O0", "-Ibpf", "bpf/layout.c", "-o"])
        .arg(&exe)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| Command::new(&exe).output().ok())
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    fs::write(out.join("layout.rs"), generated.unwrap_or(none)).expect("write layout.rs");
}
