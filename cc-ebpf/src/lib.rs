//! p2p-cc kernel programs, shared helpers.
//!
//! The objects are the binaries in `src/bin/`: `probes` (TCP tracepoints, loaded with aya) and
//! `bbr_p2p` (the struct_ops congestion control, loaded by p2p-node's own struct_ops loader).
//! What lives here compiles for the host as well, so `cargo test --lib` checks it without a kernel.
#![cfg_attr(not(test), no_std)]

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
