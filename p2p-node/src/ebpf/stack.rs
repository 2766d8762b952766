//! The stack each eBPF program needs, read from its object the way the verifier counts it
//! (`check_max_stack_depth`): every function's frame is the deepest stack byte it touches,
//! rounded up to 32 bytes (at least 32), and a program needs the largest sum of frames along a
//! chain of BPF-to-BPF calls. Linux 6.1 allows 512 bytes for that sum; newer kernels may give
//! some programs more (private stacks), which is how `tcp_probe` once needed 544 bytes and
//! still loaded on 6.18.
//!
//! The count is static: every instruction of a function counts, reachable or not, so it is an
//! upper bound of what the verifier finds.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex};

/// The combined stack limit of the oldest supported kernel (`MAX_BPF_STACK`).
pub const MAX_COMBINED_STACK: u32 = 512;

/// One function: its section, first instruction and length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Function {
    section: SectionIndex,
    start: usize,
    len: usize,
}

/// Where a call relocation points: the target's section and, for a function symbol, its first
/// instruction (`None` for the section symbol: the call's immediate says where).
type CallTarget = (SectionIndex, Option<usize>);

/// `(program section, combined stack bytes)` of every program in an ELF object (sections other
/// than `.text` holding code).
pub fn program_stacks(elf: &[u8]) -> Result<Vec<(String, u32)>, object::Error> {
    let file = object::File::parse(elf)?;
    let code: HashMap<SectionIndex, Vec<u64>> = file
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .map(|s| {
            let insns = s
                .data()
                .unwrap_or_default()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            (s.index(), insns)
        })
        .collect();
    // Function boundaries: sized function symbols; a section without any is one function.
    let mut functions: Vec<Function> = file
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            Some(Function {
                section: s.section_index()?,
                start: s.address() as usize / 8,
                len: s.size() as usize / 8,
            })
        })
        .collect();
    for (&section, insns) in &code {
        if !functions.iter().any(|f| f.section == section) && !insns.is_empty() {
            functions.push(Function {
                section,
                start: 0,
                len: insns.len(),
            });
        }
    }
    let containing = |section: SectionIndex, insn: usize| {
        functions
            .iter()
            .copied()
            .find(|f| f.section == section && insn >= f.start && insn < f.start + f.len)
    };
    // Call relocations: (section, instruction) → (target section, target symbol's instruction),
    // or `None` for an undefined symbol (a kfunc: no BPF frame).
    let mut call_relocs: HashMap<(SectionIndex, usize), Option<CallTarget>> = HashMap::new();
    for section in file.sections().filter(|s| code.contains_key(&s.index())) {
        for (offset, reloc) in section.relocations() {
            let RelocationTarget::Symbol(index) = reloc.target() else {
                continue;
            };
            let sym = file.symbol_by_index(index)?;
            let target = sym.section_index().map(|target_section| {
                let at = (sym.kind() != object::SymbolKind::Section)
                    .then_some(sym.address() as usize / 8);
                (target_section, at)
            });
            call_relocs.insert((section.index(), offset as usize / 8), target);
        }
    }
    let callees = |f: Function| -> Vec<Function> {
        let insns = &code[&f.section];
        (f.start..f.start + f.len)
            .filter(|&i| is_pseudo_call(insns[i]))
            .filter_map(|i| {
                let imm = i64::from(imm(insns[i]));
                let (section, target) = match call_relocs.get(&(f.section, i)) {
                    Some(None) => return None,
                    Some(&Some((section, Some(at)))) => (section, at as i64),
                    // Against a section symbol the immediate holds the target minus one.
                    Some(&Some((section, None))) => (section, imm + 1),
                    // No relocation: pc-relative within the section.
                    None => (f.section, i as i64 + 1 + imm),
                };
                containing(section, usize::try_from(target).ok()?)
            })
            .collect()
    };
    let mut out = Vec::new();
    for section in file.sections() {
        let name = section.name()?;
        if name == ".text" || !code.contains_key(&section.index()) {
            continue;
        }
        let Some(entry) = containing(section.index(), 0) else {
            continue;
        };
        out.push((
            name.to_owned(),
            combined(
                entry,
                &|f| frame(&code[&f.section][f.start..f.start + f.len]),
                &callees,
                0,
            ),
        ));
    }
    out.sort();
    Ok(out)
}

/// The largest sum of frames along the calls from `f` (bounded: the verifier allows 8 frames).
fn combined(
    f: Function,
    frame: &dyn Fn(Function) -> u32,
    callees: &dyn Fn(Function) -> Vec<Function>,
    depth: usize,
) -> u32 {
    const MAX_CALL_FRAMES: usize = 8;
    let own = frame(f);
    if depth >= MAX_CALL_FRAMES {
        return own;
    }
    own + callees(f)
        .into_iter()
        .map(|c| combined(c, frame, callees, depth + 1))
        .max()
        .unwrap_or(0)
}

/// A function's frame as the verifier rounds it: the deepest byte below r10 it touches, at
/// least 1, rounded up to 32.
fn frame(insns: &[u64]) -> u32 {
    let mut deepest: i64 = 0;
    // Registers holding r10 plus a known offset.
    let mut fp: [Option<i64>; 11] = [None; 11];
    fp[10] = Some(0);
    for &insn in insns {
        let b = insn.to_le_bytes();
        let (op, dst, src) = (b[0], usize::from(b[1] & 0x0f), usize::from(b[1] >> 4));
        let off = i64::from(i16::from_le_bytes([b[2], b[3]]));
        let imm = i64::from(imm(insn));
        if dst > 10 || src > 10 {
            continue;
        }
        let class = op & 0x07;
        match (class, op) {
            // mov64 dst, src
            (_, 0xbf) => fp[dst] = fp[src],
            // add64 dst, imm
            (_, 0x07) => fp[dst] = fp[dst].map(|o| o + imm),
            // loads: base is src
            (0x01, _) => {
                if let Some(base) = fp[src] {
                    deepest = deepest.max(-(base + off));
                }
                fp[dst] = None;
            }
            // stores: base is dst
            (0x02 | 0x03, _) => {
                if let Some(base) = fp[dst] {
                    deepest = deepest.max(-(base + off));
                }
            }
            // Any other ALU result or call clobbers what it writes.
            (0x04 | 0x07, _) => fp[dst] = None,
            (0x05, 0x85) => fp[..6].iter_mut().for_each(|r| *r = None),
            _ => {}
        }
        if dst != 10
            && let Some(o) = fp[dst]
        {
            deepest = deepest.max(-o);
        }
    }
    let bytes = u32::try_from(deepest.max(1)).unwrap_or(u32::MAX);
    bytes.div_ceil(32) * 32
}

fn is_pseudo_call(insn: u64) -> bool {
    let b = insn.to_le_bytes();
    b[0] == 0x85 && b[1] >> 4 == 1
}

fn imm(insn: u64) -> i32 {
    i32::from_le_bytes(insn.to_le_bytes()[4..8].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program of every embedded object fits the oldest supported kernel's limit.
    #[test]
    fn every_program_fits_linux_6_1_combined_stack() {
        let objects = [
            ("probes", super::super::PROBES_OBJECT),
            ("bbr_p2p", super::super::objects::BBR_P2P),
            ("reno_rs", super::super::objects::RENO_RS),
        ];
        let mut seen = 0;
        for (object, elf) in objects {
            for (program, bytes) in program_stacks(elf).unwrap() {
                eprintln!("{object} {program}: {bytes} bytes of stack");
                assert!(
                    bytes <= MAX_COMBINED_STACK,
                    "{object} {program} needs {bytes} bytes of stack; Linux 6.1 allows {MAX_COMBINED_STACK}"
                );
                seen += 1;
            }
        }
        assert!(seen >= 10, "only {seen} programs found");
    }

    #[test]
    fn frames_round_like_the_verifier() {
        let insn = |op: u8, regs: u8, off: i16, imm: i32| {
            let mut b = [0u8; 8];
            b[0] = op;
            b[1] = regs;
            b[2..4].copy_from_slice(&off.to_le_bytes());
            b[4..8].copy_from_slice(&imm.to_le_bytes());
            u64::from_le_bytes(b)
        };
        // *(u64 *)(r10 - 8) = r1: 8 bytes, one 32-byte frame.
        assert_eq!(frame(&[insn(0x7b, 0x1a, -8, 0)]), 32);
        // r2 = r10; r2 += -488: a 488-byte buffer handed to a helper → 512.
        assert_eq!(
            frame(&[insn(0xbf, 0xa2, 0, 0), insn(0x07, 0x02, 0, -488)]),
            512
        );
        // r1 = *(u32 *)(r10 - 100) → 128; no stack at all still costs 32.
        assert_eq!(frame(&[insn(0x61, 0xa1, -100, 0)]), 128);
        assert_eq!(frame(&[insn(0x95, 0, 0, 0)]), 32);
    }
}
