//! A struct_ops loader: registers kernel ops structs (e.g. `tcp_congestion_ops`) implemented by
//! Rust eBPF programs. aya has no struct_ops support (aya issues #200, #220): aya-obj refuses
//! objects with `struct_ops/` sections and `BPF_MAP_TYPE_STRUCT_OPS` is `Unsupported`, so this
//! module parses such an object and issues the `bpf(2)` commands itself. It is generic over the
//! ops type; everything type-specific comes from the running kernel's BTF.
//!
//! An object declares its ops in section `.p2pcc.struct_ops` ([`StructOpsDecl`]: kernel type,
//! name, flags) and provides one program per implemented member in section
//! `struct_ops/<member>`. Loading ([`StructOps::load`]):
//! 0. writes the running kernel's field offsets over the programs' field markers
//!    (`super::offsets`, `cc_ebpf_common::layout`);
//! 1. creates the maps of the `maps` section (aya-ebpf's map definitions);
//! 2. creates one read-only array map per `.rodata*` section, holding the section's bytes with
//!    the writable-field mask (`cc_ebpf_common::layout::WRITABLE_SYMBOL`) written over its
//!    symbol, and freezes it (`BPF_MAP_FREEZE`), so the verifier reads them as constants;
//! 3. relocates each program: map references become `BPF_PSEUDO_MAP_FD` loads, `.rodata`
//!    references `BPF_PSEUDO_MAP_VALUE` loads (map fd + offset, as libbpf's
//!    `bpf_object__relocate_data`), calls to undefined symbols kfunc calls
//!    (`BPF_PSEUDO_KFUNC_CALL`, the vmlinux BTF id of the function of that name), and calls to
//!    `.text` functions — with a relocation, or pc-relative without one, as LLVM emits for a
//!    static function in the same section — BPF-to-BPF calls to a copy of the function appended
//!    to the program (libbpf's `bpf_object__reloc_code`, aya-obj's `relocate_calls`);
//! 4. loads each program as `BPF_PROG_TYPE_STRUCT_OPS` with `attach_btf_id` = the ops type and
//!    `expected_attach_type` = the member's index in it.
//!
//! Registering ([`StructOps::register`]) creates the `BPF_MAP_TYPE_STRUCT_OPS` map with
//! `BPF_F_LINK`, fills its value (`bpf_struct_ops_<type>`: name, flags, a program fd per
//! function-pointer member) and creates the link. The ops stay registered while the returned
//! [`Registration`] lives; dropping it, or the process dying, unregisters them (sockets already
//! using a congestion control keep it until they close).

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
};

use aya_obj::generated::{
    BPF_F_LINK, BPF_F_RDONLY_PROG, bpf_attach_type, bpf_map_info, bpf_map_type, bpf_prog_type,
};
use cc_ebpf_common::{
    STRUCT_OPS_DECL_SECTION, STRUCT_OPS_PROG_PREFIX, StructOpsDecl,
    btf::{Btf, Kind},
    layout, unpadded,
};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex};

use super::sys;

/// `BPF_PSEUDO_MAP_FD`: the `ld_imm64` immediate is a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `BPF_PSEUDO_CALL`: the call immediate is a relative instruction offset (a BPF subprogram).
const BPF_PSEUDO_CALL: u8 = 1;
/// `BPF_PSEUDO_MAP_VALUE`: the `ld_imm64` immediates are a map fd and an offset in its value.
const BPF_PSEUDO_MAP_VALUE: u8 = 2;
/// `BPF_PSEUDO_KFUNC_CALL`: the call immediate is a BTF function id.
pub(super) const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
/// Opcode of `ld_imm64` (BPF_LD | BPF_IMM | BPF_DW).
const OP_LD_IMM64: u8 = 0x18;
/// Opcode of `call` (BPF_JMP | BPF_CALL).
pub(super) const OP_CALL: u8 = 0x85;
/// Size of aya-ebpf's map definition (`bpf_map_def`: type, key, value, max, flags, id, pinning).
const MAP_DEF_SIZE: usize = 28;

/// Members without which the kernel refuses an ops type, as it checks them at registration
/// (each inner list: at least one of). Known for the types p2p-cc uses; for other types the
/// kernel's own check still applies, with a less specific error.
const MANDATORY: &[(&str, &[&[&str]])] = &[(
    "tcp_congestion_ops",
    // tcp_validate_congestion_control(): ssthresh, undo_cwnd, and cong_avoid or cong_control.
    &[
        &["ssthresh"],
        &["undo_cwnd"],
        &["cong_avoid", "cong_control"],
    ],
)];

/// Why a struct_ops object could not be loaded or registered.
#[derive(Debug, thiserror::Error)]
pub enum StructOpsError {
    #[error("parsing the struct_ops object: {0}")]
    Elf(#[from] object::Error),
    #[error("malformed struct_ops object: {0}")]
    Malformed(String),
    #[error(
        "the running kernel has no struct_ops support for `{type_name}` ({cause}); it needs \
         CONFIG_BPF_SYSCALL, CONFIG_BPF_JIT and BTF (/sys/kernel/btf/vmlinux). The TCP probes \
         and the kernel's own congestion controls still work"
    )]
    NoKernelSupport { type_name: String, cause: String },
    #[error(
        "`{type_name}` has no function-pointer member `{member}` (program section `struct_ops/{member}`)"
    )]
    UnknownMember { type_name: String, member: String },
    #[error("`{name}` lacks mandatory member(s) of {type_name}: {missing}")]
    MissingMandatory {
        name: String,
        type_name: String,
        missing: String,
    },
    #[error(
        "program `{program}` calls `{function}`, which is not a kernel function (kfunc) in the running kernel's BTF"
    )]
    UnknownKfunc { program: String, function: String },
    #[error(
        "program `{program}` uses `{symbol}`, which the struct_ops loader cannot relocate (global data or a non-inlined function call)"
    )]
    UnsupportedRelocation { program: String, symbol: String },
    #[error(
        "the kernel verifier rejected struct_ops program `{program}` ({source}); verifier log (last lines):\n{log}"
    )]
    Verifier {
        program: String,
        source: io::Error,
        log: String,
    },
    #[error(
        "`{name}` cannot run on this kernel: {fields}; the verifier rejected its program \
         `{program}` (last lines of its log:\n{log})"
    )]
    KernelFields {
        name: String,
        program: String,
        fields: String,
        log: String,
    },
    #[error(
        "registering struct_ops needs CAP_BPF and CAP_SYS_ADMIN (or root): {what} was refused ({source})"
    )]
    PermissionDenied { what: String, source: io::Error },
    #[error("an algorithm named `{name}` is already registered ({owner})")]
    AlreadyRegistered { name: String, owner: String },
    #[error("bpf({what}): {source}")]
    Syscall { what: String, source: io::Error },
}

fn syscall_error(what: impl Into<String>, source: io::Error) -> StructOpsError {
    let what = what.into();
    if source.raw_os_error() == Some(libc::EPERM) {
        StructOpsError::PermissionDenied { what, source }
    } else {
        StructOpsError::Syscall { what, source }
    }
}

/// Where the ops type and its kernel wrapper are in the running kernel's BTF.
struct OpsType {
    name: String,
    type_id: u32,
    value_type_id: u32,
    value_size: u32,
    /// Byte offset of the ops struct (member `data`) inside the value.
    data_offset: usize,
    /// `(byte offset, size)` of the ops' `name` and `flags` members.
    name_field: (usize, usize),
    flags_field: (usize, usize),
}

impl OpsType {
    fn resolve(btf: &Btf, type_name: &str) -> Result<Self, StructOpsError> {
        let no_support = |cause: String| StructOpsError::NoKernelSupport {
            type_name: type_name.into(),
            cause,
        };
        let type_id = btf
            .find(Kind::Struct, type_name)
            .map_err(|e| no_support(e.to_string()))?;
        let value_name = format!("bpf_struct_ops_{type_name}");
        let value_type_id = btf
            .find(Kind::Struct, &value_name)
            .map_err(|e| no_support(e.to_string()))?;
        let data = btf
            .field(&value_name, "data")
            .map_err(|e| no_support(e.to_string()))?;
        let value_size = btf
            .size_of(value_type_id)
            .ok_or_else(|| no_support(format!("{value_name} has no size in BTF")))?;
        let member = |member: &str| {
            let f = btf
                .field(type_name, member)
                .map_err(|e| no_support(e.to_string()))?;
            Ok::<_, StructOpsError>((f.bit_offset as usize / 8, f.bit_size as usize / 8))
        };
        Ok(Self {
            name: type_name.into(),
            type_id,
            value_type_id,
            value_size,
            data_offset: data.bit_offset as usize / 8,
            name_field: member("name")?,
            flags_field: member("flags")?,
        })
    }

    /// Index and byte offset (in the ops struct) of a function-pointer member.
    fn function_member(&self, btf: &Btf, member: &str) -> Result<(u32, usize), StructOpsError> {
        let unknown = || StructOpsError::UnknownMember {
            type_name: self.name.clone(),
            member: member.into(),
        };
        let index = btf.member_index(self.type_id, member).ok_or_else(unknown)?;
        let m = btf
            .members(self.type_id)
            .nth(index as usize)
            .ok_or_else(unknown)?;
        let is_fn_ptr = btf.ty(btf.skip_mods(m.type_id)).is_some_and(|t| {
            t.kind == Kind::Ptr
                && btf
                    .ty(btf.skip_mods(t.size_or_type))
                    .is_some_and(|p| p.kind == Kind::FuncProto)
        });
        if !is_fn_ptr {
            return Err(unknown());
        }
        Ok((index, m.bit_offset as usize / 8))
    }
}

/// A map definition from the object's `maps` section.
struct MapSpec {
    name: String,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// One program: the member it implements and its instructions with relocations pending.
struct ProgramSpec {
    member: String,
    /// For a member whose arguments changed between kernels, the argument count this form is
    /// for (section `struct_ops/<member>@<arguments>`); `None` for the default form.
    arity: Option<u32>,
    symbol: String,
    insns: Vec<u64>,
    relocations: Vec<Relocation>,
}

/// A relocation: instruction index and what it refers to.
#[derive(Clone)]
struct Relocation {
    at: usize,
    symbol: String,
    kind: RelocKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RelocKind {
    /// A map of the `maps` section.
    Map,
    /// Data in a `.rodata*` section (index in [`ObjectSpec::rodata`]); `offset` is the symbol's
    /// place in it, to which the `ld_imm64`'s own immediate adds.
    Rodata {
        section: usize,
        offset: u64,
    },
    /// An undefined symbol: a kernel function.
    Kfunc,
    /// A function in `.text` (not inlined): a BPF-to-BPF call. `insn` is the function's first
    /// instruction in `.text`, or `None` for the section symbol (the call's imm holds it).
    Subprogram {
        insn: Option<usize>,
    },
    Other,
}

/// A parsed struct_ops object.
struct ObjectSpec {
    decl: StructOpsDecl,
    license: CString,
    maps: Vec<MapSpec>,
    /// `.rodata*` sections: (name, bytes).
    rodata: Vec<(String, Vec<u8>)>,
    /// Symbols in them: name → (section index in `rodata`, offset, size).
    rodata_symbols: HashMap<String, (usize, usize, usize)>,
    programs: Vec<ProgramSpec>,
    /// `.text`: functions the programs call (instructions, relocations, and each function's
    /// `(first instruction, length)`); the ones a program reaches are appended to it.
    text: Option<Text>,
}

struct Text {
    insns: Vec<u64>,
    relocations: Vec<Relocation>,
    functions: Vec<(usize, usize)>,
}

impl Text {
    /// The function containing instruction `insn`.
    fn function_at(&self, insn: usize) -> Option<(usize, usize)> {
        self.functions
            .iter()
            .copied()
            .find(|&(start, len)| insn >= start && insn < start + len)
    }
}

fn parse(elf: &[u8]) -> Result<ObjectSpec, StructOpsError> {
    let file = object::File::parse(elf)?;
    let malformed = |why: String| StructOpsError::Malformed(why);

    let decl_data = file
        .section_by_name(STRUCT_OPS_DECL_SECTION)
        .ok_or_else(|| {
            malformed(format!(
                "no {STRUCT_OPS_DECL_SECTION} section (declare the ops with cc_ebpf::struct_ops!)"
            ))
        })?
        .data()?;
    if decl_data.len() != size_of::<StructOpsDecl>() {
        return Err(malformed(format!(
            "{STRUCT_OPS_DECL_SECTION} has {} bytes",
            decl_data.len()
        )));
    }
    // SAFETY: StructOpsDecl is plain `#[repr(C)]` integers and byte arrays of exactly this size;
    // `read_unaligned` copes with the section's alignment.
    let decl: StructOpsDecl =
        unsafe { decl_data.as_ptr().cast::<StructOpsDecl>().read_unaligned() };

    let license = file
        .section_by_name("license")
        .ok_or_else(|| malformed("no license section".into()))?
        .data()?;
    let license = CString::new(unpadded(license)).map_err(|e| malformed(e.to_string()))?;

    // The linker may emit several sections named `maps` (one per map definition group).
    let maps_sections: Vec<SectionIndex> = file
        .sections()
        .filter(|s| s.name() == Ok("maps"))
        .map(|s| s.index())
        .collect();
    let mut maps = Vec::new();
    for &maps_index in &maps_sections {
        let data = file.section_by_index(maps_index)?.data()?;
        for sym in file.symbols().filter(|s| {
            s.section_index() == Some(maps_index) && s.kind() != object::SymbolKind::Section
        }) {
            let at = sym.address() as usize;
            let def = data.get(at..at + MAP_DEF_SIZE).ok_or_else(|| {
                malformed(format!("map {} is truncated", sym.name().unwrap_or("?")))
            })?;
            let word =
                |i: usize| u32::from_ne_bytes(def[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
            maps.push(MapSpec {
                name: sym.name()?.to_owned(),
                map_type: word(0),
                key_size: word(1),
                value_size: word(2),
                max_entries: word(3),
                map_flags: word(4),
            });
        }
    }

    let rodata_sections: Vec<SectionIndex> = file
        .sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".rodata")))
        .map(|s| s.index())
        .collect();
    let mut rodata = Vec::new();
    for &index in &rodata_sections {
        let section = file.section_by_index(index)?;
        rodata.push((section.name()?.to_owned(), section.data()?.to_vec()));
    }
    let mut rodata_symbols = HashMap::new();
    for sym in file.symbols() {
        let Some(section) = sym
            .section_index()
            .and_then(|i| rodata_sections.iter().position(|&r| r == i))
        else {
            continue;
        };
        if sym.kind() != object::SymbolKind::Section {
            rodata_symbols.insert(
                sym.name()?.to_owned(),
                (section, sym.address() as usize, sym.size() as usize),
            );
        }
    }

    let text_section = file.section_by_name(".text").map(|s| s.index());
    let section_code =
        |section: &object::Section<'_, '_>| -> Result<(Vec<u64>, Vec<Relocation>), StructOpsError> {
            let name = section.name()?;
            let data = section.data()?;
            if data.len() % 8 != 0 {
                return Err(StructOpsError::Malformed(format!(
                    "section {name} is not whole instructions"
                )));
            }
            let insns = data
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                .collect();
            let mut relocations = Vec::new();
            for (offset, reloc) in section.relocations() {
                let RelocationTarget::Symbol(index) = reloc.target() else {
                    return Err(StructOpsError::Malformed(format!(
                        "unexpected relocation in {name}"
                    )));
                };
                let sym = file.symbol_by_index(index)?;
                let rodata_section = sym
                    .section_index()
                    .and_then(|i| rodata_sections.iter().position(|&r| r == i));
                let kind = if sym.is_undefined() {
                    RelocKind::Kfunc
                } else if let Some(section) = rodata_section {
                    RelocKind::Rodata {
                        section,
                        offset: sym.address(),
                    }
                } else if sym
                    .section_index()
                    .is_some_and(|i| maps_sections.contains(&i))
                {
                    RelocKind::Map
                } else if sym.section_index().is_some() && sym.section_index() == text_section {
                    let insn = (sym.kind() != object::SymbolKind::Section)
                        .then_some(sym.address() as usize / 8);
                    RelocKind::Subprogram { insn }
                } else {
                    RelocKind::Other
                };
                relocations.push(Relocation {
                    at: (offset / 8) as usize,
                    symbol: sym.name()?.to_owned(),
                    kind,
                });
            }
            // Calls LLVM resolved itself (a static function in the same section): `call` with
            // src_reg BPF_PSEUDO_CALL, a pc-relative imm, and no relocation. Inside a program
            // section they stay valid as they are; in `.text` the callee must travel with the
            // caller, so they become relocations to it (as libbpf's and aya-obj's do).
            if Some(section.index()) == text_section {
                let insns: &Vec<u64> = &insns;
                for (at, &insn) in insns.iter().enumerate() {
                    if opcode(insn) != OP_CALL
                        || src_reg(insn) != BPF_PSEUDO_CALL
                        || relocations.iter().any(|r| r.at == at)
                    {
                        continue;
                    }
                    let target = usize::try_from(at as i64 + 1 + i64::from(imm(insn)))
                        .ok()
                        .filter(|&t| t < insns.len())
                        .ok_or_else(|| {
                            StructOpsError::Malformed(format!(
                                "call at {name}+{at} jumps outside the section"
                            ))
                        })?;
                    relocations.push(Relocation {
                        at,
                        symbol: format!("{name}+{}", target * 8),
                        kind: RelocKind::Subprogram { insn: Some(target) },
                    });
                }
            }
            Ok((insns, relocations))
        };

    let mut programs = Vec::new();
    for section in file.sections() {
        let name = section.name()?;
        let Some(member) = name.strip_prefix(STRUCT_OPS_PROG_PREFIX) else {
            continue;
        };
        let (member, arity) = match member.split_once('@') {
            Some((member, n)) => {
                let n = n.parse().map_err(|_| {
                    malformed(format!(
                        "section {name}: `@` must be followed by an argument count"
                    ))
                })?;
                (member, Some(n))
            }
            None => (member, None),
        };
        let (insns, relocations) = section_code(&section)?;
        let symbol = file
            .symbols()
            .find(|s| {
                s.section_index() == Some(section.index()) && s.kind() == object::SymbolKind::Text
            })
            .and_then(|s| s.name().ok().map(str::to_owned))
            .unwrap_or_else(|| member.to_owned());
        programs.push(ProgramSpec {
            member: member.to_owned(),
            arity,
            symbol,
            insns,
            relocations,
        });
    }
    if programs.is_empty() {
        return Err(malformed("no struct_ops/<member> program sections".into()));
    }
    let text = match text_section {
        Some(index) => {
            let (insns, relocations) = section_code(&file.section_by_index(index)?)?;
            let functions = file
                .symbols()
                .filter(|s| {
                    s.section_index() == Some(index)
                        && s.kind() == object::SymbolKind::Text
                        && s.size() > 0
                })
                .map(|s| (s.address() as usize / 8, s.size() as usize / 8))
                .collect();
            (!insns.is_empty()).then_some(Text {
                insns,
                relocations,
                functions,
            })
        }
        None => None,
    };
    Ok(ObjectSpec {
        decl,
        license,
        maps,
        rodata,
        rodata_symbols,
        programs,
        text,
    })
}

/// A program with its subprograms: instructions, relocations, call site → target index.
type Linked = (Vec<u64>, Vec<Relocation>, HashMap<usize, usize>);

/// Appends to a program the `.text` functions it reaches (transitively), as libbpf does: the
/// verifier rejects unreachable instructions, so only called functions may be appended.
/// Returns the instructions, all relocations at their new positions, and for each call
/// relocation the new index of its target. Errors name a symbol that cannot be placed.
fn link_subprograms(
    mut insns: Vec<u64>,
    mut relocations: Vec<Relocation>,
    text: Option<&Text>,
) -> Result<Linked, String> {
    let mut placed_functions: HashMap<usize, usize> = HashMap::new();
    let mut call_targets = HashMap::new();
    let mut i = 0;
    // Relocations are appended as functions are placed, so this walks the callees' too.
    while i < relocations.len() {
        let r = relocations[i].clone();
        i += 1;
        let RelocKind::Subprogram { insn: symbol_insn } = r.kind else {
            continue;
        };
        let text = text.ok_or_else(|| r.symbol.clone())?;
        // Against the section symbol, the call's imm is the target's offset minus one.
        let target = match symbol_insn {
            Some(t) => t,
            None => {
                usize::try_from(i64::from(imm(insns[r.at])) + 1).map_err(|_| r.symbol.clone())?
            }
        };
        let (start, len) = text.function_at(target).ok_or_else(|| r.symbol.clone())?;
        let base = match placed_functions.get(&start) {
            Some(&base) => base,
            None => {
                let base = insns.len();
                insns.extend_from_slice(&text.insns[start..start + len]);
                relocations.extend(
                    text.relocations
                        .iter()
                        .filter(|t| t.at >= start && t.at < start + len)
                        .map(|t| Relocation {
                            at: t.at - start + base,
                            ..t.clone()
                        }),
                );
                placed_functions.insert(start, base);
                base
            }
        };
        call_targets.insert(r.at, base + (target - start));
    }
    Ok((insns, relocations, call_targets))
}

/// Which program forms to load: for a member with forms for several argument counts
/// (`struct_ops/<member>@<n>`), the one for the running kernel's count, else the default form.
/// `arity` answers a member's argument count in the kernel's BTF.
fn choose_forms(forms: &[(&str, Option<u32>)], arity: impl Fn(&str) -> Option<u32>) -> Vec<bool> {
    forms
        .iter()
        .map(|&(member, form)| {
            let kernel = arity(member);
            let specific = forms
                .iter()
                .any(|&(m, f)| m == member && f.is_some() && f == kernel);
            match form {
                Some(n) => Some(n) == kernel,
                None => !specific,
            }
        })
        .collect()
}

/// Sets the src_reg nibble and the immediate of an instruction.
pub(super) fn patch(insn: &mut u64, src_reg: u8, imm: i32) {
    let mut bytes = insn.to_ne_bytes();
    bytes[1] = (bytes[1] & 0x0f) | (src_reg << 4);
    bytes[4..8].copy_from_slice(&imm.to_ne_bytes());
    *insn = u64::from_ne_bytes(bytes);
}

pub(super) fn opcode(insn: u64) -> u8 {
    insn.to_ne_bytes()[0]
}

fn src_reg(insn: u64) -> u8 {
    insn.to_ne_bytes()[1] >> 4
}

fn imm(insn: u64) -> i32 {
    i32::from_ne_bytes(insn.to_ne_bytes()[4..8].try_into().expect("4 bytes"))
}

/// Creates the `.rodata` maps (with the `writable` mask) and loads every program.
fn load_programs(
    spec: &ObjectSpec,
    ops: &OpsType,
    btf: &Btf,
    maps: &HashMap<String, (OwnedFd, u32)>,
    layout: &layout::Resolved,
    writable: u64,
    name: &str,
) -> Result<Vec<(String, usize, OwnedFd)>, StructOpsError> {
    let rodata = create_rodata_maps(spec.rodata.clone(), &spec.rodata_symbols, writable)?;
    let mut programs = Vec::new();
    for p in &spec.programs {
        let (index, offset) = ops.function_member(btf, &p.member)?;
        let (insns, relocations, placed) =
            link_subprograms(p.insns.clone(), p.relocations.clone(), spec.text.as_ref()).map_err(
                |symbol| StructOpsError::UnsupportedRelocation {
                    program: p.symbol.clone(),
                    symbol,
                },
            )?;
        let mut insns = insns;
        for r in &relocations {
            let unsupported = || StructOpsError::UnsupportedRelocation {
                program: p.symbol.clone(),
                symbol: r.symbol.clone(),
            };
            let insn = insns.get_mut(r.at).ok_or_else(unsupported)?;
            match r.kind {
                RelocKind::Map if opcode(*insn) == OP_LD_IMM64 => {
                    let (fd, _) = maps.get(&r.symbol).ok_or_else(unsupported)?;
                    patch(insn, BPF_PSEUDO_MAP_FD, fd.as_raw_fd());
                }
                RelocKind::Rodata { section, offset } if opcode(*insn) == OP_LD_IMM64 => {
                    let offset =
                        i64::try_from(offset).map_err(|_| unsupported())? + i64::from(imm(*insn));
                    let offset = i32::try_from(offset).map_err(|_| unsupported())?;
                    patch(insn, BPF_PSEUDO_MAP_VALUE, rodata[section].as_raw_fd());
                    // The second half of ld_imm64 carries the offset into the value.
                    let next = insns.get_mut(r.at + 1).ok_or_else(unsupported)?;
                    patch(next, 0, offset);
                }
                RelocKind::Kfunc if opcode(*insn) == OP_CALL => {
                    let id = btf.find(Kind::Func, &r.symbol).map_err(|_| {
                        StructOpsError::UnknownKfunc {
                            program: p.symbol.clone(),
                            function: r.symbol.clone(),
                        }
                    })?;
                    patch(insn, BPF_PSEUDO_KFUNC_CALL, id as i32);
                }
                RelocKind::Subprogram { .. } if opcode(*insn) == OP_CALL => {
                    let target = placed.get(&r.at).copied().ok_or_else(unsupported)?;
                    patch(
                        insn,
                        BPF_PSEUDO_CALL,
                        (target as i64 - (r.at as i64 + 1)) as i32,
                    );
                }
                _ => return Err(unsupported()),
            }
        }
        let fd = sys::prog_load(&sys::ProgLoad {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_STRUCT_OPS as u32,
            name: &p.symbol,
            insns: &insns,
            license: &spec.license,
            attach_btf_id: ops.type_id,
            expected_attach_type: index,
        })
        .map_err(|(source, log)| match source.raw_os_error() {
            Some(libc::EPERM) if log.is_empty() => {
                syscall_error(format!("loading program {}", p.symbol), source)
            }
            _ if layout.summary().is_some() => StructOpsError::KernelFields {
                program: p.symbol.clone(),
                name: name.to_owned(),
                fields: layout.summary().unwrap_or_default(),
                log: tail(&log, 10),
            },
            _ => StructOpsError::Verifier {
                program: p.symbol.clone(),
                source,
                log: tail(&log, 40),
            },
        })?;
        programs.push((p.member.clone(), offset, fd));
    }
    Ok(programs)
}

/// The field a verifier log says the program may not write (`no write support to tcp_sock at
/// off 1820`): a socket field (sock, inet_connection_sock and tcp_sock share offset 0) whose
/// place in `table` is that byte offset.
fn refused_write(log: &str, table: &layout::Table) -> Option<usize> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("no write support to "))?;
    let (_, rest) = line.split_once("no write support to ")?;
    let (ty, off) = rest.split_once(" at off ")?;
    let off: u32 = off.trim().parse().ok()?;
    let sockets = ["sock", "inet_connection_sock", "tcp_sock"];
    let family: &[&str] = if sockets.contains(&ty) {
        &sockets
    } else {
        &[ty]
    };
    layout::FIELDS.iter().zip(table).position(|(f, &bits)| {
        family.contains(&f.ty) && bits != layout::ABSENT && bits % 8 == 0 && bits / 8 == off
    })
}

/// Creates a frozen, program-read-only array map for each `.rodata*` section, holding its bytes
/// with the `writable` mask written over [`layout::WRITABLE_SYMBOL`] (libbpf's handling of
/// `.rodata`: `bpf_object__populate_internal_map` then `bpf_map_freeze`).
fn create_rodata_maps(
    sections: Vec<(String, Vec<u8>)>,
    symbols: &HashMap<String, (usize, usize, usize)>,
    writable: u64,
) -> Result<Vec<OwnedFd>, StructOpsError> {
    let sections = fill_writable(sections, symbols, writable)?;
    sections
        .into_iter()
        .map(|(name, data)| {
            let fd = sys::map_create(&sys::MapCreate {
                map_type: bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
                name: &name,
                key_size: 4,
                value_size: u32::try_from(data.len().max(1))
                    .map_err(|_| StructOpsError::Malformed(format!("{name} is too large")))?,
                // One value: the whole section.
                max_entries: 1,
                map_flags: BPF_F_RDONLY_PROG,
                btf_fd: None,
                btf_key_type_id: 0,
                btf_value_type_id: 0,
                btf_vmlinux_value_type_id: 0,
            })
            .map_err(|e| syscall_error(format!("creating the {name} map"), e))?;
            let mut value = data;
            if value.is_empty() {
                value.push(0);
            }
            sys::map_update(fd.as_raw_fd(), &0u32.to_ne_bytes(), &value)
                .map_err(|e| syscall_error(format!("filling the {name} map"), e))?;
            sys::map_freeze(fd.as_raw_fd())
                .map_err(|e| syscall_error(format!("freezing the {name} map"), e))?;
            Ok(fd)
        })
        .collect()
}

/// The `.rodata*` sections with the `writable` mask written over its symbol.
fn fill_writable(
    mut sections: Vec<(String, Vec<u8>)>,
    symbols: &HashMap<String, (usize, usize, usize)>,
    writable: u64,
) -> Result<Vec<(String, Vec<u8>)>, StructOpsError> {
    let symbol = layout::WRITABLE_SYMBOL;
    let Some(&(section, offset, size)) = symbols.get(symbol) else {
        return Ok(sections);
    };
    let value = writable.to_ne_bytes();
    let slot = sections
        .get_mut(section)
        .and_then(|(_, data)| data.get_mut(offset..offset + size))
        .filter(|slot| slot.len() == value.len())
        .ok_or_else(|| {
            StructOpsError::Malformed(format!(
                "{symbol} is {size} bytes, the loader's {} (object and loader built from \
                 different sources)",
                value.len()
            ))
        })?;
    slot.copy_from_slice(&value);
    Ok(sections)
}

/// A struct_ops object whose maps exist and whose programs the verifier accepted.
pub struct StructOps {
    decl: StructOpsDecl,
    ops: OpsType,
    /// (member, byte offset in the ops struct, program fd).
    programs: Vec<(String, usize, OwnedFd)>,
    maps: HashMap<String, (OwnedFd, u32)>,
    /// Fields the programs would write but this kernel does not let them (the writes skipped).
    read_only: Vec<String>,
}

impl std::fmt::Debug for StructOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructOps")
            .field("type", &self.ops.name)
            .field("name", &self.name())
            .field(
                "members",
                &self.programs.iter().map(|p| &p.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl StructOps {
    /// Parses `elf`, creates its maps and loads its programs against the running kernel.
    pub fn load(elf: &[u8], btf: &Btf) -> Result<Self, StructOpsError> {
        let layout = layout::resolve(btf);
        // The running kernel's field offsets as the programs' immediates.
        let object = super::offsets::patch(elf, &layout)
            .map_err(|e| StructOpsError::Malformed(super::error_chain(&e)))?;
        let spec = parse(object.bytes())?;
        let type_name = unpadded(&spec.decl.type_name).to_owned();
        let ops = OpsType::resolve(btf, &type_name)?;
        let name = unpadded(&spec.decl.name).to_owned();

        let forms: Vec<(&str, Option<u32>)> = spec
            .programs
            .iter()
            .map(|p| (p.member.as_str(), p.arity))
            .collect();
        let chosen = choose_forms(&forms, |member| btf.fn_member_arity(&type_name, member));
        let mut spec = spec;
        let mut keep = chosen.into_iter();
        spec.programs.retain(|_| keep.next().unwrap_or(false));
        let members: Vec<&str> = spec.programs.iter().map(|p| p.member.as_str()).collect();
        if let Some((_, groups)) = MANDATORY.iter().find(|(t, _)| *t == type_name) {
            let missing: Vec<String> = groups
                .iter()
                .filter(|any_of| !any_of.iter().any(|m| members.contains(m)))
                .map(|any_of| any_of.join(" or "))
                .collect();
            if !missing.is_empty() {
                return Err(StructOpsError::MissingMandatory {
                    name,
                    type_name,
                    missing: missing.join(", "),
                });
            }
        }

        let mut maps = HashMap::new();
        for m in &spec.maps {
            // Local-storage maps must describe key and value in BTF: an `int` key and a byte
            // array of the value's size serve (the kernel checks sizes, not field types).
            let needs_btf = m.map_type == bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as u32;
            let btf = match needs_btf {
                true => Some(
                    sys::btf_load(&btf_blob(Some(m.value_size)))
                        .map_err(|e| syscall_error("loading map BTF", e))?,
                ),
                false => None,
            };
            let fd = sys::map_create(&sys::MapCreate {
                map_type: m.map_type,
                name: &m.name,
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                map_flags: m.map_flags,
                btf_fd: btf.as_ref().map(|b| b.as_raw_fd()),
                btf_key_type_id: if needs_btf { BTF_INT } else { 0 },
                btf_value_type_id: if needs_btf { BTF_VALUE_ARRAY } else { 0 },
                btf_vmlinux_value_type_id: 0,
            })
            .map_err(|e| syscall_error(format!("creating map {}", m.name), e))?;
            maps.insert(m.name.clone(), (fd, m.map_type));
        }

        // Fields the kernel does not let this program type write, learnt from the verifier:
        // their bit is cleared in the writable mask and the programs are loaded again (each
        // round clears one more bit, so this ends).
        let mut writable = u64::MAX;
        let mut read_only = Vec::new();
        let programs = loop {
            match load_programs(&spec, &ops, btf, &maps, &layout, writable, &name) {
                Err(StructOpsError::Verifier { log, .. })
                    if let Some(field) = refused_write(&log, &layout.table)
                        && writable & (1 << field) != 0 =>
                {
                    writable &= !(1 << field);
                    let f = layout::FIELDS[field];
                    read_only.push(format!("{}.{}", f.ty, f.path));
                }
                other => break other?,
            }
        };
        if !read_only.is_empty() {
            tracing::warn!(
                "`{name}` runs without writing {}: this kernel does not let congestion controls \
                 write it",
                read_only.join(", ")
            );
        }

        Ok(Self {
            decl: spec.decl,
            ops,
            read_only,
            programs,
            maps,
        })
    }

    /// Kernel fields the programs would write but this kernel does not let congestion controls
    /// write (`struct.member`): those writes are skipped.
    pub fn read_only_fields(&self) -> &[String] {
        &self.read_only
    }

    /// The name the ops register under.
    pub fn name(&self) -> &str {
        unpadded(&self.decl.name)
    }

    /// Takes a map of the object out, as an aya map for typed access (like `Ebpf::take_map`).
    pub fn take_map(&mut self, name: &str) -> Option<Result<aya::maps::Map, aya::maps::MapError>> {
        let (fd, map_type) = self.maps.remove(name)?;
        Some(aya::maps::MapData::from_fd(fd).map(|data| wrap_map(map_type, data)))
    }

    /// Takes a map of the object out as a raw fd (for map types aya cannot wrap, such as
    /// socket storage).
    pub fn take_map_fd(&mut self, name: &str) -> Option<OwnedFd> {
        self.maps.remove(name).map(|(fd, _)| fd)
    }

    /// Registers the ops with the kernel, through a link where the kernel has struct_ops links
    /// (Linux ≥ 6.4), else through the struct_ops map alone ([`Attach::Auto`]).
    pub fn register(self) -> Result<Registration, StructOpsError> {
        self.register_with(Attach::Auto)
    }

    /// Registers the ops the way `attach` says.
    pub fn register_with(self, attach: Attach) -> Result<Registration, StructOpsError> {
        let name = self.name().to_owned();
        // The struct_ops map must reference some loaded BTF object; the ops' own types come
        // from vmlinux, so a minimal BTF (one `int`) serves.
        let btf_fd = sys::btf_load(&btf_blob(None)).map_err(|e| syscall_error("loading BTF", e))?;
        let create = |map_flags: u32| {
            sys::map_create(&sys::MapCreate {
                map_type: bpf_map_type::BPF_MAP_TYPE_STRUCT_OPS as u32,
                name: &name,
                key_size: 4,
                value_size: self.ops.value_size,
                max_entries: 1,
                map_flags,
                btf_fd: Some(btf_fd.as_raw_fd()),
                btf_key_type_id: 0,
                btf_value_type_id: 0,
                btf_vmlinux_value_type_id: self.ops.value_type_id,
            })
            .map_err(|e| syscall_error(format!("creating the {} map", self.ops.name), e))
        };
        // Probe, don't assume: before 6.4 the kernel refuses BPF_F_LINK with EINVAL.
        let (map, linked) = match attach {
            Attach::Map => (create(0)?, false),
            Attach::Link => (create(BPF_F_LINK)?, true),
            Attach::Auto => match create(BPF_F_LINK) {
                Err(StructOpsError::Syscall { source, .. })
                    if source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    tracing::info!(
                        "struct_ops links are unavailable (Linux < 6.4): registering `{name}` \
                         through its map; it is unregistered when p2p-node exits normally, or \
                         on p2p-node's next start after a crash"
                    );
                    (create(0)?, false)
                }
                other => (other?, true),
            },
        };

        let value = self.map_value()?;
        let already = |map: RawFd| StructOpsError::AlreadyRegistered {
            owner: registered_owner(&name, &self.ops, self.ops.name_field.0, map),
            name: name.clone(),
        };
        let fill = |map: RawFd| {
            sys::map_update(map, &0u32.to_ne_bytes(), &value).map_err(|e| {
                if !linked && e.raw_os_error() == Some(libc::EEXIST) {
                    already(map)
                } else {
                    syscall_error(
                        format!(
                            "filling the {} map of `{name}` (the kernel validates the ops here)",
                            self.ops.name
                        ),
                        e,
                    )
                }
            })
        };
        let registered = match fill(map.as_raw_fd()) {
            // Without links, filling the map registers it; a registration whose process died
            // stays in the kernel until deleted: clear ours and try once more.
            Err(StructOpsError::AlreadyRegistered { .. })
                if unregister_orphans(&name, &self.ops, self.ops.name_field.0) > 0 =>
            {
                fill(map.as_raw_fd())
            }
            other => other,
        };
        registered?;
        let link = match linked {
            false => None,
            true => Some(
                sys::struct_ops_link_create(
                    map.as_raw_fd(),
                    bpf_attach_type::BPF_STRUCT_OPS as u32,
                )
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        already(map.as_raw_fd())
                    } else {
                        syscall_error(format!("linking `{name}`"), e)
                    }
                })?,
            ),
        };
        if link.is_none() {
            let dup = map
                .try_clone()
                .map_err(|e| syscall_error("duplicating the struct_ops map fd", e))?;
            MAP_ONLY
                .lock()
                .expect("lock poisoned")
                .push((name.clone(), dup));
        }
        Ok(Registration {
            name,
            link,
            map,
            _programs: self.programs.into_iter().map(|(_, _, fd)| fd).collect(),
        })
    }

    /// The struct_ops map's value (`bpf_struct_ops_<type>`): name, flags and a program fd per
    /// implemented member, at the places and sizes the running kernel's BTF gives.
    fn map_value(&self) -> Result<Vec<u8>, StructOpsError> {
        let mut value = vec![0u8; self.ops.value_size as usize];
        let data = self.ops.data_offset;
        let too_small = |what: &str| StructOpsError::NoKernelSupport {
            type_name: self.ops.name.clone(),
            cause: format!(
                "its `{what}` does not fit in bpf_struct_ops_{}",
                self.ops.name
            ),
        };
        let name = unpadded(&self.decl.name).as_bytes();
        let (at, size) = self.ops.name_field;
        if name.len() >= size {
            return Err(StructOpsError::Malformed(format!(
                "the name `{}` is longer than {}'s name field ({} bytes with the NUL)",
                self.name(),
                self.ops.name,
                size
            )));
        }
        value
            .get_mut(data + at..data + at + name.len())
            .ok_or_else(|| too_small("name"))?
            .copy_from_slice(name);
        let (at, size) = self.ops.flags_field;
        let flags = u64::from(self.decl.flags).to_ne_bytes();
        let flags = match size {
            4 => &flags[..4],
            8 => &flags[..],
            _ => return Err(too_small("flags")),
        };
        value
            .get_mut(data + at..data + at + flags.len())
            .ok_or_else(|| too_small("flags"))?
            .copy_from_slice(flags);
        for (member, offset, fd) in &self.programs {
            value
                .get_mut(data + offset..data + offset + 8)
                .ok_or_else(|| too_small(member))?
                .copy_from_slice(&(fd.as_raw_fd() as u64).to_ne_bytes());
        }
        Ok(value)
    }
}

/// How [`StructOps::register_with`] registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A link where the kernel has struct_ops links (≥ 6.4), else the map alone.
    Auto,
    /// A `BPF_F_LINK` map and a link: the process dying unregisters the ops.
    Link,
    /// The map alone (how kernels before 6.4 register): dropping the [`Registration`] deletes
    /// the map's element, which unregisters; after a crash the registration stays until the
    /// next registration of the same name clears it.
    Map,
}

/// Registered ops. Dropping it unregisters them.
pub struct Registration {
    name: String,
    /// `None` when registered through the map alone ([`Attach::Map`]).
    link: Option<OwnedFd>,
    map: OwnedFd,
    _programs: Vec<OwnedFd>,
}

impl Registration {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the registration holds a struct_ops link (else the map alone registers it).
    pub fn linked(&self) -> bool {
        self.link.is_some()
    }

    /// Closes everything without unregistering, as a crashed process would leave it (tests).
    #[doc(hidden)]
    pub fn abandon(self) {
        MAP_ONLY
            .lock()
            .expect("lock poisoned")
            .retain(|(name, _)| *name != self.name);
        let mut this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used again nor dropped; each field is dropped once here.
        unsafe {
            std::ptr::drop_in_place(&mut this.name);
            std::ptr::drop_in_place(&mut this.link);
            std::ptr::drop_in_place(&mut this.map);
            std::ptr::drop_in_place(&mut this._programs);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A link unregisters when its last fd closes; a map-only registration must be deleted.
        if self.link.is_none() {
            MAP_ONLY
                .lock()
                .expect("lock poisoned")
                .retain(|(name, _)| *name != self.name);
            if let Err(e) = sys::map_delete(self.map.as_raw_fd(), &0u32.to_ne_bytes()) {
                tracing::warn!("unregistering `{}`: {e}", self.name);
            }
        }
    }
}

/// Map-only registrations of this process (`Attach::Map`): a process exit does not end them,
/// so [`unregister_at_exit`] deletes them explicitly. Bounded by the algorithms one process
/// registers (one per name).
static MAP_ONLY: std::sync::Mutex<Vec<(String, OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// Unregisters this process's map-only registrations (kernels before 6.4); call on the way
/// out, where owners of a [`Registration`] may never be dropped. Registrations with a link
/// need nothing: the kernel ends them with the process.
pub fn unregister_at_exit() {
    for (name, map) in MAP_ONLY.lock().expect("lock poisoned").drain(..) {
        match sys::map_delete(map.as_raw_fd(), &0u32.to_ne_bytes()) {
            Ok(()) => tracing::info!("unregistered `{name}`"),
            Err(e) => tracing::warn!("unregistering `{name}`: {e}"),
        }
    }
}

/// The kernel functions (kfuncs) the programs of a struct_ops object call, sorted, each with
/// whether the running kernel's BTF has a function of that name (the loader resolves each call
/// by name; a kernel without one gets [`StructOpsError::UnknownKfunc`] when loading). Probed
/// one by one from BTF, before and apart from loading.
pub fn kfuncs(elf: &[u8], btf: &Btf) -> Result<Vec<(String, bool)>, StructOpsError> {
    let spec = parse(elf)?;
    let mut names: Vec<String> = spec
        .programs
        .iter()
        .flat_map(|p| p.relocations.iter())
        .chain(spec.text.iter().flat_map(|t| t.relocations.iter()))
        .filter(|r| r.kind == RelocKind::Kfunc)
        .map(|r| r.symbol.clone())
        .collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|n| {
            let present = btf.find(Kind::Func, &n).is_ok();
            (n, present)
        })
        .collect())
}

/// Whether the kernel has struct_ops links (Linux ≥ 6.4), probed as registration does: a
/// struct_ops map of `type_name` created with `BPF_F_LINK` (then closed) is refused with
/// EINVAL before.
pub fn links_supported(btf: &Btf, type_name: &str) -> Result<bool, StructOpsError> {
    let ops = OpsType::resolve(btf, type_name)?;
    let btf_fd = sys::btf_load(&btf_blob(None)).map_err(|e| syscall_error("loading BTF", e))?;
    let created = sys::map_create(&sys::MapCreate {
        map_type: bpf_map_type::BPF_MAP_TYPE_STRUCT_OPS as u32,
        name: "p2pcc_probe",
        key_size: 4,
        value_size: ops.value_size,
        max_entries: 1,
        map_flags: BPF_F_LINK,
        btf_fd: Some(btf_fd.as_raw_fd()),
        btf_key_type_id: 0,
        btf_value_type_id: 0,
        btf_vmlinux_value_type_id: ops.value_type_id,
    });
    match created {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(syscall_error(
            "creating a struct_ops map with BPF_F_LINK",
            e,
        )),
    }
}

/// Clears map-only registrations named `name` of ops type `type_name` that a process which is
/// gone left behind (a crash on a kernel before 6.4); returns how many.
pub fn clear_orphans(btf: &Btf, type_name: &str, name: &str) -> usize {
    match OpsType::resolve(btf, type_name) {
        Ok(ops) => unregister_orphans(name, &ops, ops.name_field.0),
        Err(_) => 0,
    }
}

/// Deletes registrations named `name` made through a struct_ops map alone whose process is
/// gone (no process holds the map); returns how many. Bounded like [`registrations_named`].
fn unregister_orphans(name: &str, ops: &OpsType, name_offset: usize) -> usize {
    let registrations = match registrations_named(name, ops, name_offset) {
        Ok(registrations) => registrations,
        // Before 6.4 a crashed node's registration then stays until a node with
        // CAP_SYS_ADMIN starts (README, "Least privilege"); from 6.4 links leave no orphans.
        Err(e) => {
            tracing::debug!("not looking for orphaned registrations of `{name}`: {e}");
            return 0;
        }
    };
    let mut cleared = 0;
    for (id, fd, info) in registrations {
        // Our own fd from BPF_MAP_GET_FD_BY_ID is the only holder when the owner is gone.
        if info.map_flags & BPF_F_LINK == 0
            && map_holders(id) == [(std::process::id(), 1)]
            && sys::map_delete(fd.as_raw_fd(), &0u32.to_ne_bytes()).is_ok()
        {
            tracing::info!("unregistered `{name}` left by a process that is gone (map id {id})");
            cleared += 1;
        }
    }
    cleared
}

/// The struct_ops maps of ops type `ops` that carry the name `name` (its field at
/// `name_offset` of the ops value), with their ids and infos, lowest id first. Bounded: at
/// most `MAX_MAPS` maps are inspected.
fn registrations_named(
    name: &str,
    ops: &OpsType,
    name_offset: usize,
) -> Result<Vec<(u32, OwnedFd, bpf_map_info)>, sys::MapIdsDenied> {
    const MAX_MAPS: usize = 65_536;
    let mut found = Vec::new();
    for id in sys::map_ids(MAX_MAPS)? {
        let Ok(fd) = sys::map_fd_by_id(id) else {
            continue;
        };
        let Ok(info) = sys::map_info(fd.as_raw_fd()) else {
            continue;
        };
        if info.type_ != bpf_map_type::BPF_MAP_TYPE_STRUCT_OPS as u32
            || info.btf_vmlinux_value_type_id != ops.value_type_id
        {
            continue;
        }
        let mut value = vec![0u8; info.value_size as usize];
        // SAFETY: `value` has the map's value size (from its info), the key is a u32 index.
        if unsafe { sys::map_lookup(fd.as_raw_fd(), &0u32.to_ne_bytes(), &mut value) }.is_err() {
            continue;
        }
        let at = ops.data_offset + name_offset;
        if value.get(at..at + 16).is_some_and(|n| unpadded(n) == name) {
            found.push((id, fd, info));
        }
    }
    Ok(found)
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("linked", &self.linked())
            .finish_non_exhaustive()
    }
}

fn wrap_map(map_type: u32, data: aya::maps::MapData) -> aya::maps::Map {
    use aya::maps::Map;
    match map_type {
        t if t == bpf_map_type::BPF_MAP_TYPE_HASH as u32 => Map::HashMap(data),
        t if t == bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32 => Map::LruHashMap(data),
        t if t == bpf_map_type::BPF_MAP_TYPE_ARRAY as u32 => Map::Array(data),
        t if t == bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32 => Map::PerCpuArray(data),
        t if t == bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH as u32 => Map::PerCpuHashMap(data),
        _ => Map::Unsupported(data),
    }
}

/// Who holds the registration of `name`: the process owning a struct_ops map of that name, or
/// the kernel itself for a built-in algorithm.
/// `ours` is the map of the failed attempt, which carries the same name and is skipped.
fn registered_owner(name: &str, ops: &OpsType, name_offset: usize, ours: RawFd) -> String {
    let our_id = map_id(ours);
    let registrations = match registrations_named(name, ops, name_offset) {
        Ok(registrations) => registrations,
        Err(e) => return format!("owner unknown: {e}"),
    };
    match registrations
        .into_iter()
        .find(|(id, ..)| Some(*id) != our_id)
    {
        Some((id, ..)) => match map_owner(id) {
            Some((pid, comm)) => format!("by process {pid} ({comm}), struct_ops map id {id}"),
            None => format!("struct_ops map id {id}, owner process not found"),
        },
        None => "built into the kernel or registered by a module".into(),
    }
}

fn map_id(fd: RawFd) -> Option<u32> {
    sys::map_info(fd).ok().map(|info| info.id)
}

/// `(pid, fds)` of every process holding map `id` (scans `/proc/*/fdinfo`, bounded).
fn map_holders(id: u32) -> Vec<(u32, usize)> {
    const MAX_PROCESSES: usize = 4096;
    const MAX_FDS: usize = 4096;
    let needle = format!("map_id:\t{id}\n");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for proc in procs.flatten().take(MAX_PROCESSES) {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
            continue;
        };
        let held = fds
            .flatten()
            .take(MAX_FDS)
            .filter(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|s| s.contains(&needle)))
            .count();
        if held > 0 {
            out.push((pid, held));
        }
    }
    out
}

/// The first process holding an fd of map `id` (scans `/proc/*/fdinfo`, bounded).
fn map_owner(id: u32) -> Option<(u32, String)> {
    const MAX_PROCESSES: usize = 4096;
    const MAX_FDS: usize = 4096;
    let needle = format!("map_id:\t{id}\n");
    for proc in std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .take(MAX_PROCESSES)
    {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten().take(MAX_FDS) {
            if std::fs::read_to_string(fd.path()).is_ok_and(|s| s.contains(&needle)) {
                let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                return Some((pid, comm.trim().to_owned()));
            }
        }
    }
    None
}

/// Type ids in [`btf_blob`].
const BTF_INT: u32 = 1;
const BTF_VALUE_ARRAY: u32 = 3;

/// A small BTF object: `int` (id 1), and with `value_size`, `unsigned char` (2) and
/// `unsigned char[value_size]` (3).
fn btf_blob(value_size: Option<u32>) -> Vec<u8> {
    let strings = b"\0int\0unsigned char\0";
    let mut types = Vec::new();
    // 1: name "int", kind INT (1) << 24, size 4; encoding: signed (1 << 24), 32 bits.
    let mut words = vec![1u32, 1 << 24, 4, (1 << 24) | 32];
    if let Some(n) = value_size {
        // 2: name "unsigned char", INT, size 1, unsigned, 8 bits.
        words.extend([5, 1 << 24, 1, 8]);
        // 3: anonymous ARRAY (3 << 24): element type 2, index type 1, n elements.
        words.extend([0, 3 << 24, 0, 2, BTF_INT, n]);
    }
    for word in words {
        types.extend_from_slice(&word.to_ne_bytes());
    }
    let mut btf = Vec::new();
    btf.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
    btf.extend_from_slice(&[1, 0]); // version 1, flags 0
    for word in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        btf.extend_from_slice(&word.to_ne_bytes());
    }
    btf.extend_from_slice(&types);
    btf.extend_from_slice(strings);
    btf
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_ebpf_common::btf::MemberEdit;

    #[test]
    fn patch_sets_src_reg_and_imm_only() {
        // call -1 (0x85, dst 0, src 1 (pseudo call), off 0, imm -1), as bpf-linker emits.
        let mut insn = u64::from_ne_bytes([0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        patch(&mut insn, BPF_PSEUDO_KFUNC_CALL, 114_468);
        let b = insn.to_ne_bytes();
        assert_eq!(b[0], 0x85);
        assert_eq!(b[1], 0x20);
        assert_eq!(i32::from_ne_bytes(b[4..8].try_into().unwrap()), 114_468);
    }

    #[test]
    fn generated_btf_parses() {
        let btf = Btf::parse(btf_blob(None)).unwrap();
        assert_eq!(btf.find(Kind::Int, "int"), Ok(BTF_INT));
        let btf = Btf::parse(btf_blob(Some(176))).unwrap();
        assert_eq!(btf.size_of(BTF_VALUE_ARRAY), Some(176));
        assert_eq!(btf.find(Kind::Int, "unsigned char"), Ok(2));
    }

    /// Another kernel, made from this one's BTF: `tcp_sock.snd_cwnd` moved, `cong_control`
    /// with two arguments (as before Linux 6.10), `rate_sample.rtt_us` removed.
    fn perturbed_kernel(btf: &Btf) -> (Btf, u32) {
        let mut data = btf.bytes().to_vec();
        let cwnd = btf.field("tcp_sock", "snd_cwnd").unwrap().bit_offset;
        Btf::edit_member(
            &mut data,
            "tcp_sock",
            "snd_cwnd",
            MemberEdit::BitOffset(cwnd + 512),
        )
        .unwrap();
        // Any pointer to a two-argument function prototype serves as the old signature.
        let two_args = (1..=btf.len())
            .find(|&id| {
                btf.ty(id).is_some_and(|t| {
                    t.kind == Kind::Ptr
                        && btf
                            .ty(t.size_or_type)
                            .is_some_and(|p| p.kind == Kind::FuncProto && p.vlen == 2)
                })
            })
            .expect("a pointer to a two-argument function");
        Btf::edit_member(
            &mut data,
            "tcp_congestion_ops",
            "cong_control",
            MemberEdit::Type(two_args),
        )
        .unwrap();
        Btf::edit_member(&mut data, "rate_sample", "rtt_us", MemberEdit::Remove).unwrap();
        (Btf::parse(data).unwrap(), cwnd + 512)
    }

    fn running_kernel() -> Option<Btf> {
        match Btf::from_sys_fs() {
            Ok(btf) => Some(btf),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping: {e}");
                None
            }
            Err(e) => panic!("CI machines must have kernel BTF: {e}"),
        }
    }

    #[test]
    fn a_perturbed_kernel_gets_patched_offsets_the_two_argument_form_and_named_fields() {
        let Some(btf) = running_kernel() else { return };
        let spec = parse(crate::ebpf::objects::BBR_P2P).unwrap();
        let forms: Vec<(&str, Option<u32>)> = spec
            .programs
            .iter()
            .map(|p| (p.member.as_str(), p.arity))
            .collect();
        let chosen = |btf: &Btf| -> Vec<(String, Option<u32>)> {
            choose_forms(&forms, |m| btf.fn_member_arity("tcp_congestion_ops", m))
                .into_iter()
                .zip(&forms)
                .filter(|(keep, _)| *keep)
                .map(|(_, &(m, a))| (m.to_owned(), a))
                .filter(|(m, _)| m == "cong_control")
                .collect()
        };
        // This kernel (6.18): four arguments, the default form.
        assert_eq!(
            btf.fn_member_arity("tcp_congestion_ops", "cong_control"),
            Some(4)
        );
        assert_eq!(chosen(&btf), [("cong_control".to_owned(), None)]);

        let (other, cwnd_bits) = perturbed_kernel(&btf);
        assert_eq!(
            other.fn_member_arity("tcp_congestion_ops", "cong_control"),
            Some(2)
        );
        assert_eq!(chosen(&other), [("cong_control".to_owned(), Some(2))]);

        // The programs' immediates follow the perturbed BTF.
        let resolved = layout::resolve(&other);
        let cwnd = layout::FieldIndex::TCP_SOCK__SND_CWND;
        let rtt = layout::FieldIndex::RATE_SAMPLE__RTT_US;
        let patched =
            super::super::offsets::patch(crate::ebpf::objects::BBR_P2P, &resolved).unwrap();
        let patched = parse(patched.bytes()).unwrap();
        let immediates = |spec: &ObjectSpec| -> Vec<u64> {
            let text = spec.text.iter().flat_map(|t| &t.insns);
            let insns: Vec<u64> = spec
                .programs
                .iter()
                .flat_map(|p| &p.insns)
                .chain(text)
                .copied()
                .collect();
            insns
                .windows(2)
                .filter(|w| opcode(w[0]) == OP_LD_IMM64 && src_reg(w[0]) == 0)
                .map(|w| (imm(w[1]) as u32 as u64) << 32 | imm(w[0]) as u32 as u64)
                .collect()
        };
        let (before, after) = (immediates(&spec), immediates(&patched));
        assert_eq!(before.len(), after.len());
        let at = |marker| {
            before
                .iter()
                .zip(&after)
                .filter(move |(b, _)| **b == marker)
                .map(|(_, a)| *a)
        };
        assert!(at(layout::field_marker(cwnd)).count() > 0);
        // A byte offset (snd_cwnd is no bitfield); a missing field stays ABSENT.
        assert!(at(layout::field_marker(cwnd)).all(|a| a == u64::from(cwnd_bits / 8)));
        assert!(at(layout::field_marker(rtt)).count() > 0);
        assert!(at(layout::field_marker(rtt)).all(|a| a == u64::from(layout::ABSENT)));
        assert_eq!(
            resolved.summary().as_deref(),
            Some("kernel field `rate_sample.rtt_us` does not exist in the running kernel")
        );
    }

    #[test]
    fn a_form_for_another_arity_is_never_chosen_alone() {
        let forms = [
            ("cong_control", None),
            ("cong_control", Some(2)),
            ("ssthresh", None),
        ];
        let arity = |n| move |m: &str| (m == "cong_control").then_some(n);
        assert_eq!(choose_forms(&forms, arity(4)), [true, false, true]);
        assert_eq!(choose_forms(&forms, arity(2)), [false, true, true]);
        assert_eq!(choose_forms(&forms, arity(3)), [true, false, true]);
    }

    #[test]
    fn a_refused_write_names_the_socket_field_at_that_offset() {
        let mut table = [layout::ABSENT; layout::FIELD_COUNT];
        let app_limited = layout::FieldIndex::TCP_SOCK__APP_LIMITED as usize;
        let pacing = layout::FieldIndex::SOCK__SK_PACING_STATUS as usize;
        table[app_limited] = 1820 * 8;
        table[pacing] = 500 * 8;
        let log = "283: (63) *(u32 *)(r3 +0) = r1\nno write support to tcp_sock at off 1820\nprocessed 1042 insns";
        assert_eq!(refused_write(log, &table), Some(app_limited));
        // sock fields sit at the same offsets inside tcp_sock.
        assert_eq!(
            refused_write("no write support to tcp_sock at off 500", &table),
            Some(pacing)
        );
        assert_eq!(
            refused_write("no write support to tcp_sock at off 7", &table),
            None
        );
        assert_eq!(refused_write("R0 !read_ok", &table), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
