//! A small reader for the BPF Type Format (BTF) of the running kernel.
//!
//! It answers the few questions p2p-cc asks of `/sys/kernel/btf/vmlinux`: the id of a named type,
//! a struct's members with their bit offsets (descending into anonymous structs and unions), the
//! size of a type, and the index of a member. That is what the loader places the eBPF programs'
//! kernel fields with (`layout`) and fills struct_ops maps from. Format: <https://docs.kernel.org/bpf/btf.html>.

use std::{fmt, string::String, vec::Vec};

/// Where the running kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_MIN_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;

/// BTF kinds p2p-cc looks up by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }
}

/// Why BTF could not be read or a question about it could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    /// The file could not be read (kernel without `CONFIG_DEBUG_INFO_BTF`, or no permission).
    Read { path: String, cause: String },
    /// The bytes are not valid BTF.
    Malformed(String),
    /// No type of that kind and name.
    NoType { kind: Kind, name: String },
    /// The struct or union has no member of that name (path is the full dotted path asked for).
    NoMember { ty: String, path: String },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, cause } => write!(
                f,
                "cannot read kernel BTF from {path}: {cause} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)"
            ),
            Self::Malformed(why) => write!(f, "malformed BTF: {why}"),
            Self::NoType { kind, name } => write!(f, "kernel BTF has no {kind:?} named `{name}`"),
            Self::NoMember { ty, path } => {
                write!(f, "kernel BTF: `{ty}` has no member `{path}`")
            }
        }
    }
}

impl std::error::Error for BtfError {}

/// One parsed type header.
#[derive(Clone, Copy, Debug)]
pub struct Type<'a> {
    pub id: u32,
    pub name: &'a str,
    pub kind: Kind,
    /// Number of members / params / enumerators.
    pub vlen: u32,
    pub kind_flag: bool,
    /// `size` for sized kinds (int, struct, union, enum), `type` for references.
    pub size_or_type: u32,
    /// Byte offset of the kind-specific data that follows the header.
    data: usize,
}

/// One member of a struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member<'a> {
    pub name: &'a str,
    pub type_id: u32,
    /// Offset from the start of the enclosing struct, in bits.
    pub bit_offset: u32,
    /// Width of a bitfield in bits, 0 for a plain member.
    pub bitfield_size: u32,
}

/// Location of a (possibly nested) member inside an outer struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLoc {
    /// Offset from the start of the outer struct, in bits.
    pub bit_offset: u32,
    /// Width in bits: the bitfield width, or the member type's size times 8.
    pub bit_size: u32,
    /// Whether the member is a bitfield.
    pub bitfield: bool,
}

/// A change [`Btf::edit_member`] makes.
#[derive(Clone, Copy, Debug)]
pub enum MemberEdit {
    /// Move the member to this bit offset.
    BitOffset(u32),
    /// Give the member another type.
    Type(u32),
    /// Take the member's name away.
    Remove,
}

/// Parsed BTF: the raw bytes and the offset of every type header.
pub struct Btf {
    data: Vec<u8>,
    strings: (usize, usize),
    /// `type_offsets[id - 1]` is the header offset of type `id` (ids start at 1, 0 is void).
    type_offsets: Vec<usize>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.type_offsets.len())
            .finish()
    }
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(VMLINUX_BTF)
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|e| BtfError::Read {
            path: path.into(),
            cause: std::format!("{e}"),
        })?;
        Self::parse(data)
    }

    /// Parses raw BTF bytes (native endianness).
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let bad = |why: &str| BtfError::Malformed(why.into());
        if data.len() < HEADER_MIN_LEN {
            return Err(bad("shorter than the header"));
        }
        if u16::from_ne_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(bad("bad magic (not BTF, or foreign endianness)"));
        }
        let hdr_len = read_u32(&data, 4) as usize;
        let type_off = read_u32(&data, 8) as usize;
        let type_len = read_u32(&data, 12) as usize;
        let str_off = read_u32(&data, 16) as usize;
        let str_len = read_u32(&data, 20) as usize;
        let types = (hdr_len + type_off, hdr_len + type_off + type_len);
        let strings = (hdr_len + str_off, hdr_len + str_off + str_len);
        if types.1 > data.len() || strings.1 > data.len() || hdr_len < HEADER_MIN_LEN {
            return Err(bad("section out of bounds"));
        }
        let mut type_offsets = Vec::new();
        let mut at = types.0;
        while at < types.1 {
            if at + TYPE_HEADER_LEN > types.1 {
                return Err(bad("truncated type header"));
            }
            let info = read_u32(&data, at + 4);
            let vlen = (info & 0xffff) as usize;
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind)
                .ok_or_else(|| BtfError::Malformed(std::format!("unknown kind {raw_kind}")))?;
            let extra = match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => 4,
                Kind::Array => 12,
                Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
                Kind::Enum | Kind::FuncProto => 8 * vlen,
                Kind::Ptr
                | Kind::Fwd
                | Kind::Typedef
                | Kind::Volatile
                | Kind::Const
                | Kind::Restrict
                | Kind::Func
                | Kind::Float
                | Kind::TypeTag => 0,
            };
            type_offsets.push(at);
            at += TYPE_HEADER_LEN + extra;
        }
        if at != types.1 {
            return Err(bad("type section does not end on a type boundary"));
        }
        Ok(Self {
            data,
            strings,
            type_offsets,
        })
    }

    /// The raw bytes (to load this BTF into the kernel).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Number of types (the largest valid id).
    pub fn len(&self) -> u32 {
        self.type_offsets.len() as u32
    }

    /// Whether there are no types.
    pub fn is_empty(&self) -> bool {
        self.type_offsets.is_empty()
    }

    fn string_bytes(&self, off: u32) -> &[u8] {
        let start = self.strings.0 + off as usize;
        if start >= self.strings.1 {
            return &[];
        }
        let bytes = &self.data[start..self.strings.1];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..end]
    }

    fn string(&self, off: u32) -> &str {
        core::str::from_utf8(self.string_bytes(off)).unwrap_or("")
    }

    /// The type with this id (`None` for 0/void or out of range).
    pub fn ty(&self, id: u32) -> Option<Type<'_>> {
        let at = *self.type_offsets.get((id as usize).checked_sub(1)?)?;
        let info = read_u32(&self.data, at + 4);
        Some(Type {
            id,
            name: self.string(read_u32(&self.data, at)),
            kind: Kind::from_raw((info >> 24) & 0x1f)?,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_or_type: read_u32(&self.data, at + 8),
            data: at + TYPE_HEADER_LEN,
        })
    }

    /// The id of the type of this kind and name.
    pub fn find(&self, kind: Kind, name: &str) -> Result<u32, BtfError> {
        (1..=self.len())
            .find(|&id| {
                let at = self.type_offsets[id as usize - 1];
                (read_u32(&self.data, at + 4) >> 24) & 0x1f == kind as u32
                    && self.string_bytes(read_u32(&self.data, at)) == name.as_bytes()
            })
            .ok_or_else(|| BtfError::NoType {
                kind,
                name: name.into(),
            })
    }

    /// Members of a struct or union (empty for other kinds).
    pub fn members(&self, id: u32) -> impl Iterator<Item = Member<'_>> + '_ {
        let ty = self
            .ty(id)
            .filter(|t| matches!(t.kind, Kind::Struct | Kind::Union));
        let (data, vlen, kind_flag) = ty.map_or((0, 0, false), |t| (t.data, t.vlen, t.kind_flag));
        (0..vlen as usize).map(move |i| {
            let at = data + 12 * i;
            let offset = read_u32(&self.data, at + 8);
            let (bit_offset, bitfield_size) = if kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Member {
                name: self.string(read_u32(&self.data, at)),
                type_id: read_u32(&self.data, at + 4),
                bit_offset,
                bitfield_size,
            }
        })
    }

    /// Parameters of a function prototype: (name, type id).
    pub fn params(&self, proto_id: u32) -> impl Iterator<Item = (&str, u32)> + '_ {
        let ty = self.ty(proto_id).filter(|t| t.kind == Kind::FuncProto);
        let (data, vlen) = ty.map_or((0, 0), |t| (t.data, t.vlen));
        (0..vlen as usize).map(move |i| {
            let at = data + 8 * i;
            (
                self.string(read_u32(&self.data, at)),
                read_u32(&self.data, at + 4),
            )
        })
    }

    /// Follows typedef, const, volatile, restrict and type tags to the underlying type id.
    pub fn skip_mods(&self, mut id: u32) -> u32 {
        while let Some(t) = self.ty(id) {
            match t.kind {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type, following modifiers; pointers are 8 bytes.
    pub fn size_of(&self, id: u32) -> Option<u32> {
        let t = self.ty(self.skip_mods(id))?;
        match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                Some(t.size_or_type)
            }
            Kind::Ptr => Some(8),
            Kind::Array => {
                let elem = read_u32(&self.data, t.data);
                let nelems = read_u32(&self.data, t.data + 8);
                Some(self.size_of(elem)? * nelems)
            }
            _ => None,
        }
    }

    /// Number of parameters of a function-pointer member (`struct tcp_congestion_ops`'s
    /// `cong_control`: 2 before Linux 6.10, 4 after); `None` when the member is not one.
    pub fn fn_member_arity(&self, outer: &str, member: &str) -> Option<u32> {
        let id = self.find(Kind::Struct, outer).ok()?;
        let m = self.members(id).find(|m| m.name == member)?;
        let ptr = self
            .ty(self.skip_mods(m.type_id))
            .filter(|t| t.kind == Kind::Ptr)?;
        let proto = self
            .ty(self.skip_mods(ptr.size_or_type))
            .filter(|t| t.kind == Kind::FuncProto)?;
        Some(proto.vlen)
    }

    /// How many arguments BTF tracepoint `name` passes its programs (`btf_trace_<name>`'s
    /// prototype, less its leading `void *__data`), or `None` when the kernel has no such
    /// tracepoint.
    pub fn tracepoint_arity(&self, name: &str) -> Option<u32> {
        let typedef = self
            .find(Kind::Typedef, &std::format!("btf_trace_{name}"))
            .ok()?;
        let ptr = self
            .ty(self.skip_mods(typedef))
            .filter(|t| t.kind == Kind::Ptr)?;
        let proto = self
            .ty(self.skip_mods(ptr.size_or_type))
            .filter(|t| t.kind == Kind::FuncProto)?;
        proto.vlen.checked_sub(1)
    }

    /// Rewrites one direct member of struct `outer` in raw BTF bytes, to make the BTF of
    /// another kernel from this one in tests (a field moved, removed, or of another type).
    pub fn edit_member(
        data: &mut [u8],
        outer: &str,
        member: &str,
        edit: MemberEdit,
    ) -> Result<(), BtfError> {
        let btf = Self::parse(data.to_vec())?;
        let id = btf.find(Kind::Struct, outer)?;
        let t = btf.ty(id).expect("found above");
        let index = btf
            .member_index(id, member)
            .ok_or_else(|| BtfError::NoMember {
                ty: outer.into(),
                path: member.into(),
            })?;
        let at = t.data + 12 * index as usize;
        let mut write =
            |at: usize, value: u32| data[at..at + 4].copy_from_slice(&value.to_ne_bytes());
        match edit {
            // Name offset 0 is the empty string: the member no longer answers to its name.
            MemberEdit::Remove => write(at, 0),
            MemberEdit::Type(type_id) => write(at + 4, type_id),
            MemberEdit::BitOffset(bits) => {
                let old = read_u32(&btf.data, at + 8);
                let keep = if t.kind_flag { old & 0xff00_0000 } else { 0 };
                write(at + 8, keep | (bits & 0x00ff_ffff));
            }
        }
        Ok(())
    }

    /// Index of a direct member of a struct (the `expected_attach_type` of a struct_ops program).
    pub fn member_index(&self, struct_id: u32, name: &str) -> Option<u32> {
        self.members(struct_id)
            .position(|m| m.name == name)
            .map(|i| i as u32)
    }

    /// Locates `path` (`a.b.c`) inside the struct or union named `outer`. Members of anonymous
    /// structs and unions are found as if they were direct members, as in C.
    pub fn field(&self, outer: &str, path: &str) -> Result<FieldLoc, BtfError> {
        let id = self
            .find(Kind::Struct, outer)
            .or_else(|_| self.find(Kind::Union, outer))?;
        self.field_in(id, path).ok_or_else(|| BtfError::NoMember {
            ty: outer.into(),
            path: path.into(),
        })
    }

    fn field_in(&self, struct_id: u32, path: &str) -> Option<FieldLoc> {
        let (head, rest) = match path.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (path, None),
        };
        let (member, base) = self.find_member(struct_id, head, 0)?;
        let bit_offset = base + member.bit_offset;
        match rest {
            Some(rest) => {
                let inner = self.field_in(self.skip_mods(member.type_id), rest)?;
                Some(FieldLoc {
                    bit_offset: bit_offset + inner.bit_offset,
                    ..inner
                })
            }
            None if member.bitfield_size > 0 => Some(FieldLoc {
                bit_offset,
                bit_size: member.bitfield_size,
                bitfield: true,
            }),
            None => Some(FieldLoc {
                bit_offset,
                bit_size: self.size_of(member.type_id)? * 8,
                bitfield: false,
            }),
        }
    }

    /// Finds a member by name, searching anonymous members depth-first; returns the member and
    /// the bit offset of the (anonymous) struct that holds it.
    fn find_member(&self, struct_id: u32, name: &str, base: u32) -> Option<(Member<'_>, u32)> {
        for m in self.members(struct_id) {
            if m.name == name {
                return Some((m, base));
            }
            if m.name.is_empty()
                && let Some(found) =
                    self.find_member(self.skip_mods(m.type_id), name, base + m.bit_offset)
            {
                return Some(found);
            }
        }
        None
    }
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// The running kernel's BTF for tests: `None` (with the reason printed) on a machine without
/// it; in CI (`CI` set) its absence fails the test instead.
#[cfg(test)]
pub(crate) fn running_kernel() -> Option<Btf> {
    match Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(e) if std::env::var_os("CI").is_none() => {
            std::eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("CI machines must have kernel BTF: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;

    /// Builds BTF by hand: `struct outer { u32 a; union { u64 b; }; u8 c:3, d:5; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0u32\0u64\0u8\0outer\0a\0b\0c\0d\0";
        let s = |name: &str| {
            let pos = strings
                .windows(name.len() + 1)
                .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
                .unwrap();
            pos as u32
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_ne_bytes()));
        // 1: u32, 2: u64, 3: u8 (int encoding word: bits)
        push(&[s("u32"), 1 << 24, 4, 32]);
        push(&[s("u64"), 1 << 24, 8, 64]);
        push(&[s("u8"), 1 << 24, 1, 8]);
        // 4: anonymous union { u64 b; }
        push(&[0, (5 << 24) | 1, 8, s("b"), 2, 0]);
        // 5: struct outer, kind_flag set (bitfield offsets), 4 members, size 24
        push(&[s("outer"), (1 << 31) | (4 << 24) | 4, 24]);
        push(&[s("a"), 1, 0]);
        push(&[0, 4, 64]);
        push(&[s("c"), 3, (3 << 24) | 128]);
        push(&[s("d"), 3, (5 << 24) | 131]);
        let mut out = vec![];
        out.extend(BTF_MAGIC.to_ne_bytes());
        out.extend([1u8, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(w.to_ne_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_types_members_and_anonymous_fields() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.len(), 5);
        assert_eq!(btf.find(Kind::Struct, "outer"), Ok(5));
        assert_eq!(btf.size_of(5), Some(24));
        assert_eq!(btf.member_index(5, "c"), Some(2));
        let a = btf.field("outer", "a").unwrap();
        assert_eq!((a.bit_offset, a.bit_size, a.bitfield), (0, 32, false));
        let b = btf.field("outer", "b").unwrap();
        assert_eq!((b.bit_offset, b.bit_size), (64, 64));
        let d = btf.field("outer", "d").unwrap();
        assert_eq!((d.bit_offset, d.bit_size, d.bitfield), (131, 5, true));
    }

    #[test]
    fn names_what_is_missing() {
        let btf = Btf::parse(sample()).unwrap();
        let err = btf.field("outer", "zz").unwrap_err();
        assert_eq!(err.to_string(), "kernel BTF: `outer` has no member `zz`");
        let err = btf.find(Kind::Struct, "nope").unwrap_err();
        assert_eq!(err.to_string(), "kernel BTF has no Struct named `nope`");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Btf::parse(vec![0; 40]),
            Err(BtfError::Malformed(_))
        ));
        let mut truncated = sample();
        truncated.truncate(60);
        assert!(Btf::parse(truncated).is_err());
    }

    #[test]
    fn reads_the_running_kernel_when_present() {
        let Some(btf) = running_kernel() else { return };
        let tcp_sock = btf.find(Kind::Struct, "tcp_sock").unwrap();
        assert!(btf.size_of(tcp_sock).unwrap() > 1000);
        let cwnd = btf.field("tcp_sock", "snd_cwnd").unwrap();
        assert_eq!(cwnd.bit_size, 32);
    }
}
