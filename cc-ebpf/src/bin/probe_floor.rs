//! The floor `cargo xtask bench probes` measures the node's `tcp_probe` against, and the
//! pieces of the probes' per-event path measured one at a time, each a BTF tracepoint program
//! on `tcp_probe` attached beside the probes (so every program runs on the same events; the
//! kernel's run-time accounting is in each): the empty program (the floor: what attaching any
//! program to the tracepoint costs per event); one load of `sk->sk_bpf_storage` (the foreign
//! sockets' whole path); one cheap helper call (`bpf_skc_to_tcp_sock`); one socket-storage
//! lookup without create (`bpf_sk_storage_get` on a map of this object: sockets hold no entry of
//! it, so it is a lookup that misses after walking the socket's storage list, never a create).
//! Each returns what it computed so nothing is optimised away. Not part of the product: the node
//! attaches them only with the benchmark's hidden `--bench-probe-floor`.
#![no_std]
#![no_main]

use aya_ebpf::{
    btf_maps::SkStorage,
    helpers::generated::{bpf_sk_storage_get, bpf_skc_to_tcp_sock},
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use cc_ebpf::kernel::{KernelPtr, SOCK__SK_BPF_STORAGE};

cc_ebpf::license!();

/// Never written: every lookup misses. Socket storage is bounded by the sockets that carry it
/// (`max_entries` must be 0 for this map type), and this map creates none.
#[btf_map]
static DIAG_STORAGE: SkStorage<u64> = SkStorage::new();

type Sk = *mut core::ffi::c_void;

#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// One field load: `sk->sk_bpf_storage` compared with null.
#[btf_tracepoint(function = "tcp_probe")]
pub fn diag_load(ctx: BtfTracePointContext) -> i32 {
    let sk: Sk = ctx.arg(0);
    // SAFETY: `sk` is the tracepoint's BTF-typed `struct sock *`; the member is a pointer,
    // only compared with null.
    i32::from(unsafe { KernelPtr::new(sk).u64(SOCK__SK_BPF_STORAGE) } != 0)
}

/// One helper call that does almost nothing: the typed `tcp_sock` cast.
#[btf_tracepoint(function = "tcp_probe")]
pub fn diag_helper(ctx: BtfTracePointContext) -> i32 {
    let sk: Sk = ctx.arg(0);
    // SAFETY: the helper takes any BTF-typed socket and returns a `tcp_sock *` or null.
    i32::from(!unsafe { bpf_skc_to_tcp_sock(sk) }.is_null())
}

/// One socket-storage lookup without create (always a miss, see the module note).
#[btf_tracepoint(function = "tcp_probe")]
pub fn diag_storage(ctx: BtfTracePointContext) -> i32 {
    let sk: Sk = ctx.arg(0);
    // SAFETY: a socket-storage map of u64 values; `sk` is a BTF-typed socket; flags 0 never
    // create.
    let value = unsafe {
        bpf_sk_storage_get(
            core::ptr::from_ref(&DIAG_STORAGE).cast_mut().cast(),
            sk.cast(),
            core::ptr::null_mut(),
            0,
        )
    };
    i32::from(!value.is_null())
}
