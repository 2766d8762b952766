//! The few `bpf(2)` commands the struct_ops loader issues itself (aya keeps its own private).
//! Attribute layouts are aya-obj's bindings of the kernel's `union bpf_attr`.

use std::{
    ffi::CStr,
    io,
    mem::{size_of, zeroed},
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_map_info};

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a fully initialised bpf_attr of the size passed; the kernel reads at
    // most that many bytes and writes only fields of the command given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_result(rc: i64) -> OwnedFd {
    // SAFETY: a successful fd-returning bpf command returns a new fd owned by the caller.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain data; all-zero is its documented "unset" value.
    unsafe { zeroed() }
}

/// Copies a name into a kernel object name `char[16]`: truncated, NUL-terminated, and with
/// characters the kernel refuses in object names (anything but `[A-Za-z0-9_.]`) as `_`.
fn object_name(name: &str) -> [libc::c_char; 16] {
    let mut out = [0 as libc::c_char; 16];
    for (dst, &b) in out.iter_mut().zip(name.as_bytes().iter().take(15)) {
        let b = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            b
        } else {
            b'_'
        };
        *dst = b as libc::c_char;
    }
    out
}

/// Arguments of `BPF_PROG_LOAD` the loader uses.
pub struct ProgLoad<'a> {
    pub prog_type: u32,
    pub name: &'a str,
    /// Instructions, 8 bytes each in the object's (host) byte order.
    pub insns: &'a [u64],
    pub license: &'a CStr,
    pub attach_btf_id: u32,
    pub expected_attach_type: u32,
}

/// `BPF_PROG_LOAD`. On failure returns the error and the verifier log (loaded again with
/// logging on, so the successful path pays nothing for it).
pub fn prog_load(p: &ProgLoad<'_>) -> Result<OwnedFd, (io::Error, String)> {
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = zeroed_attr();
        // SAFETY: writing the BPF_PROG_LOAD member of the union.
        let a = unsafe { &mut attr.__bindgen_anon_3 };
        a.prog_type = p.prog_type;
        a.insn_cnt = p.insns.len() as u32;
        a.insns = p.insns.as_ptr() as u64;
        a.license = p.license.as_ptr() as u64;
        a.prog_name = object_name(p.name);
        a.attach_btf_id = p.attach_btf_id;
        a.expected_attach_type = p.expected_attach_type;
        if let Some(log) = log {
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
        }
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map(fd_result)
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // 16 MiB: the verifier's log of a large program; we keep only its tail.
            let mut log = vec![0u8; 16 << 20];
            let second = attempt(Some(&mut log));
            let text = CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            match second {
                Ok(fd) => Ok(fd),
                Err(_) => Err((first, text)),
            }
        }
    }
}

/// Arguments of `BPF_MAP_CREATE` the loader uses.
pub struct MapCreate<'a> {
    pub map_type: u32,
    pub name: &'a str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub btf_fd: Option<RawFd>,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_value_type_id: u32,
}

/// `BPF_MAP_CREATE`.
pub fn map_create(m: &MapCreate<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_MAP_CREATE member of the union.
    let a = unsafe { &mut attr.__bindgen_anon_1 };
    a.map_type = m.map_type;
    a.key_size = m.key_size;
    a.value_size = m.value_size;
    a.max_entries = m.max_entries;
    a.map_flags = m.map_flags;
    a.map_name = object_name(m.name);
    a.btf_fd = m.btf_fd.map_or(0, |fd| fd as u32);
    a.btf_key_type_id = m.btf_key_type_id;
    a.btf_value_type_id = m.btf_value_type_id;
    a.btf_vmlinux_value_type_id = m.btf_vmlinux_value_type_id;
    sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).map(fd_result)
}

/// `BPF_MAP_UPDATE_ELEM` with raw key and value bytes.
pub fn map_update(map: RawFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the element-command member of the union.
    let a = unsafe { &mut attr.__bindgen_anon_2 };
    a.map_fd = map as u32;
    a.key = key.as_ptr() as u64;
    a.__bindgen_anon_1.value = value.as_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM` (for a struct_ops map registered without a link: unregisters it).
pub fn map_delete(map: RawFd, key: &[u8]) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the element-command member of the union.
    let a = unsafe { &mut attr.__bindgen_anon_2 };
    a.map_fd = map as u32;
    a.key = key.as_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_FREEZE`: no more writes from userspace; with `BPF_F_RDONLY_PROG` the verifier then
/// treats the map's contents as constants.
pub fn map_freeze(map: RawFd) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the element-command member of the union (map_fd only).
    let a = unsafe { &mut attr.__bindgen_anon_2 };
    a.map_fd = map as u32;
    sys_bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr).map(drop)
}

/// `BPF_MAP_LOOKUP_ELEM` into a caller-sized buffer.
///
/// # Safety
/// The kernel writes the map's whole value size into `value`: `value.len()` must be at least
/// the value size of the map `map` refers to (per-CPU maps: times the number of CPUs), and
/// `key.len()` at least its key size.
pub unsafe fn map_lookup(map: RawFd, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the element-command member of the union.
    let a = unsafe { &mut attr.__bindgen_anon_2 };
    a.map_fd = map as u32;
    a.key = key.as_ptr() as u64;
    a.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_LOOKUP_BATCH` over a whole hash map: calls `each(key, value)` for every element,
/// reading up to `chunk` elements per syscall. `value_size` is what one lookup returns (for a
/// per-CPU map: the 8-byte-rounded value times the possible CPUs). Returns the number of
/// syscalls made. Elements added or removed during the walk may be missed or seen once; each
/// element read is a consistent copy.
///
/// The kernel writes `count × (its own value size)` bytes into the values buffer, so the map's
/// key and value sizes are read from the kernel first: a map of another shape (a caller's
/// mistake, or an fd that is not the map it thinks) is an `InvalidInput` error, never a
/// write past the buffers.
pub fn map_lookup_batch(
    map: RawFd,
    key_size: usize,
    value_size: usize,
    chunk: u32,
    mut each: impl FnMut(&[u8], &[u8]),
) -> io::Result<u32> {
    let info = map_info(map)?;
    let kernel_value_size = lookup_value_size(&info)?;
    if info.key_size as usize != key_size || kernel_value_size != value_size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "map id {} has key size {} and {kernel_value_size} value bytes per lookup; the reader expects {key_size} and {value_size}",
                info.id, info.key_size
            ),
        ));
    }
    let mut keys = vec![0u8; key_size * chunk as usize];
    let mut values = vec![0u8; value_size * chunk as usize];
    // The hash map's batch token is a u32 bucket index; 8 bytes leave room for other maps.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut calls = 0;
    let mut first = true;
    loop {
        let mut attr = zeroed_attr();
        // SAFETY: writing the batch-command member of the union.
        let b = unsafe { &mut attr.batch };
        b.map_fd = map as u32;
        b.in_batch = if first { 0 } else { (&raw mut token_in) as u64 };
        b.out_batch = (&raw mut token_out) as u64;
        b.keys = keys.as_mut_ptr() as u64;
        b.values = values.as_mut_ptr() as u64;
        b.count = chunk;
        let result = sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
        calls += 1;
        // SAFETY: the kernel wrote back `count` in the same member.
        let count = unsafe { attr.batch.count }.min(chunk) as usize;
        let done = match result {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        for i in 0..count {
            each(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_size..(i + 1) * value_size],
            );
        }
        if done || count == 0 {
            return Ok(calls);
        }
        token_in = token_out;
        first = false;
    }
}

/// How many bytes one `BPF_MAP_LOOKUP_ELEM`/batch element of this map writes: the value size,
/// or for per-CPU maps the value rounded up to 8 bytes times the possible CPUs.
fn lookup_value_size(info: &bpf_map_info) -> io::Result<usize> {
    use aya_obj::generated::bpf_map_type::*;
    let per_cpu = [
        BPF_MAP_TYPE_PERCPU_HASH,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        BPF_MAP_TYPE_LRU_PERCPU_HASH,
        BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE_DEPRECATED,
    ]
    .iter()
    .any(|&t| t as u32 == info.type_);
    let value = info.value_size as usize;
    if !per_cpu {
        return Ok(value);
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    Ok(value.next_multiple_of(8) * cpus)
}

/// `BPF_BTF_LOAD` of raw BTF bytes.
pub fn btf_load(btf: &[u8]) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_BTF_LOAD member of the union.
    let a = unsafe { &mut attr.__bindgen_anon_7 };
    a.btf = btf.as_ptr() as u64;
    a.btf_size = btf.len() as u32;
    sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).map(fd_result)
}

/// `BPF_LINK_CREATE` for a struct_ops map.
pub fn struct_ops_link_create(map: RawFd, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_LINK_CREATE member of the union.
    let a = unsafe { &mut attr.link_create };
    a.__bindgen_anon_1.map_fd = map as u32;
    a.attach_type = attach_type;
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map(fd_result)
}

/// `BPF_LINK_CREATE` of an iterator program (`BPF_TRACE_ITER`, no target, no parameters): the
/// link [`iter_create`] opens walks from. aya's `Iter::attach` keeps its link private and
/// `IterLink::into_file` consumes it, so one walk per link; the collector walks once per
/// collection from one link.
pub fn iter_link_create(prog: RawFd) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_LINK_CREATE member of the union.
    let a = unsafe { &mut attr.link_create };
    a.__bindgen_anon_1.prog_fd = prog as u32;
    a.attach_type = aya_obj::generated::bpf_attach_type::BPF_TRACE_ITER as u32;
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map(fd_result)
}

/// `BPF_ITER_CREATE`: a new iterator (a seq_file) of an iterator link; each `read` runs the
/// program over the next objects, in the network namespace of the calling thread.
pub fn iter_create(link: RawFd) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_ITER_CREATE member of the union.
    let a = unsafe { &mut attr.iter_create };
    a.link_fd = link as u32;
    sys_bpf(bpf_cmd::BPF_ITER_CREATE, &mut attr).map(fd_result)
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a map.
///
/// Typed on purpose: the kernel writes up to `info_len` bytes, and for some info types
/// (`bpf_prog_info`'s `map_ids`, `jited_prog_insns`, ...) also through user pointers held in
/// the struct itself. The info here is created zeroed by this function (no pointers, a length
/// that is exactly its size), so no caller can make the kernel write past a Rust buffer.
pub fn map_info(fd: RawFd) -> io::Result<bpf_map_info> {
    // SAFETY: bpf_map_info is plain integers and byte arrays; all-zero is valid.
    let mut info: bpf_map_info = unsafe { zeroed() };
    let mut attr = zeroed_attr();
    // SAFETY: writing the BPF_OBJ_GET_INFO_BY_FD member of the union.
    let a = unsafe { &mut attr.info };
    a.bpf_fd = fd as u32;
    a.info_len = size_of::<bpf_map_info>() as u32;
    a.info = (&raw mut info) as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// Walking the kernel's maps by id (`BPF_MAP_GET_NEXT_ID`) needs CAP_SYS_ADMIN; a node
/// running with only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN cannot find another process's maps.
#[derive(Debug, thiserror::Error)]
#[error(
    "finding another process's eBPF maps by id needs CAP_SYS_ADMIN (the kernel refused BPF_MAP_GET_NEXT_ID)"
)]
pub struct MapIdsDenied(#[source] pub io::Error);

/// Ids of every map in the kernel (`BPF_MAP_GET_NEXT_ID`), bounded by `limit`.
pub fn map_ids(limit: usize) -> Result<Vec<u32>, MapIdsDenied> {
    let mut ids = Vec::new();
    let mut next = 0u32;
    while ids.len() < limit {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = next;
        match sys_bpf(bpf_cmd::BPF_MAP_GET_NEXT_ID, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(MapIdsDenied(e)),
            // ENOENT: past the last id.
            Err(_) => break,
        }
        // SAFETY: the kernel wrote next_id.
        next = unsafe { attr.__bindgen_anon_6.next_id };
        ids.push(next);
    }
    Ok(ids)
}

/// `BPF_MAP_GET_FD_BY_ID`.
pub fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.map_id = id;
    sys_bpf(bpf_cmd::BPF_MAP_GET_FD_BY_ID, &mut attr).map(fd_result)
}

/// The type, key size and value size a map must have before this build reads it into
/// fixed-size buffers (the kernel writes `value_size` bytes on a lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
}

/// A map found by name whose shape is not what this build expects.
#[derive(Debug, thiserror::Error)]
#[error(
    "map {name} (id {id}) has type {}, key size {} and value size {}; this build expects type {}, key size {} and value size {}: refusing to adopt it (was bbr-p2p registered by another build of p2p-node?)",
    found.map_type, found.key_size, found.value_size, expected.map_type, expected.key_size, expected.value_size
)]
pub struct MapMismatch {
    pub name: String,
    pub id: u32,
    pub found: MapShape,
    pub expected: MapShape,
}

/// Checks that the map `fd` (named `name`) has the `expected` shape.
pub fn check_map_shape(fd: RawFd, name: &str, expected: MapShape) -> Result<(), MapMismatch> {
    let (id, found) = match map_info(fd) {
        Ok(info) => (
            info.id,
            MapShape {
                map_type: info.type_,
                key_size: info.key_size,
                value_size: info.value_size,
            },
        ),
        Err(_) => (
            0,
            MapShape {
                map_type: u32::MAX,
                key_size: 0,
                value_size: 0,
            },
        ),
    };
    if found == expected {
        Ok(())
    } else {
        Err(MapMismatch {
            name: name.to_owned(),
            id,
            found,
            expected,
        })
    }
}

/// The map with the highest id whose name is `name` (newest first wins), bounded scan.
pub fn newest_map_named(name: &str) -> Result<Option<OwnedFd>, MapIdsDenied> {
    const MAX_MAPS: usize = 65_536;
    let mut found = None;
    for id in map_ids(MAX_MAPS)? {
        let Ok(fd) = map_fd_by_id(id) else { continue };
        let Ok(info) = map_info(std::os::fd::AsRawFd::as_raw_fd(&fd)) else {
            continue;
        };
        // SAFETY: the kernel NUL-terminates the 16-byte name.
        let map_name = unsafe { CStr::from_ptr(info.name.as_ptr()) };
        if map_name.to_bytes() == name.as_bytes() {
            found = Some(fd);
        }
    }
    Ok(found)
}
