//! A struct_ops loader: registers kernel ops structs (e.g. `tcp_congestion_ops`) implemented by
//! Rust eBPF programs. aya has no struct_ops support (aya issues #200, #220): aya-obj refuses
//! objects with `struct_ops/` sections and `BPF_MAP_TYPE_STRUCT_OPS` is `Unsupported`, so this
//! module parses such an object and issues the `bpf(2)` commands itself. It is generic over the
//! ops type; everything type-specific comes from the running kernel's BTF.
//!
//! An object declares its ops in section `.p2pcc.struct_ops` ([`StructOpsDecl`]: kernel type,
//! name, flags) and provides one program per implemented member in section
//! `struct_ops/<member>`. Loading ([`StructOps::load`]):
//! 1. creates the maps of the `maps` section (aya-ebpf's map definitions);
//! 2. relocates each program: map references become `BPF_PSEUDO_MAP_FD` loads, calls to
//!    undefined symbols become kfunc calls (`BPF_PSEUDO_KFUNC_CALL`, the vmlinux BTF id of the
//!    function of that name);
//! 3. loads each program as `BPF_PROG_TYPE_STRUCT_OPS` with `attach_btf_id` = the ops type and
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

use aya_obj::generated::{BPF_F_LINK, bpf_attach_type, bpf_map_info, bpf_map_type, bpf_prog_type};
use cc_ebpf_common::{
    STRUCT_OPS_DECL_SECTION, STRUCT_OPS_PROG_PREFIX, StructOpsDecl,
    btf::{Btf, Kind},
    unpadded,
};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionIndex};

use super::sys;

/// `BPF_PSEUDO_MAP_FD`: the `ld_imm64` immediate is a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `BPF_PSEUDO_CALL`: the call immediate is a relative instruction offset (a BPF subprogram).
const BPF_PSEUDO_CALL: u8 = 1;
/// `BPF_PSEUDO_KFUNC_CALL`: the call immediate is a BTF function id.
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
/// Opcode of `ld_imm64` (BPF_LD | BPF_IMM | BPF_DW).
const OP_LD_IMM64: u8 = 0x18;
/// Opcode of `call` (BPF_JMP | BPF_CALL).
const OP_CALL: u8 = 0x85;
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
        Ok(Self {
            name: type_name.into(),
            type_id,
            value_type_id,
            value_size: btf.size_of(value_type_id).unwrap_or(0),
            data_offset: data.bit_offset as usize / 8,
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
                let kind = if sym.is_undefined() {
                    RelocKind::Kfunc
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
            Ok((insns, relocations))
        };

    let mut programs = Vec::new();
    for section in file.sections() {
        let name = section.name()?;
        let Some(member) = name.strip_prefix(STRUCT_OPS_PROG_PREFIX) else {
            continue;
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

/// Sets the src_reg nibble and the immediate of an instruction.
fn patch(insn: &mut u64, src_reg: u8, imm: i32) {
    let mut bytes = insn.to_ne_bytes();
    bytes[1] = (bytes[1] & 0x0f) | (src_reg << 4);
    bytes[4..8].copy_from_slice(&imm.to_ne_bytes());
    *insn = u64::from_ne_bytes(bytes);
}

fn opcode(insn: u64) -> u8 {
    insn.to_ne_bytes()[0]
}

fn imm(insn: u64) -> i32 {
    i32::from_ne_bytes(insn.to_ne_bytes()[4..8].try_into().expect("4 bytes"))
}

/// A struct_ops object whose maps exist and whose programs the verifier accepted.
pub struct StructOps {
    decl: StructOpsDecl,
    ops: OpsType,
    /// (member, byte offset in the ops struct, program fd).
    programs: Vec<(String, usize, OwnedFd)>,
    maps: HashMap<String, (OwnedFd, u32)>,
    name_offset: usize,
    flags_offset: usize,
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
        let spec = parse(elf)?;
        let type_name = unpadded(&spec.decl.type_name).to_owned();
        let ops = OpsType::resolve(btf, &type_name)?;
        let name = unpadded(&spec.decl.name).to_owned();

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

        let mut programs = Vec::new();
        for p in spec.programs {
            let (index, offset) = ops.function_member(btf, &p.member)?;
            let (insns, relocations, placed) =
                link_subprograms(p.insns, p.relocations, spec.text.as_ref()).map_err(|symbol| {
                    StructOpsError::UnsupportedRelocation {
                        program: p.symbol.clone(),
                        symbol,
                    }
                })?;
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
                _ => StructOpsError::Verifier {
                    program: p.symbol.clone(),
                    source,
                    log: tail(&log, 40),
                },
            })?;
            programs.push((p.member, offset, fd));
        }

        let field = |member: &str| {
            btf.field(&type_name, member)
                .map(|f| f.bit_offset as usize / 8)
                .map_err(|e| StructOpsError::NoKernelSupport {
                    type_name: type_name.clone(),
                    cause: e.to_string(),
                })
        };
        Ok(Self {
            decl: spec.decl,
            name_offset: field("name")?,
            flags_offset: field("flags")?,
            ops,
            programs,
            maps,
        })
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

    /// Registers the ops with the kernel.
    pub fn register(self) -> Result<Registration, StructOpsError> {
        let name = self.name().to_owned();
        // The struct_ops map must reference some loaded BTF object; the ops' own types come
        // from vmlinux, so a minimal BTF (one `int`) serves.
        let btf_fd = sys::btf_load(&btf_blob(None)).map_err(|e| syscall_error("loading BTF", e))?;
        let map = sys::map_create(&sys::MapCreate {
            map_type: bpf_map_type::BPF_MAP_TYPE_STRUCT_OPS as u32,
            name: &name,
            key_size: 4,
            value_size: self.ops.value_size,
            max_entries: 1,
            map_flags: BPF_F_LINK,
            btf_fd: Some(btf_fd.as_raw_fd()),
            btf_key_type_id: 0,
            btf_value_type_id: 0,
            btf_vmlinux_value_type_id: self.ops.value_type_id,
        })
        .map_err(|e| syscall_error(format!("creating the {} map", self.ops.name), e))?;

        let mut value = vec![0u8; self.ops.value_size as usize];
        let data = self.ops.data_offset;
        value[data + self.name_offset..data + self.name_offset + 16]
            .copy_from_slice(&self.decl.name);
        value[data + self.flags_offset..data + self.flags_offset + 4]
            .copy_from_slice(&self.decl.flags.to_ne_bytes());
        for (_, offset, fd) in &self.programs {
            let at = data + offset;
            value[at..at + 8].copy_from_slice(&(fd.as_raw_fd() as u64).to_ne_bytes());
        }
        sys::map_update(map.as_raw_fd(), &0u32.to_ne_bytes(), &value).map_err(|e| {
            syscall_error(
                format!(
                    "filling the {} map of `{name}` (the kernel validates the ops here)",
                    self.ops.name
                ),
                e,
            )
        })?;
        let link =
            sys::struct_ops_link_create(map.as_raw_fd(), bpf_attach_type::BPF_STRUCT_OPS as u32)
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        StructOpsError::AlreadyRegistered {
                            owner: registered_owner(
                                &name,
                                &self.ops,
                                self.name_offset,
                                map.as_raw_fd(),
                            ),
                            name: name.clone(),
                        }
                    } else {
                        syscall_error(format!("linking `{name}`"), e)
                    }
                })?;
        Ok(Registration {
            name,
            _link: link,
            _map: map,
            _programs: self.programs.into_iter().map(|(_, _, fd)| fd).collect(),
        })
    }
}

/// Registered ops. Dropping it unregisters them.
pub struct Registration {
    name: String,
    _link: OwnedFd,
    _map: OwnedFd,
    _programs: Vec<OwnedFd>,
}

impl Registration {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
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
    // Bounded: at most this many maps are inspected.
    const MAX_MAPS: usize = 65_536;
    let our_id = map_id(ours);
    for id in sys::map_ids(MAX_MAPS) {
        if Some(id) == our_id {
            continue;
        }
        let Ok(fd) = sys::map_fd_by_id(id) else {
            continue;
        };
        // SAFETY: bpf_map_info is plain data; all-zero is valid.
        let mut info: bpf_map_info = unsafe { std::mem::zeroed() };
        if sys::obj_info(fd.as_raw_fd(), &mut info).is_err()
            || info.type_ != bpf_map_type::BPF_MAP_TYPE_STRUCT_OPS as u32
            || info.btf_vmlinux_value_type_id != ops.value_type_id
        {
            continue;
        }
        let mut value = vec![0u8; info.value_size as usize];
        if sys::map_lookup(fd.as_raw_fd(), &0u32.to_ne_bytes(), &mut value).is_err() {
            continue;
        }
        let at = ops.data_offset + name_offset;
        if value.get(at..at + 16).is_some_and(|n| unpadded(n) == name) {
            return match map_owner(id) {
                Some((pid, comm)) => format!("by process {pid} ({comm}), struct_ops map id {id}"),
                None => format!("struct_ops map id {id}, owner process not found"),
            };
        }
    }
    "built into the kernel or registered by a module".into()
}

fn map_id(fd: RawFd) -> Option<u32> {
    // SAFETY: bpf_map_info is plain data; all-zero is valid.
    let mut info: bpf_map_info = unsafe { std::mem::zeroed() };
    sys::obj_info(fd, &mut info).ok().map(|()| info.id)
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

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
