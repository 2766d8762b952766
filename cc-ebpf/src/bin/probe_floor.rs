//! An empty BTF tracepoint program on `tcp_probe`: the floor `cargo xtask bench probes`
//! measures the node's `tcp_probe` against in the same runs (what attaching any program to
//! the tracepoint costs per event, run-time accounting included). Not part of the product: the
//! node attaches it only with the benchmark's hidden `--bench-probe-floor`.
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

cc_ebpf::license!();

#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}
