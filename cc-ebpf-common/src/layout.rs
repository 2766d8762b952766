//! The kernel struct fields the eBPF programs read or write, and where they are in the running
//! kernel — found at load time, not at build time.
//!
//! One build runs on every kernel whose BTF has these fields (Linux 6.1 to 6.18 at least: 36 of
//! them sit at different offsets between those two). The programs never hold an offset: each
//! access loads a [`field_marker`] as the immediate of an `ld_imm64`, and the loader, before
//! loading, writes over each marker the field's offset in `/sys/kernel/btf/vmlinux` — in bytes,
//! or in bits for a bitfield, whose accessor takes the byte and the shift from it
//! ([`resolve`], then [`patch_fields`]). The verifier sees a constant, so every access is
//! checked at a fixed offset, exactly as if the offset had been compiled in, and no access reads
//! memory to learn it (what libbpf's CO-RE field relocations do; bpf-linker emits none for Rust,
//! hence the markers). A table in `.rodata`, which the programs read before, cost every access a
//! load and every `tcp_probe` event one more cache line (docs/bench.md, "Probes", session 9).
//!
//! A field that is missing, or whose width differs from the type the programs access it with,
//! gets [`ABSENT`] in the table and is reported by name ([`Problem`]): the verifier then rejects
//! exactly the programs that reach it, and the loader names the field in that error.
//!
//! **Which immediates are markers.** The patcher cannot tell a marker from any other constant
//! by where it came from, only by its value, so the rule is on the value: every `ld_imm64`
//! whose source register is 0 (a plain constant, or a map reference before relocation, whose
//! immediate is 0 or a section offset)
//! and whose high half is [`FIELD_MARK`] (bytes 4–7 read `cp2p` in memory) is a field marker,
//! and with [`TYPE_MARK`] (`tp2p`) a type marker. Its low half must be [`MARKED`] | an index of
//! [`FIELDS`] (of [`TYPES`]); anything else with that high half — a low half without bit 31, or
//! an index past the list — refuses the whole object ([`PatchError::UnknownField`]) rather than
//! be loaded as it stands. So a genuine 64-bit constant of that shape in our code (a literal, a
//! packed byte string with `cp2p` or `tp2p` at bytes 4–7, a mask the compiler made up) would
//! either stop the load with that error or, if its low half happened to be exactly `MARKED | i`
//! for a listed `i` (one of ~60 values in 2^32), be silently replaced by that field's offset or
//! that struct's id, and the program would compute with that. It
//! cannot come from elsewhere: only the objects compiled into the node go through the
//! patcher. Our objects hold none: read out of them (2026-12-02), their other `ld_imm64`
//! constants are 0 (map references), masks (`0xffff_ffff`, `0xff_ffff_ffff`, ...) and one
//! division constant, `0x1_0624_dd30` (bbr-p2p; `p2p-node`'s `offsets` test finds every marker
//! of all three objects patched and no more bytes changed than the markers hold). ASCII text
//! cannot be taken for a marker silently: bit 31 of the low half is the top bit of byte 3, so
//! such a string is refused.

/// Name of the `.rodata` symbol holding a `u64` mask: bit `i` set when the programs may write
/// field `i` of [`FIELDS`]. All set at build; the loader clears the bits of fields the running
/// kernel refuses to let the program type write (found from the verifier's answer).
pub const WRITABLE_SYMBOL: &str = "P2PCC_KERNEL_WRITABLE";

/// Offset of a field the running kernel does not have. Far beyond any kernel struct, so an
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
            // The tick (low 32 bits of jiffies) of the socket's last data segment
            // (`tcp_event_data_recv`); `tcp_probe`'s pre-test, with `tcp_sock.rcv_tstamp`
            INET_CONNECTION_SOCK__ICSK_ACK_LRCVTIME = ("inet_connection_sock", "icsk_ack.lrcvtime", 32),
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
            // The tick (low 32 bits of jiffies) of the socket's last accepted ACK (`tcp_ack`)
            TCP_SOCK__RCV_TSTAMP = ("tcp_sock", "rcv_tstamp", 32),
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
        /// Index of each field in [`FIELDS`] and in a [`Table`] (the low half of its marker).
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

/// The bit offset of each field in the running kernel, [`ABSENT`] for a missing one: what the
/// loader writes over the markers.
pub type Table = [u32; FIELD_COUNT];

/// High half of a field marker: the 64-bit immediate `FIELD_MARK << 32 | MARKED | index` of an
/// `ld_imm64` stands for field `index`'s offset until the loader writes the offset there
/// ([`patch_fields`]; which constants count as markers: the module note).
pub const FIELD_MARK: u32 = 0x7032_7063;

/// Set in the low half of every marker. Left unpatched, a marker reads as an offset the verifier
/// rejects, as it does [`ABSENT`], instead of as the small index: a byte offset is the whole
/// 64-bit marker (≥ 2^62), a bitfield's bit offset its low half (≥ 2^31 bits, 256 MiB).
pub const MARKED: u32 = 0x8000_0000;

/// The marker immediate of field `index` (see [`FIELD_MARK`]).
pub const fn field_marker(index: FieldIndex) -> u64 {
    (FIELD_MARK as u64) << 32 | (MARKED | index as u32) as u64
}

/// The kernel structs whose vmlinux BTF type id a program needs as a constant (the second
/// argument of the `bpf_rdonly_cast` kfunc), in [`TypeIndex`] order.
pub const TYPES: &[&str] = &["tcp_sock"];

/// Index of each struct in [`TYPES`] and in [`TypeIds`] (the low half of its marker).
#[allow(
    non_camel_case_types,
    clippy::upper_case_acronyms,
    reason = "named as the structs"
)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeIndex {
    TCP_SOCK,
}

/// The vmlinux BTF id of each struct of [`TYPES`] in the running kernel, 0 for a missing one.
pub type TypeIds = [u32; TYPES.len()];

/// High half of a type marker: the `ld_imm64` immediate `TYPE_MARK << 32 | MARKED | index`
/// stands for the BTF id of struct `TYPES[index]` until the loader writes the id there
/// ([`patch_fields`]). Left unpatched, it is an id no kernel has, which the verifier rejects.
pub const TYPE_MARK: u32 = 0x7032_7074;

/// The marker immediate of struct `index`'s BTF id (see [`TYPE_MARK`]).
pub const fn type_marker(index: TypeIndex) -> u64 {
    (TYPE_MARK as u64) << 32 | (MARKED | index as u32) as u64
}

/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 16-byte `ld_imm64`.
const OP_LD_IMM64: u8 = 0x18;

/// What [`patch_fields`] found that it could not have been given by a cc-ebpf object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchError {
    /// A marker whose index is not a field of [`FIELDS`] (or a struct of [`TYPES`]): object
    /// and loader built from different sources. At this byte.
    UnknownField { at: usize },
    /// The code is not a whole number of 8-byte instructions, or ends inside an `ld_imm64`.
    Truncated,
}

/// Writes each field's offset from `table` (bit offsets) over its markers in `code` (the bytes
/// of BPF instructions, little-endian as `bpfel` objects are): every `ld_imm64` with no source
/// register (a plain constant) whose immediate is a [`field_marker`] gets the field's byte
/// offset, or its bit offset for a bitfield, in the low half and 0 in the high half; each
/// struct's BTF id from `types` goes over its [`type_marker`]s. Returns how many it patched.
///
/// This is what a loader does with libbpf's CO-RE field-offset relocations, on a marker instead
/// of a relocation record (bpf-linker emits none for Rust): the programs then carry the running
/// kernel's offsets as immediates and read no table at run time.
pub fn patch_fields(code: &mut [u8], table: &Table, types: &TypeIds) -> Result<usize, PatchError> {
    if !code.len().is_multiple_of(8) {
        return Err(PatchError::Truncated);
    }
    let mut patched = 0;
    let mut at = 0;
    while at < code.len() {
        let (opcode, src_reg) = (code[at], code[at + 1] >> 4);
        if opcode != OP_LD_IMM64 {
            at += 8;
            continue;
        }
        if at + 16 > code.len() {
            return Err(PatchError::Truncated);
        }
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (low, high) = (word(&code[at + 4..]), word(&code[at + 12..]));
        if src_reg == 0 && (high == FIELD_MARK || high == TYPE_MARK) {
            let index = (low & MARKED != 0).then_some((low ^ MARKED) as usize);
            let value = match (high, index) {
                (FIELD_MARK, Some(i)) if i < FIELD_COUNT => immediate(&FIELDS[i], table[i]),
                (TYPE_MARK, Some(i)) if i < TYPES.len() => types[i],
                _ => return Err(PatchError::UnknownField { at }),
            };
            code[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
            code[at + 12..at + 16].copy_from_slice(&0u32.to_le_bytes());
            patched += 1;
        }
        at += 16;
    }
    Ok(patched)
}

/// What a field's marker becomes: its byte offset, or for a bitfield its bit offset (the
/// programs then take the byte and the shift from it). [`ABSENT`] stays as it is: beyond any
/// struct read either way.
const fn immediate(spec: &FieldSpec, bit_offset: u32) -> u32 {
    if spec.is_bitfield() || bit_offset == ABSENT {
        bit_offset
    } else {
        bit_offset / 8
    }
}

#[cfg(feature = "std")]
pub use resolve::*;

#[cfg(feature = "std")]
mod resolve {
    use std::{borrow::ToOwned, format, string::String, vec::Vec};

    use super::{ABSENT, FIELDS, FieldSpec, TYPES, Table, TypeIds};
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
        /// The BTF id of each struct of [`TYPES`] (0: missing, which no kernel with TCP is).
        pub types: TypeIds,
        pub problems: Vec<Problem>,
    }

    impl Resolved {
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
        let types =
            core::array::from_fn(|i| btf.find(crate::btf::Kind::Struct, TYPES[i]).unwrap_or(0));
        Resolved {
            table,
            types,
            problems,
        }
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

    /// One instruction, little-endian: opcode, registers (src << 4 | dst), offset, immediate.
    fn insn(opcode: u8, regs: u8, imm: u32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = opcode;
        b[1] = regs;
        b[4..].copy_from_slice(&imm.to_le_bytes());
        b
    }

    /// `ld_imm64` of `value` into r1, with `src` in its source-register nibble.
    fn ld_imm64(src: u8, value: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&insn(0x18, src << 4 | 1, value as u32));
        b[8..].copy_from_slice(&insn(0, 0, (value >> 32) as u32));
        b
    }

    #[test]
    fn markers_become_the_tables_offsets_and_nothing_else_changes() {
        let mut table = [ABSENT; FIELD_COUNT];
        let cwnd = FieldIndex::TCP_SOCK__SND_CWND;
        table[cwnd as usize] = 1234 * 8;
        let marker = field_marker(cwnd);
        let missing = field_marker(FieldIndex::RATE_SAMPLE__RTT_US);
        let mut code = std::vec::Vec::new();
        code.extend(ld_imm64(0, marker));
        // A map's ld_imm64 (src 1) and a plain 64-bit constant with another high half.
        code.extend(ld_imm64(1, marker));
        code.extend(ld_imm64(0, marker ^ 1 << 40));
        // r1 = *(u32 *)(r2 + 0), then a marker whose field the kernel lacks.
        code.extend(insn(0x61, 0x21, 0));
        code.extend(ld_imm64(0, missing));
        let before = code.clone();
        assert_eq!(patch_fields(&mut code, &table, &[0]), Ok(2));
        assert_eq!(code[..16], ld_imm64(0, 1234), "a byte offset");
        assert_eq!(code[16..56], before[16..56]);
        assert_eq!(code[56..], ld_imm64(0, u64::from(ABSENT)));
    }

    #[test]
    fn a_bitfields_marker_gets_its_bit_offset_and_a_type_marker_its_id() {
        let mut table = [ABSENT; FIELD_COUNT];
        let state = FieldIndex::INET_CONNECTION_SOCK__ICSK_CA_STATE;
        table[state as usize] = 1234 * 8 + 3;
        let mut code = std::vec::Vec::new();
        code.extend(ld_imm64(0, field_marker(state)));
        code.extend(ld_imm64(0, type_marker(TypeIndex::TCP_SOCK)));
        assert_eq!(patch_fields(&mut code, &table, &[4242]), Ok(2));
        assert_eq!(code[..16], ld_imm64(0, 1234 * 8 + 3));
        assert_eq!(code[16..], ld_imm64(0, 4242));
        // A type marker of no type is refused like a field's.
        let mut code = ld_imm64(0, type_marker(TypeIndex::TCP_SOCK) + 1).to_vec();
        assert_eq!(
            patch_fields(&mut code, &table, &[4242]),
            Err(PatchError::UnknownField { at: 0 })
        );
    }

    #[test]
    fn an_unpatched_marker_is_an_offset_beyond_any_struct() {
        // The first and the last field, and the bitfields. What the programs compute from a
        // marker: the whole immediate in bytes, or for a bitfield its low half in bits.
        for index in [
            FieldIndex::SOCK__SK_PACING_RATE,
            FieldIndex::RATE_SAMPLE__IS_ACK_DELAYED,
        ] {
            assert!(!FIELDS[index as usize].is_bitfield());
            assert!(field_marker(index) >= 1 << 62);
        }
        for index in [
            FieldIndex::INET_CONNECTION_SOCK__ICSK_CA_STATE,
            FieldIndex::TCP_SOCK__IS_CWND_LIMITED,
        ] {
            assert!(FIELDS[index as usize].is_bitfield());
            assert!(field_marker(index) as u32 / 8 >= 256 << 20);
        }
        assert_eq!(
            FIELDS.len(),
            FieldIndex::RATE_SAMPLE__IS_ACK_DELAYED as usize + 1
        );
    }

    #[test]
    fn only_ld_imm64_immediates_are_markers() {
        // A 32-bit mov followed by a word equal to the marker's high half (its shape as two
        // instructions): not an ld_imm64, left alone.
        let mut code = ld_imm64(0, field_marker(FieldIndex::TCP_SOCK__SND_CWND));
        code[0] = 0xb7;
        let before = code;
        assert_eq!(patch_fields(&mut code, &[7; FIELD_COUNT], &[0]), Ok(0));
        assert_eq!(code, before);
    }

    #[test]
    fn a_marker_of_no_field_and_cut_code_are_refused() {
        for low in [MARKED | FIELD_COUNT as u32, 3] {
            let mut code = ld_imm64(0, u64::from(FIELD_MARK) << 32 | u64::from(low)).to_vec();
            assert_eq!(
                patch_fields(&mut code, &[0; FIELD_COUNT], &[0]),
                Err(PatchError::UnknownField { at: 0 })
            );
        }
        let mut cut = ld_imm64(0, 0)[..8].to_vec();
        assert_eq!(
            patch_fields(&mut cut, &[0; FIELD_COUNT], &[0]),
            Err(PatchError::Truncated)
        );
        assert_eq!(
            patch_fields(&mut [0u8; 12], &[0; FIELD_COUNT], &[0]),
            Err(PatchError::Truncated)
        );
    }
}
