//! Provides `kernel_layout.rs`: the offsets of the kernel fields the programs touch.
//!
//! When built by `p2p-node` the layout comes from `P2PCC_KERNEL_LAYOUT` (the same file the loader
//! verifies against the running kernel); built alone, it is generated from this machine's BTF.

use std::{env, fs, path::PathBuf};

use cc_ebpf_common::{btf::Btf, layout};

fn main() {
    println!("cargo:rerun-if-env-changed=P2PCC_KERNEL_LAYOUT");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernel_layout.rs");
    let code = match env::var("P2PCC_KERNEL_LAYOUT") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
        }
        _ => {
            let btf = Btf::from_sys_fs().unwrap_or_else(|e| panic!("{e}"));
            layout::generate(&btf, cc_ebpf_common::btf::VMLINUX_BTF).unwrap_or_else(|e| panic!("{e}"))
        }
    };
    fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
