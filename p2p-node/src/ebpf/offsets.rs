//! The running kernel's field offsets, written into an eBPF object's instructions before it is
//! loaded (every object of `cc-ebpf`: the probes with aya, bbr-p2p with the struct_ops loader).
//!
//! Each kernel field access in the programs loads a marker naming the field as the immediate of
//! an `ld_imm64` (`cc_ebpf_common::layout::field_marker`); [`patch`] copies the object and writes
//! over every marker in its executable sections the offset [`layout::resolve`] found in the
//! running kernel's BTF (in bytes; in bits for a bitfield), and over every type marker the
//! struct's BTF id. The loaders never see a marker, and the programs read no memory to learn
//! an offset.

use cc_ebpf_common::layout::{self, PatchError, Resolved};
use object::{Object as _, ObjectSection as _, SectionFlags, SectionKind};

/// An object with the running kernel's offsets in its instructions, in 8-byte aligned memory
/// (as aya's ELF parser wants it).
pub struct Patched {
    words: Vec<u64>,
    len: usize,
    /// Markers replaced.
    pub fields: usize,
}

impl Patched {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("reading the eBPF object")]
    Elf(#[from] object::Error),
    #[error(
        "section {section} of the eBPF object has a field marker the loader does not know, or is \
         not whole instructions ({error:?}): object and loader built from different sources"
    )]
    Code { section: String, error: PatchError },
}

/// `elf` with `table`'s offsets written over its field markers (see the module note).
pub fn patch(elf: &[u8], kernel: &Resolved) -> Result<Patched, OffsetsError> {
    let mut code = Vec::new();
    for section in object::File::parse(elf)?.sections() {
        let executable = match section.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_EXECINSTR) != 0,
            _ => section.kind() == SectionKind::Text,
        };
        if let (true, Some((start, size))) = (executable, section.file_range()) {
            code.push((section.name()?.to_owned(), start as usize, size as usize));
        }
    }
    let mut patched = Patched {
        words: vec![0u64; elf.len().div_ceil(8)],
        len: elf.len(),
        fields: 0,
    };
    patched.bytes_mut().copy_from_slice(elf);
    for (section, start, size) in code {
        let bytes = &mut patched.bytes_mut()[start..start + size];
        patched.fields += layout::patch_fields(bytes, &kernel.table, &kernel.types)
            .map_err(|error| OffsetsError::Code { section, error })?;
    }
    Ok(patched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ebpf_common::layout::{FIELD_COUNT, FieldIndex, field_marker};

    /// Where `marker` sits as an `ld_imm64` immediate in `elf` (byte offsets).
    fn places(elf: &[u8], marker: u64) -> Vec<usize> {
        (0..elf.len().saturating_sub(16))
            .step_by(8)
            .filter(|&at| {
                let word = |i: usize| u32::from_le_bytes(elf[i..i + 4].try_into().unwrap());
                elf[at] == 0x18
                    && elf[at + 1] >> 4 == 0
                    && u64::from(word(at + 12)) << 32 | u64::from(word(at + 4)) == marker
            })
            .collect()
    }

    #[test]
    fn every_marker_of_every_object_gets_its_fields_offset() {
        // Made-up offsets, distinct per field, to see each land in its own place.
        let table: layout::Table = std::array::from_fn(|i| 8 * (1000 + i as u32));
        let kernel = Resolved {
            table,
            types: [4242],
            problems: Vec::new(),
        };
        for (name, elf) in [
            ("probes", super::super::PROBES_OBJECT),
            ("bbr_p2p", crate::ebpf::objects::BBR_P2P),
            ("reno_rs", crate::ebpf::objects::RENO_RS),
        ] {
            let cwnd = places(elf, field_marker(FieldIndex::TCP_SOCK__SND_CWND));
            assert!(!cwnd.is_empty(), "{name} reads snd_cwnd");
            if name == "probes" {
                // Every program that refreshes a snapshot reads snd_cwnd, in its own section
                // (the patcher walks every executable section): the probes' and the
                // collector's walk.
                let file = object::File::parse(elf).unwrap();
                for program in ["tp_btf/tcp_probe", "tp_btf/tcp_destroy_sock", "iter/tcp"] {
                    let (start, size) = file
                        .section_by_name(program)
                        .and_then(|s| s.file_range())
                        .unwrap_or_else(|| panic!("probes has no section {program}"));
                    let (start, end) = (start as usize, (start + size) as usize);
                    assert!(
                        cwnd.iter().any(|&at| (start..end).contains(&at)),
                        "{program} reads snd_cwnd"
                    );
                }
            }
            let patched = patch(elf, &kernel).unwrap();
            assert!(patched.fields >= cwnd.len(), "{name}");
            let out = patched.bytes();
            for at in cwnd {
                // In bytes: snd_cwnd is no bitfield.
                assert_eq!(
                    out[at + 4..at + 8],
                    (table[FieldIndex::TCP_SOCK__SND_CWND as usize] / 8).to_le_bytes(),
                    "{name} at byte {at}"
                );
                assert_eq!(out[at + 12..at + 16], [0; 4], "{name} at byte {at}");
            }
            for i in 0..FIELD_COUNT as u32 {
                let marker = u64::from(layout::FIELD_MARK) << 32 | u64::from(layout::MARKED | i);
                assert!(
                    places(out, marker).is_empty(),
                    "{name}: field {i} left unpatched"
                );
            }
            // Only code changed: the rest of the object is byte for byte the same.
            let differ = elf.iter().zip(out).filter(|(a, b)| a != b).count();
            assert!(differ <= patched.fields * 8, "{name}");
        }
    }
}
