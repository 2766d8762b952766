//! Kernel-function (kfunc) calls in the objects aya loads.
//!
//! A Rust eBPF program declares a kfunc as an `extern "C"` function: the object then holds a
//! call with a relocation against an undefined symbol of that name. aya 0.14 links BPF-to-BPF
//! calls only and would reject it, so before aya parses the object [`link`] rewrites each such
//! call as libbpf does: `BPF_PSEUDO_KFUNC_CALL` with the vmlinux BTF id of the function of that
//! name. A kfunc the running kernel does not have becomes `r0 = 0` (libbpf's weak kfuncs, which
//! resolve to 0): every kfunc the probes call returns a pointer and the caller checks it for
//! null, so on such a kernel (Linux 6.1 has no `bpf_rdonly_cast`) the path it guards is skipped,
//! and the verifier drops it as dead code. aya leaves the rewritten call alone: its call
//! relocation handles `BPF_PSEUDO_CALL` only, and it skips relocations against undefined
//! symbols.

use cc_ebpf_common::btf::{Btf, Kind};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

use super::struct_ops::{BPF_PSEUDO_KFUNC_CALL, OP_CALL, opcode, patch};

/// `r0 = 0` (`BPF_ALU64 | BPF_MOV | BPF_K`, dst r0, imm 0): what a call to a kfunc the kernel
/// lacks becomes.
const MOV64_R0_0: u64 = 0xb7;

/// An object with its kfunc calls linked for the running kernel, in 8-byte aligned memory (as
/// aya's ELF parser wants it).
pub struct Linked {
    words: Vec<u64>,
    len: usize,
    /// The kfuncs the object calls that the running kernel does not have (their calls return
    /// null), sorted.
    pub missing: Vec<String>,
}

impl Linked {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KfuncError {
    #[error("reading the eBPF object")]
    Elf(#[from] object::Error),
    #[error("the eBPF object's relocation against `{symbol}` at byte {at} is not on a call")]
    NotACall { symbol: String, at: u64 },
}

/// Links every call to an undefined symbol in `elf` against `btf` (see the module note).
pub fn link(elf: &[u8], btf: &Btf) -> Result<Linked, KfuncError> {
    let mut patches = Vec::new();
    let mut missing = Vec::new();
    {
        let file = object::File::parse(elf)?;
        for section in file.sections() {
            let Some((section_start, _)) = section.file_range() else {
                continue;
            };
            for (offset, relocation) in section.relocations() {
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    continue;
                };
                let symbol = file.symbol_by_index(index)?;
                if !symbol.is_undefined() {
                    continue;
                }
                let name = symbol.name()?.to_owned();
                let at = section_start + offset;
                let insn = elf
                    .get(at as usize..at as usize + 8)
                    .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
                let Some(mut insn) = insn.filter(|&i| opcode(i) == OP_CALL) else {
                    return Err(KfuncError::NotACall { symbol: name, at });
                };
                match btf.find(Kind::Func, &name) {
                    Ok(id) => patch(&mut insn, BPF_PSEUDO_KFUNC_CALL, id as i32),
                    Err(_) => {
                        insn = MOV64_R0_0;
                        missing.push(name);
                    }
                }
                patches.push((at as usize, insn));
            }
        }
    }
    let mut words = vec![0u64; elf.len().div_ceil(8)];
    // SAFETY: `words` has room for `elf.len()` bytes.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), elf.len()) };
    bytes.copy_from_slice(elf);
    for (at, insn) in patches {
        bytes[at..at + 8].copy_from_slice(&insn.to_ne_bytes());
    }
    missing.sort();
    missing.dedup();
    Ok(Linked {
        words,
        len: elf.len(),
        missing,
    })
}
