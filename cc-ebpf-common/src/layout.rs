//! The kernel struct fields the eBPF programs read or write, and where they are in the running
//! kernel — found at load time, not at build time.
//!
//! One build runs on every kernel whose BTF has these fields (Linux 6.1 to 6.18 at least: 36 of
//! them sit at different offsets between those two). The programs never hold an offset: each
//! access reads the field's bit offset from [`LAYOUT_SYMBOL`], a table in the object's `.rodata`
//! that the loader fills from `/sys/kernel/btf/vmlinux` ([`resolve`]) and freezes before loading.
//! The verifier treats loads from a frozen read-only map as constants, so every access is still
//! checked at a fixed offset, exactly as if the offset had been compiled in (the technique of
//! libbpf's `.rodata`/`const volatile` globals; CO-RE relocations would be the other way, which
//! bpf-linker does not emit for Rust).
//!
//! A field that is missing, or whose width differs from the type the programs access it with,
//! gets [`ABSENT`] in the table and is reported by name ([`Problem`]): the verifier then rejects
//! exactly the programs that reach it, and the loader names the field in that error.

/// Name of the `.rodata` symbol holding the table: `[u32; FIELD_COUNT]`, the bit offset of each
/// field of [`FIELDS`] in the running kernel.
pub const LAYOUT_SYMBOL: &str = "P2PCC_KERNEL_LAYOUT";

/// Name of the `.rodata` symbol holding a `u64` mask: bit `i` set when the programs may write
/// field `i` of [`FIELDS`]. All set at build; the loader clears the bits of fields the running
/// kernel refuses to let the program type write (found from the verifier's answer).
pub const WRITABLE_SYMBOL: &str = "P2PCC_KERNEL_WRITABLE";

/// Table value of a field the running kernel does not have. Far beyond any kernel struct, so an
/// access through it fails verification ("access beyond struct") instead of reading other bytes.
pub const ABSENT: u32 = 0x7fff_fff8;

/// One kernel field: `(struct, member path)` and the width in bits the programs access it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub ty: &'static str,
    pub path: &'static str,
    pub bits: u32,
}

impl FieldSpec {
    /// Whether the programs read the field as a bitfield (within one byte).
    pub const fn is_bitfield(&self) -> bool {
        self.bits < 8
    }
}

/// Calls `$callback! { NAME = ("struct", "member.path", width in bits), ... }` with every kernel
/// field the eBPF side touches: the one list the programs' accessors ([`cc_ebpf::kernel`]) and
/// the loader's table ([`FIELDS`]) are both generated from.
#[macro_export]
macro_rules! kernel_fields {
    ($callback:ident) => {
        $callback! {
            // struct sock
            SOCK__SK_PACING_RATE = ("sock", "sk_pacing_rate", 64),
            SOCK__SK_PACING_STATUS = ("sock", "sk_pacing_status", 32),
            SOCK__SK_MAX_PACING_RATE = ("sock", "sk_max_pacing_rate", 64),
            SOCK__SK_PACING_SHIFT = ("sock", "sk_pacing_shift", 8),
            SOCK__SKC_DADDR = ("sock", "__sk_common.skc_daddr", 32),
            SOCK__SKC_DPORT = ("sock", "__sk_common.skc_dport", 16),
            SOCK__SKC_FAMILY = ("sock", "__sk_common.skc_family", 16),
            SOCK__SKC_V6_DADDR = ("sock", "__sk_common.skc_v6_daddr", 128),
            // The socket's local-storage pointer (NULL: no socket storage of any map)
            SOCK__SK_BPF_STORAGE = ("sock", "sk_bpf_storage", 64),
            // struct inet_connection_sock
            INET_CONNECTION_SOCK__ICSK_CA_STATE = ("inet_connection_sock", "icsk_ca_state", 5),
            INET_CONNECTION_SOCK__ICSK_CA_PRIV = ("inet_connection_sock", "icsk_ca_priv", 832),
            INET_CONNECTION_SOCK__ICSK_CA_OPS = ("inet_connection_sock", "icsk_ca_ops", 64),
            // struct tcp_congestion_ops (the probes read the algorithm's name)
            TCP_CONGESTION_OPS__NAME = ("tcp_congestion_ops", "name", 128),
            // struct sk_buff and the TCP control block in its `cb` (tcp_retransmit_skb)
            SK_BUFF__LEN = ("sk_buff", "len", 32),
            SK_BUFF__CB = ("sk_buff", "cb", 384),
            TCP_SKB_CB__TCP_GSO_SEGS = ("tcp_skb_cb", "tcp_gso_segs", 16),
            // struct tcp_sock
            TCP_SOCK__SND_CWND = ("tcp_sock", "snd_cwnd", 32),
            TCP_SOCK__SND_SSTHRESH = ("tcp_sock", "snd_ssthresh", 32),
            TCP_SOCK__SND_CWND_CNT = ("tcp_sock", "snd_cwnd_cnt", 32),
            TCP_SOCK__SND_CWND_CLAMP = ("tcp_sock", "snd_cwnd_clamp", 32),
            TCP_SOCK__SND_CWND_STAMP = ("tcp_sock", "snd_cwnd_stamp", 32),
            TCP_SOCK__PRIOR_CWND = ("tcp_sock", "prior_cwnd", 32),
            TCP_SOCK__SRTT_US = ("tcp_sock", "srtt_us", 32),
            TCP_SOCK__RTT_MIN = ("tcp_sock", "rtt_min", 192),
            TCP_SOCK__MSS_CACHE = ("tcp_sock", "mss_cache", 32),
            TCP_SOCK__DELIVERED = ("tcp_sock", "delivered", 32),
            TCP_SOCK__LOST = ("tcp_sock", "lost", 32),
            TCP_SOCK__APP_LIMITED = ("tcp_sock", "app_limited", 32),
            TCP_SOCK__TCP_MSTAMP = ("tcp_sock", "tcp_mstamp", 64),
            TCP_SOCK__SND_UNA = ("tcp_sock", "snd_una", 32),
            TCP_SOCK__SND_NXT = ("tcp_sock", "snd_nxt", 32),
            TCP_SOCK__BYTES_ACKED = ("tcp_sock", "bytes_acked", 64),
            TCP_SOCK__BYTES_RECEIVED = ("tcp_sock", "bytes_received", 64),
            TCP_SOCK__TOTAL_RETRANS = ("tcp_sock", "total_retrans", 32),
            TCP_SOCK__PACKETS_OUT = ("tcp_sock", "packets_out", 32),
            TCP_SOCK__RETRANS_OUT = ("tcp_sock", "retrans_out", 32),
            TCP_SOCK__SACKED_OUT = ("tcp_sock", "sacked_out", 32),
            TCP_SOCK__LOST_OUT = ("tcp_sock", "lost_out", 32),
            TCP_SOCK__SND_WND = ("tcp_sock", "snd_wnd", 32),
            TCP_SOCK__RCV_WND = ("tcp_sock", "rcv_wnd", 32),
            TCP_SOCK__RATE_DELIVERED = ("tcp_sock", "rate_delivered", 32),
            TCP_SOCK__RATE_INTERVAL_US = ("tcp_sock", "rate_interval_us", 32),
            TCP_SOCK__IS_CWND_LIMITED = ("tcp_sock", "is_cwnd_limited", 1),
            TCP_SOCK__TCP_WSTAMP_NS = ("tcp_sock", "tcp_wstamp_ns", 64),
            TCP_SOCK__TCP_CLOCK_CACHE = ("tcp_sock", "tcp_clock_cache", 64),
            TCP_SOCK__DELIVERED_MSTAMP = ("tcp_sock", "delivered_mstamp", 64),
            // struct rate_sample (argument of cong_control)
            RATE_SAMPLE__PRIOR_MSTAMP = ("rate_sample", "prior_mstamp", 64),
            RATE_SAMPLE__PRIOR_DELIVERED = ("rate_sample", "prior_delivered", 32),
            RATE_SAMPLE__DELIVERED = ("rate_sample", "delivered", 32),
            RATE_SAMPLE__INTERVAL_US = ("rate_sample", "interval_us", 64),
            RATE_SAMPLE__RTT_US = ("rate_sample", "rtt_us", 64),
            RATE_SAMPLE__LOSSES = ("rate_sample", "losses", 32),
            RATE_SAMPLE__ACKED_SACKED = ("rate_sample", "acked_sacked", 32),
            RATE_SAMPLE__PRIOR_IN_FLIGHT = ("rate_sample", "prior_in_flight", 32),
            RATE_SAMPLE__IS_APP_LIMITED = ("rate_sample", "is_app_limited", 8),
            RATE_SAMPLE__IS_RETRANS = ("rate_sample", "is_retrans", 8),
            RATE_SAMPLE__IS_ACK_DELAYED = ("rate_sample", "is_ack_delayed", 8),
        }
    };
}

macro_rules! field_table {
    ($($name:ident = ($ty:literal, $path:literal, $bits:literal)),* $(,)?) => {
        /// Index of each field in [`FIELDS`] and in the `.rodata` table.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms, reason = "named as the accessors' constants")]
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum FieldIndex { $($name),* }

        /// Every field, in table order.
        pub const FIELDS: &[FieldSpec] = &[$(FieldSpec { ty: $ty, path: $path, bits: $bits }),*];
    };
}
kernel_fields!(field_table);

/// Entries in the table.
pub const FIELD_COUNT: usize = FIELDS.len();
// One bit per field in the writable mask.
const _: () = assert!(FIELD_COUNT <= 64);

/// The `.rodata` table: the bit offset of each field, [`ABSENT`] for a missing one.
pub type Table = [u32; FIELD_COUNT];

#[cfg(feature = "std")]
pub use resolve::*;

#[cfg(feature = "std")]
mod resolve {
    use std::{borrow::ToOwned, format, string::String, vec::Vec};

    use super::{ABSENT, FIELDS, FieldSpec, Table};
    use crate::btf::Btf;

    /// A field the programs cannot use on the running kernel.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Problem {
        /// `struct.member`.
        pub field: String,
        pub why: String,
    }

    impl core::fmt::Display for Problem {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            write!(f, "kernel field `{}` {}", self.field, self.why)
        }
    }

    /// The table for `btf`, and the fields it could not place.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Resolved {
        pub table: Table,
        pub problems: Vec<Problem>,
    }

    impl Resolved {
        /// The table as the bytes of the `.rodata` symbol (native endianness, as the programs
        /// read it).
        pub fn bytes(&self) -> Vec<u8> {
            self.table.iter().flat_map(|v| v.to_ne_bytes()).collect()
        }

        /// One sentence naming the unusable fields, for an error saying what they disable;
        /// `None` when every field resolved.
        pub fn summary(&self) -> Option<String> {
            (!self.problems.is_empty()).then(|| {
                self.problems
                    .iter()
                    .map(|p| format!("{p}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        }
    }

    /// Places every field of [`FIELDS`] in `btf`.
    pub fn resolve(btf: &Btf) -> Resolved {
        let mut table = [ABSENT; super::FIELD_COUNT];
        let mut problems = Vec::new();
        for (slot, spec) in table.iter_mut().zip(FIELDS) {
            match place(btf, spec) {
                Ok(bit_offset) => *slot = bit_offset,
                Err(why) => problems.push(Problem {
                    field: format!("{}.{}", spec.ty, spec.path),
                    why,
                }),
            }
        }
        Resolved { table, problems }
    }

    fn place(btf: &Btf, spec: &FieldSpec) -> Result<u32, String> {
        let loc = btf
            .field(spec.ty, spec.path)
            .map_err(|_| "does not exist in the running kernel".to_owned())?;
        if loc.bit_size != spec.bits {
            return Err(format!(
                "is {} bits wide in the running kernel; the programs read {} bits",
                loc.bit_size, spec.bits
            ));
        }
        if spec.is_bitfield() && loc.bit_offset % 8 + loc.bit_size > 8 {
            return Err(format!(
                "(a bitfield at bit {}) crosses a byte boundary in the running kernel",
                loc.bit_offset
            ));
        }
        if !spec.is_bitfield() && loc.bit_offset % 8 != 0 {
            return Err(format!("is not byte-aligned (bit {})", loc.bit_offset));
        }
        Ok(loc.bit_offset)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::btf::{Btf, MemberEdit};
    use std::string::ToString;

    fn index(ty: &str, path: &str) -> usize {
        FIELDS
            .iter()
            .position(|f| (f.ty, f.path) == (ty, path))
            .unwrap()
    }

    #[test]
    fn every_field_resolves_on_the_running_kernel() {
        let Some(btf) = crate::btf::running_kernel() else {
            return;
        };
        let resolved = resolve(&btf);
        assert_eq!(resolved.problems, []);
        let cwnd = btf.field("tcp_sock", "snd_cwnd").unwrap();
        assert_eq!(
            resolved.table[FieldIndex::TCP_SOCK__SND_CWND as usize],
            cwnd.bit_offset
        );
        assert_eq!(resolved.bytes().len(), FIELD_COUNT * 4);
    }

    /// The kernel's own BTF, perturbed as another kernel would differ: a field moved, a field
    /// removed, a field of another width.
    #[test]
    fn a_perturbed_btf_gives_patched_offsets_and_named_problems() {
        let Some(btf) = crate::btf::running_kernel() else {
            return;
        };
        let cwnd = btf.field("tcp_sock", "snd_cwnd").unwrap().bit_offset;
        let pacing = btf.field("sock", "sk_pacing_rate").unwrap().bit_offset;
        let mut data = btf.bytes().to_vec();
        Btf::edit_member(
            &mut data,
            "tcp_sock",
            "snd_cwnd",
            MemberEdit::BitOffset(cwnd + 256),
        )
        .unwrap();
        // `sock.sk_pacing_rate` at 6.1's place (bit 3648) when this kernel has it elsewhere.
        let moved_pacing = if pacing == 3648 { 3904 } else { 3648 };
        Btf::edit_member(
            &mut data,
            "sock",
            "sk_pacing_rate",
            MemberEdit::BitOffset(moved_pacing),
        )
        .unwrap();
        Btf::edit_member(
            &mut data,
            "tcp_sock",
            "rate_interval_us",
            MemberEdit::Remove,
        )
        .unwrap();
        let u16_id = btf.find(crate::btf::Kind::Typedef, "u16").unwrap();
        Btf::edit_member(
            &mut data,
            "tcp_sock",
            "snd_ssthresh",
            MemberEdit::Type(u16_id),
        )
        .unwrap();
        let perturbed = Btf::parse(data).unwrap();
        let resolved = resolve(&perturbed);

        assert_eq!(
            resolved.table[index("tcp_sock", "snd_cwnd")],
            cwnd + 256,
            "moved field: the table follows the BTF"
        );
        assert_eq!(
            resolved.table[index("sock", "sk_pacing_rate")],
            moved_pacing
        );
        assert_eq!(
            resolved.table[index("tcp_sock", "rate_interval_us")],
            ABSENT
        );
        assert_eq!(resolved.table[index("tcp_sock", "snd_ssthresh")], ABSENT);
        let problems: std::vec::Vec<_> = resolved.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            [
                "kernel field `tcp_sock.snd_ssthresh` is 16 bits wide in the running kernel; the programs read 32 bits",
                "kernel field `tcp_sock.rate_interval_us` does not exist in the running kernel",
            ]
        );
        assert!(resolved.summary().unwrap().contains("rate_interval_us"));
        // Untouched fields keep the kernel's offsets.
        assert_eq!(
            resolved.table[index("tcp_sock", "srtt_us")],
            btf.field("tcp_sock", "srtt_us").unwrap().bit_offset
        );
    }

    #[test]
    fn bitfields_are_flagged_by_width() {
        assert!(FIELDS[index("inet_connection_sock", "icsk_ca_state")].is_bitfield());
        assert!(!FIELDS[index("sock", "sk_pacing_shift")].is_bitfield());
    }
}
