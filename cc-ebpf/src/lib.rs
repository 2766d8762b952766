//! p2p-cc kernel programs, shared helpers.
//!
//! The objects are the binaries in `src/bin/`: `probes` (TCP tracepoints, loaded with aya) and
//! `bbr_p2p` (the struct_ops congestion control, loaded by p2p-node's own struct_ops loader).
//! What lives here compiles for the host as well, so `cargo test --lib` checks it without a kernel.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod bbr;
pub mod kernel;

/// The license every object declares; struct_ops programs require a GPL-compatible one.
#[macro_export]
macro_rules! license {
    () => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = "license")]
        #[used]
        pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
    };
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Unreachable in a verified program: the verifier rejects code that could get here.
    loop {}
}

/// Declares the object's struct_ops: kernel type, registered name and flags (see
/// `cc_ebpf_common::StructOpsDecl`).
#[macro_export]
macro_rules! struct_ops {
    ($type_name:literal, $name:literal, $flags:expr) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = ".p2pcc.struct_ops")]
        #[used]
        pub static STRUCT_OPS: cc_ebpf_common::StructOpsDecl =
            cc_ebpf_common::StructOpsDecl::new($type_name, $name, $flags);
    };
}

/// Arguments of a struct_ops program: the kernel passes each argument widened to u64.
#[derive(Clone, Copy)]
pub struct OpsArgs(*const u64);

impl OpsArgs {
    /// # Safety
    /// `ctx` must be the context pointer the kernel passed to a struct_ops program.
    #[inline(always)]
    pub unsafe fn new(ctx: *const u64) -> Self {
        Self(ctx)
    }

    /// Argument `n` (0-based).
    ///
    /// # Safety
    /// The op must have more than `n` arguments (the verifier rejects reads past them).
    #[inline(always)]
    pub unsafe fn get(self, n: usize) -> u64 {
        // SAFETY: per the contract.
        unsafe { *self.0.add(n) }
    }

    /// Argument `n` as a kernel object pointer.
    ///
    /// # Safety
    /// As [`Self::get`], and the argument must be a pointer to a kernel struct.
    #[inline(always)]
    pub unsafe fn ptr(self, n: usize) -> kernel::KernelPtr {
        // SAFETY: per the contract.
        unsafe { kernel::KernelPtr::new(self.get(n) as *mut u8) }
    }
}
