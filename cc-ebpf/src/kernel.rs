//! Kernel struct fields and the loads and stores that use them.
//!
//! Field offsets are not compiled in: each access loads the field's offset (in bytes; in bits
//! for a bitfield) as the immediate of one `ld_imm64`, a marker naming the field
//! (`cc_ebpf_common::layout::field_marker`) that the loader overwrites with the offset it found
//! in the running kernel's BTF before loading
//! (`cc_ebpf_common::layout::patch_fields`; what libbpf does with CO-RE field relocations,
//! which bpf-linker does not emit for Rust). So `ptr + offset` is a constant the verifier checks
//! against the kernel's BTF, one object runs on every kernel that has the fields, and no access
//! reads memory for its offset. A marker the loader did not patch, or a field the kernel lacks
//! (`ABSENT`), reads as an offset far beyond any struct: that access fails verification.

use core::ops::Add;

use cc_ebpf_common::layout::{FIELDS, FieldIndex, TypeIndex, field_marker, type_marker};

/// Bit `i` set: the program may write field `i`. The loader clears the bit of a field the
/// running kernel does not let this program type write (Linux 6.1 refuses congestion controls
/// `tcp_sock.app_limited`): the write then sits behind a constant-false branch, which the
/// verifier skips (`cc_ebpf_common::layout::WRITABLE_SYMBOL` names it).
#[unsafe(no_mangle)]
#[used]
static P2PCC_KERNEL_WRITABLE: u64 = u64::MAX;

/// A kernel struct field; its place is the loader's immediate (see the module note).
#[derive(Clone, Copy)]
pub struct Field(FieldIndex);

impl Field {
    /// Whether the loader patches this field's bit offset (a bitfield) rather than its byte
    /// offset: a constant after inlining, as every caller passes a constant field.
    #[inline(always)]
    fn is_bitfield(self) -> bool {
        FIELDS[self.0 as usize].is_bitfield()
    }

    /// Offset of a bitfield from the start of its struct, in bits.
    #[inline(always)]
    fn bit_offset(self) -> u64 {
        field_immediate(self.0)
    }

    /// Offset in bytes (for a bitfield, of the byte holding its first bit). For every other
    /// field the immediate itself, used whole: no shift, no truncation.
    #[inline(always)]
    pub fn offset(self) -> usize {
        let imm = field_immediate(self.0);
        (if self.is_bitfield() { imm / 8 } else { imm }) as usize
    }

    /// Whether the running kernel lets this program write the field (see
    /// [`P2PCC_KERNEL_WRITABLE`]).
    #[inline(always)]
    pub fn writable(self) -> bool {
        // SAFETY: plain read of a static; volatile for the same reason as above.
        let mask = unsafe { core::ptr::read_volatile(&raw const P2PCC_KERNEL_WRITABLE) };
        (mask >> self.0 as u32) & 1 != 0
    }
}

/// A byte offset into a kernel object: a [`Field`], or a sum involving one.
pub trait Offset: Copy {
    fn bytes(self) -> usize;

    /// Whether a store there may be made on the running kernel.
    #[inline(always)]
    fn writable(self) -> bool {
        true
    }
}

impl Offset for Field {
    #[inline(always)]
    fn bytes(self) -> usize {
        self.offset()
    }

    #[inline(always)]
    fn writable(self) -> bool {
        Field::writable(self)
    }
}

impl Offset for usize {
    #[inline(always)]
    fn bytes(self) -> usize {
        self
    }
}

/// `FIELD + n`: `n` bytes into a field (an element of an array or nested struct).
impl Add<usize> for Field {
    type Output = usize;
    #[inline(always)]
    fn add(self, n: usize) -> usize {
        self.offset() + n
    }
}

/// `OUTER + INNER`: a field of a struct embedded in another (`sk_buff.cb` + `tcp_skb_cb.x`).
impl Add<Field> for Field {
    type Output = usize;
    #[inline(always)]
    fn add(self, inner: Field) -> usize {
        self.offset() + inner.offset()
    }
}

/// `address + FIELD`.
impl Add<Field> for usize {
    type Output = usize;
    #[inline(always)]
    fn add(self, field: Field) -> usize {
        self + field.offset()
    }
}

/// The bit position of a bitfield inside the byte at its [`Field::offset`].
#[derive(Clone, Copy)]
pub struct Shift(Field);

macro_rules! field_consts {
    ($($name:ident = ($ty:literal, $path:literal, $bits:literal)),* $(,)?) => {
        $(
            #[doc = concat!("`", $ty, ".", $path, "` (", stringify!($bits), " bits)")]
            pub const $name: Field = Field(FieldIndex::$name);
        )*

        /// The field's offset as the immediate of one `ld_imm64` (in bytes; in bits for a
        /// bitfield), emitted as `field_marker(index)` and replaced by the loader with the running
        /// kernel's offset (`cc_ebpf_common::layout::patch_fields`). A `match`, because an asm
        /// immediate must be a constant: every caller passes a constant field, so after inlining
        /// one arm is left.
        #[inline(always)]
        fn field_immediate(field: FieldIndex) -> u64 {
            match field {
                $(FieldIndex::$name => {
                    let imm: u64;
                    // SAFETY: loads an immediate into a register; touches nothing else.
                    #[cfg(target_arch = "bpf")]
                    unsafe {
                        core::arch::asm!(
                            "{0} = {1} ll",
                            out(reg) imm,
                            const field_marker(FieldIndex::$name),
                            options(pure, nomem, nostack, preserves_flags),
                        );
                    }
                    #[cfg(not(target_arch = "bpf"))]
                    {
                        imm = field_marker(FieldIndex::$name);
                    }
                    imm
                })*
            }
        }
    };
}
cc_ebpf_common::kernel_fields!(field_consts);

/// The running kernel's BTF id of a struct of `cc_ebpf_common::layout::TYPES`, as the immediate
/// of one `ld_imm64`: a type marker the loader overwrites with the id
/// (`cc_ebpf_common::layout::patch_fields`), so the verifier sees the constant a kfunc such as
/// `bpf_rdonly_cast` requires.
#[inline(always)]
pub fn type_id(index: TypeIndex) -> u32 {
    match index {
        TypeIndex::TCP_SOCK => {
            let id: u64;
            // SAFETY: loads an immediate into a register; touches nothing else.
            #[cfg(target_arch = "bpf")]
            unsafe {
                core::arch::asm!(
                    "{0} = {1} ll",
                    out(reg) id,
                    const type_marker(TypeIndex::TCP_SOCK),
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            #[cfg(not(target_arch = "bpf"))]
            {
                id = type_marker(TypeIndex::TCP_SOCK);
            }
            id as u32
        }
    }
}

/// Width of a field as the programs access it.
const fn bits(field: FieldIndex) -> u32 {
    FIELDS[field as usize].bits
}

pub const INET_CONNECTION_SOCK__ICSK_CA_STATE_SHIFT: Shift =
    Shift(INET_CONNECTION_SOCK__ICSK_CA_STATE);
pub const INET_CONNECTION_SOCK__ICSK_CA_STATE_BITS: u32 =
    bits(FieldIndex::INET_CONNECTION_SOCK__ICSK_CA_STATE);
pub const TCP_SOCK__IS_CWND_LIMITED_SHIFT: Shift = Shift(TCP_SOCK__IS_CWND_LIMITED);
pub const TCP_SOCK__IS_CWND_LIMITED_BITS: u32 = bits(FieldIndex::TCP_SOCK__IS_CWND_LIMITED);

/// `struct minmax` keeps three samples `{u32 t; u32 v;}`; the current minimum is `s[0].v`.
pub const MINMAX_S0_V: usize = 4;

/// A pointer to a kernel object (a `struct sock`/`tcp_sock`, a `rate_sample`) handed to a
/// program by the kernel, read and written at the offsets the loader patched in.
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
    pub unsafe fn u8(self, off: impl Offset) -> u8 {
        // SAFETY: per the contract; volatile keeps it one plain load the verifier can check.
        unsafe { core::ptr::read_volatile(self.0.add(off.bytes())) }
    }

    /// # Safety
    /// `off` must be the offset of a `u16` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u16(self, off: impl Offset) -> u16 {
        // SAFETY: per the contract.
        unsafe { core::ptr::read_volatile(self.0.add(off.bytes()).cast()) }
    }

    /// # Safety
    /// `off` must be the offset of a `u32` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u32(self, off: impl Offset) -> u32 {
        // SAFETY: per the contract.
        unsafe { core::ptr::read_volatile(self.0.add(off.bytes()).cast()) }
    }

    /// # Safety
    /// `off` must be the offset of a `u64` field of the pointed-to type.
    #[inline(always)]
    pub unsafe fn u64(self, off: impl Offset) -> u64 {
        // SAFETY: per the contract.
        unsafe { core::ptr::read_volatile(self.0.add(off.bytes()).cast()) }
    }

    /// Writes a `u32` field; nothing on a kernel that does not let the program write it.
    ///
    /// # Safety
    /// `off` must be the offset of a `u32` field the program type may write.
    #[inline(always)]
    pub unsafe fn set_u32(self, off: impl Offset, value: u32) {
        if off.writable() {
            // SAFETY: per the contract.
            unsafe { core::ptr::write_volatile(self.0.add(off.bytes()).cast(), value) }
        }
    }

    /// Writes a `u64` field; nothing on a kernel that does not let the program write it.
    ///
    /// # Safety
    /// `off` must be the offset of a `u64` field the program type may write.
    #[inline(always)]
    pub unsafe fn set_u64(self, off: impl Offset, value: u64) {
        if off.writable() {
            // SAFETY: per the contract.
            unsafe { core::ptr::write_volatile(self.0.add(off.bytes()).cast(), value) }
        }
    }

    /// Reads a bitfield described by `(field, its shift, width)`.
    ///
    /// # Safety
    /// As [`Self::u8`]; the loader checks the field lies within that byte.
    #[inline(always)]
    pub unsafe fn bits8(self, off: Field, shift: Shift, width: u32) -> u8 {
        // SAFETY: per the contract.
        let byte = unsafe { self.u8(off) };
        (byte >> (shift.0.bit_offset() % 8) as u32) & ((1u8 << width) - 1)
    }
}
