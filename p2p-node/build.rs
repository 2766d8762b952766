//! Builds the eBPF objects in `cc-ebpf/` and places them in `OUT_DIR` for `include_bytes!`.
//!
//! Runs `cargo build --release --target bpfel-unknown-none -Z build-std=core` in `cc-ebpf/`
//! (and `cargo rustc` for an object built for another BPF CPU version, see [`OBJECTS`])
//! with the toolchain `cc-ebpf/rust-toolchain.toml` names (nightly + rust-src) and bpf-linker.
//! `cargo xtask setup` installs both when missing. Nothing here depends on the build machine's
//! kernel: the loader fills the programs' kernel layout table from the running kernel's BTF.
//!
//! It also copies uPlot (`web/node_modules/uplot/dist`, pinned by `web/package-lock.json` and
//! installed by `cargo xtask setup`) into `OUT_DIR` for the live pages; without it, a script that
//! makes the pages say how to install it, and a build warning.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// What the live pages show instead of charts when uPlot was not installed before the build.
const UPLOT_MISSING_JS: &str = "window.UPLOT_MISSING = 'uPlot is not installed: run `cargo xtask setup` \
(npm ci in web/), then rebuild p2p-node.';\n";

/// uPlot's script and style sheet into `OUT_DIR` (`uplot.js`, `uplot.css`).
fn web_assets(root: &Path, out_dir: &Path) -> anyhow::Result<()> {
    let dist = root.join("web/node_modules/uplot/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("web/package-lock.json").display()
    );
    let js = fs::read_to_string(dist.join("uPlot.iife.min.js"));
    let css = fs::read_to_string(dist.join("uPlot.min.css"));
    let (js, css) = match (js, css) {
        (Ok(js), Ok(css)) => (js, css),
        _ => {
            println!(
                "cargo:warning=uPlot not found in {}: the live pages will show no charts; run `cargo xtask setup`",
                dist.display()
            );
            (UPLOT_MISSING_JS.to_owned(), String::new())
        }
    };
    fs::write(out_dir.join("uplot.js"), js)?;
    fs::write(out_dir.join("uplot.css"), css)?;
    Ok(())
}

/// The eBPF objects, one per binary in `cc-ebpf/src/bin/`, each with the BPF CPU version it is
/// compiled for (`None`: LLVM's default, v1).
///
/// `bbr_p2p` is built for v3 (32-bit ALU operations and jumps: no shift pairs to zero-extend
/// each 32-bit result, 7% fewer instructions in `cong_control`), which every kernel that runs
/// it has (v3 since Linux 5.1; struct_ops congestion controls need 6.1). Its per-ACK cost is set
/// by the length of the path it executes (docs/bench.md, "per-ACK cost: a cost ladder"). The
/// probes stay v1: built for v3 they failed the QEMU tier's probe checks on Linux 6.1.
const OBJECTS: &[(&str, Option<&str>)] = &[
    ("probes", None),
    ("bbr_p2p", Some("v3")),
    ("reno_rs", None),
    ("probe_floor", None),
];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("p2p-node sits in the workspace")?;
    let ebpf_dir = root.join("cc-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    for path in [
        "cc-ebpf/src",
        "cc-ebpf/Cargo.toml",
        "cc-ebpf/Cargo.lock",
        "cc-ebpf-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let target_dir = root.join("target").join("cc-ebpf");
    let default_cpu: Vec<&str> = OBJECTS
        .iter()
        .filter(|(_, cpu)| cpu.is_none())
        .map(|(name, _)| *name)
        .collect();
    build_ebpf(&ebpf_dir, &target_dir, &default_cpu, None)?;
    for (name, cpu) in OBJECTS {
        if let Some(cpu) = cpu {
            build_ebpf(&ebpf_dir, &target_dir, &[name], Some(cpu))?;
        }
    }
    web_assets(root, &out_dir)?;
    let built = root.join("target/cc-ebpf/bpfel-unknown-none/release");
    for (object, _) in OBJECTS {
        let from = built.join(object);
        fs::copy(&from, out_dir.join(format!("{object}.bpf.o")))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// Builds the binaries `bins` of cc-ebpf; with a `cpu`, one binary through `cargo rustc` with
/// `-C target-cpu` (a flag of the final crate: with LTO the whole object is generated there).
fn build_ebpf(
    ebpf_dir: &Path,
    target_dir: &Path,
    bins: &[&str],
    cpu: Option<&str>,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ebpf_dir)
        .arg(if cpu.is_some() { "rustc" } else { "build" })
        .args([
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    if let Some(cpu) = cpu {
        cmd.arg("--").arg(format!("-Ctarget-cpu={cpu}"));
    }
    // The outer cargo's settings must not leak into the nested nightly build: the toolchain comes
    // from cc-ebpf/rust-toolchain.toml, the flags from cc-ebpf/.cargo/config.toml.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().context(
        "running `cargo` for cc-ebpf: is rustup's cargo on PATH? (`cargo xtask setup` installs what the eBPF build needs)",
    )?;
    if !status.success() {
        if which("bpf-linker").is_none() {
            bail!("building cc-ebpf failed: bpf-linker is not on PATH; run `cargo xtask setup`");
        }
        bail!("building cc-ebpf failed ({status}); see the compiler output above");
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
