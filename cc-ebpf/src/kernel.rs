//! Kernel struct layouts, generated at build time from the kernel's BTF (see
//! `cc_ebpf_common::layout`), and the loads and stores that use them.
//!
//! The verifier checks every access against the kernel's BTF, so a wrong offset is refused at load
//! rather than read; the loader also checks the whole table against the running kernel first.

#![allow(dead_code, reason = "the generated table lists more fields than each object uses")]

include!(concat!(env!("OUT_DIR"), "/kernel_layout.rs"));

/// Fails the build when a field's width differs from the type the programs access it with.
macro_rules! width {
    ($($bits:ident == $n:literal),* $(,)?) => { $(const _: () = assert!($bits == $n);)* };
}
width!(
    SOCK__SK_PACING_RATE_BITS == 64,
    SOCK__SK_PACING_STATUS_BITS == 32,
    SOCK__SKC_DADDR_BITS == 32,
    SOCK__SKC_DPORT_BITS == 16,
    SOCK__SKC_FAMILY_BITS == 16,
    SOCK__SKC_V6_DADDR_BITS == 128,
    INET_CONNECTION_SOCK__ICSK_CA_STATE_BITS == 5,
    INET_CONNECTION_SOCK__ICSK_CA_PRIV_BITS == 832,
    INET_CONNECTION_SOCK__ICSK_CA_OPS_BITS == 64,
    TCP_CONGESTION_OPS__NAME_BITS == 128,
    SK_BUFF__LEN_BITS == 32,
    SK_BUFF__CB_BITS == 384,
    TCP_SKB_CB__TCP_GSO_SEGS_BITS == 16,
    TCP_SOCK__RCV_WND_BITS == 32,
    TCP_SOCK__SND_CWND_BITS == 32,
    TCP_SOCK__SND_SSTHRESH_BITS == 32,
    TCP_SOCK__SND_CWND_CNT_BITS == 32,
    TCP_SOCK__SND_CWND_CLAMP_BITS == 32,
    TCP_SOCK__SND_CWND_STAMP_BITS == 32,
    TCP_SOCK__PRIOR_CWND_BITS == 32,
    TCP_SOCK__SRTT_US_BITS == 32,
    TCP_SOCK__RTT_MIN_BITS == 192,
    TCP_SOCK__MSS_CACHE_BITS == 32,
    TCP_SOCK__DELIVERED_BITS == 32,
    TCP_SOCK__LOST_BITS == 32,
    TCP_SOCK__APP_LIMITED_BITS == 32,
    TCP_SOCK__TCP_MSTAMP_BITS == 64,
    TCP_SOCK__BYTES_ACKED_BITS == 64,
    TCP_SOCK__BYTES_RECEIVED_BITS == 64,
    TCP_SOCK__TOTAL_RETRANS_BITS == 32,
    TCP_SOCK__PACKETS_OUT_BITS == 32,
    TCP_SOCK__RETRANS_OUT_BITS == 32,
    TCP_SOCK__SACKED_OUT_BITS == 32,
    TCP_SOCK__LOST_OUT_BITS == 32,
    TCP_SOCK__SND_WND_BITS == 32,
    TCP_SOCK__RATE_DELIVERED_BITS == 32,
    TCP_SOCK__RATE_INTERVAL_US_BITS == 32,
    TCP_SOCK__IS_CWND_LIMITED_BITS == 1,
    RATE_SAMPLE__PRIOR_MSTAMP_BITS == 64,
    RATE_SAMPLE__PRIOR_DELIVERED_BITS == 32,
    RATE_SAMPLE__DELIVERED_BITS == 32,
    RATE_SAMPLE__INTERVAL_US_BITS == 64,
    RATE_SAMPLE__RTT_US_BITS == 64,
    RATE_SAMPLE__LOSSES_BITS == 32,
    RATE_SAMPLE__ACKED_SACKED_BITS == 32,
    RATE_SAMPLE__PRIOR_IN_FLIGHT_BITS == 32,
    RATE_SAMPLE__IS_APP_LIMITED_BITS == 8,
    RATE_SAMPLE__IS_RETRANS_BITS == 8,
    RATE_SAMPLE__IS_ACK_DELAYED_BITS == 8,
);

/// `struct minmax` keeps three samples `{u32 t; u32 v;}`; the current minimum is `s[0].v`.
pub const MINMAX_S0_V: usize = 4;

/// A pointer to a kernel object (a `struct sock`/`tcp_sock`, a `rate_sample`) handed to a
/// program by the kernel, read and written at the generated offsets.
#[derive(Clone, Copy)]
pub struct KernelPtr(*mut u8);

impl KernelPtr {
    /// # Safety
    /// `ptr` must be a kernel object pointer the verifier knows the type of (a program argument
    /// or a helper's typed return), so every access below is checked at load.
    #[inline(always)]
    pub unsafe fn new<T>(ptr: *mut T) -> Self {
        Self(ptr.cast())
    }

    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    pub fn as_ptr(self) -> *mut u8 {
        self.0
    }

    /// # Safety
    /// `off` must be the offset of a `u8` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u8(self, off: usize) -> u8 {
        // SAFETY: per the contract; volatile keeps it one plain load the verifier can check.
        unsafe { core::ptr::read_volatile(self.0.add(off)) }
    }

    /// # Safety
    /// `off` must be the offset of a `u16` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u16(self, off: usize) -> u16 {
        // SAFETY: per the contract.
        unsafe { core::ptr::read_volatile(self.0.add(off).cast()) }
    }

    /// # Safety
    /// `off` must be the offset of a `u32` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u32(self, off: usize) -> u32 {
        // SAFETY: per the contract.
        unsafe { core::ptr::read_volatile(self.0.add(off).cast()) }
    }

    /// # Safety
    /// `off` must be the offset of a `u64` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u64(self, off: usize) -> u64 {
        // SAFETY: per the contract.
        unsafe { core::ptr::read_volatile(self.0.add(off).cast()) }
    }

    /// # Safety
    /// `off` must be the offset of a `u32` field the program type may write.
    #[inline(always)]
    pub unsafe fn set_u32(self, off: usize, value: u32) {
        // SAFETY: per the contract.
        unsafe { core::ptr::write_volatile(self.0.add(off).cast(), value) }
    }

    /// # Safety
    /// `off` must be the offset of a `u64` field the program type may write.
    #[inline(always)]
    pub unsafe fn set_u64(self, off: usize, value: u64) {
        // SAFETY: per the contract.
        unsafe { core::ptr::write_volatile(self.0.add(off).cast(), value) }
    }

    /// Reads a bitfield described by its generated `(byte offset, shift, width)`.
    ///
    /// # Safety
    /// As [`Self::u8`]; the field must lie within that byte.
    #[inline(always)]
    pub unsafe fn bits8(self, off: usize, shift: u32, width: u32) -> u8 {
        // SAFETY: per the contract.
        let byte = unsafe { self.u8(off) };
        (byte >> shift) & ((1u8 << width) - 1)
    }
}
