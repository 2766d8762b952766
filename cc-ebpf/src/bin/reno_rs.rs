//! `p2pcc_reno`: TCP Reno as a Rust struct_ops `tcp_congestion_ops`.
//!
//! The smallest complete congestion control: the fixture that proves the struct_ops path
//! (program sections, kfunc calls resolved against vmlinux BTF, reads and writes of `tcp_sock`
//! at generated offsets, registration) independently of the BBR variant. It follows
//! `net/ipv4/tcp_cong.c`: slow start up to ssthresh, then +1 segment per window (AIMD), halve on
//! loss, restore the window on undo.
#![no_std]
#![no_main]

use core::ffi::c_void;

use cc_ebpf::{OpsArgs, kernel::*};
use cc_ebpf_common::TCP_CONG_NON_RESTRICTED;

cc_ebpf::license!();
cc_ebpf::struct_ops!("tcp_congestion_ops", "p2pcc_reno", TCP_CONG_NON_RESTRICTED);

unsafe extern "C" {
    /// kfunc: slow start; returns the ACKed segments left over once cwnd reaches ssthresh.
    fn tcp_slow_start(tp: *mut c_void, acked: u32) -> u32;
    /// kfunc: additive increase by `acked`/`w` segments.
    fn tcp_cong_avoid_ai(tp: *mut c_void, w: u32, acked: u32);
}

/// `ssthresh(sk)`: half the window on loss, at least 2 segments.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/ssthresh")]
pub unsafe extern "C" fn reno_ssthresh(ctx: *const u64) -> u32 {
    // SAFETY: struct_ops context; argument 0 is `struct sock *`, a tcp_sock.
    let tp = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: generated tcp_sock field offset.
    let cwnd = unsafe { tp.u32(TCP_SOCK__SND_CWND) };
    (cwnd >> 1).max(2)
}

/// `cong_avoid(sk, ack, acked)`.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/cong_avoid")]
pub unsafe extern "C" fn reno_cong_avoid(ctx: *const u64) {
    // SAFETY: struct_ops context of cong_avoid: (struct sock *, u32 ack, u32 acked).
    let args = unsafe { OpsArgs::new(ctx) };
    // SAFETY: as above.
    let (tp, mut acked) = unsafe { (args.ptr(0), args.get(2) as u32) };
    // SAFETY: generated tcp_sock bitfield position.
    let cwnd_limited = unsafe {
        tp.bits8(
            TCP_SOCK__IS_CWND_LIMITED,
            TCP_SOCK__IS_CWND_LIMITED_SHIFT,
            TCP_SOCK__IS_CWND_LIMITED_BITS,
        )
    };
    if cwnd_limited == 0 {
        return;
    }
    // SAFETY: generated tcp_sock field offsets; the kfuncs take the socket the kernel gave us.
    unsafe {
        if tp.u32(TCP_SOCK__SND_CWND) <= tp.u32(TCP_SOCK__SND_SSTHRESH) {
            acked = tcp_slow_start(tp.as_ptr().cast(), acked);
            if acked == 0 {
                return;
            }
        }
        tcp_cong_avoid_ai(tp.as_ptr().cast(), tp.u32(TCP_SOCK__SND_CWND), acked);
    }
}

/// `undo_cwnd(sk)`: the window before the (spurious) reduction.
///
/// # Safety
/// Only the kernel calls it, with the context pointer of this op.
#[unsafe(no_mangle)]
#[unsafe(link_section = "struct_ops/undo_cwnd")]
pub unsafe extern "C" fn reno_undo_cwnd(ctx: *const u64) -> u32 {
    // SAFETY: struct_ops context; argument 0 is the socket.
    let tp = unsafe { OpsArgs::new(ctx).ptr(0) };
    // SAFETY: generated tcp_sock field offsets.
    unsafe { tp.u32(TCP_SOCK__SND_CWND).max(tp.u32(TCP_SOCK__PRIOR_CWND)) }
}
