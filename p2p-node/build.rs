//! Builds the eBPF objects in `cc-ebpf/` and places them in `OUT_DIR` for `include_bytes!`.
//!
//! 1. Generates `kernel_layout.rs` from this machine's kernel BTF: the eBPF programs are compiled
//!    against it and the loader embeds it to verify the running kernel at load time.
//! 2. Runs `cargo build --release --target bpfel-unknown-none -Z build-std=core` in `cc-ebpf/`
//!    with the toolchain `cc-ebpf/rust-toolchain.toml` names (nightly + rust-src) and bpf-linker.
//!    `cargo xtask setup` installs both when missing.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use cc_ebpf_common::{btf, layout};

/// The eBPF objects, one per binary in `cc-ebpf/src/bin/`.
const OBJECTS: &[&str] = &["probes", "bbr_p2p", "reno_rs"];

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
        "cc-ebpf/build.rs",
        "cc-ebpf-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-changed={}", btf::VMLINUX_BTF);

    let kernel_btf = btf::Btf::from_sys_fs().context("generating the kernel layout")?;
    let layout_file = out_dir.join("kernel_layout.rs");
    fs::write(
        &layout_file,
        layout::generate(&kernel_btf, btf::VMLINUX_BTF)?,
    )?;

    build_ebpf(
        &ebpf_dir,
        &root.join("target").join("cc-ebpf"),
        &layout_file,
    )?;
    let built = root.join("target/cc-ebpf/bpfel-unknown-none/release");
    for object in OBJECTS {
        let from = built.join(object);
        fs::copy(&from, out_dir.join(format!("{object}.bpf.o")))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

fn build_ebpf(ebpf_dir: &Path, target_dir: &Path, layout_file: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ebpf_dir)
        .args([
            "build",
            "--release",
            "--bins",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env("P2PCC_KERNEL_LAYOUT", layout_file);
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
