//! `bbr-p2p` from the node's side: registration, its tunables, and each socket's BBR state.
//!
//! The congestion control is registered host-wide under one name. A node that finds it
//! already registered (by another node on the same host) uses that registration; the node that
//! registered it owns it, and it disappears when that node exits. Sockets keep running on it
//! until they close; a node that then needs it for a new connection registers it again.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use aya::maps::{Array, MapData};
use cc_ebpf_common::{
    bbr::{BBR_CONFIG_MAP, BBR_CONFIG_SLOT_MAP, BBR_STATE_MAP, BbrConfig, BbrState, BbrStorage},
    btf::Btf,
    resume::{BBR_RESUME_MAP, ResumeSlot},
};

use super::{
    objects,
    struct_ops::{Registration, StructOps, StructOpsError},
    sys,
};

/// The algorithm's name as users give it (`--cc bbr-p2p`).
pub const NAME: &str = "bbr-p2p";
/// Its name in the kernel (`TCP_CONGESTION`, `tcp_available_congestion_control`): object names
/// may only hold `[A-Za-z0-9_.]`.
pub const KERNEL_NAME: &str = "bbr_p2p";

/// The name users see for a kernel algorithm name (`bbr_p2p` → `bbr-p2p`).
pub fn user_name(kernel: &str) -> &str {
    if kernel == KERNEL_NAME { NAME } else { kernel }
}

/// The kernel's name for a user-given algorithm name (`bbr-p2p` → `bbr_p2p`).
pub fn kernel_name(user: &str) -> &str {
    if user == NAME { KERNEL_NAME } else { user }
}

/// bbr-p2p as this node uses it: the registration if this node owns it, and the maps the
/// node reads and writes (its own, or those of the node that registered it).
pub struct BbrP2p {
    registration: Option<Registration>,
    state: OwnedFd,
    config: std::sync::Mutex<Config>,
    /// Careful-resume entries per socket (`None`: an object without them).
    resume: Option<OwnedFd>,
}

/// The two-slot tunables and the index of the slot in use (see [`BBR_CONFIG_SLOT_MAP`]).
struct Config {
    slots: Array<MapData, BbrConfig>,
    in_use: Array<MapData, u32>,
}

impl Config {
    fn get(&self) -> Result<BbrConfig, aya::maps::MapError> {
        let slot = self.in_use.get(&0, 0)?;
        self.slots.get(&(slot & 1), 0)
    }

    /// Fills the slot not in use, then switches to it by storing the next generation (its low
    /// bit is the slot; one 32-bit store the programs read whole): an ACK sees the old
    /// tunables or the new ones, and a program that kept the generation sees that they
    /// changed. The next update rewrites the slot left here, so before returning this waits
    /// until no op that read the old generation can still be reading that slot
    /// ([`wait_for_running_ops`]): two updates in a row cannot tear an ACK's tunables however
    /// closely they follow each other.
    fn set(&mut self, config: BbrConfig) -> Result<(), aya::maps::MapError> {
        let next = self.in_use.get(&0, 0)?.wrapping_add(1);
        self.slots.set(next & 1, config, 0)?;
        self.in_use.set(0, next, 0)?;
        wait_for_running_ops();
        Ok(())
    }
}

/// `MEMBARRIER_CMD_GLOBAL` (linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// How long to wait where no RCU grace period can be awaited: struct_ops ops run in softirq or
/// under the socket lock for microseconds, so this is ~10^4 times the longest op measured here
/// (docs/bench.md: `bbr_init`, 7–12 µs) and above the hypervisor stalls this VM showed.
const OPS_DRAIN_FALLBACK: std::time::Duration = std::time::Duration::from_millis(100);

/// Returns once every bbr-p2p op running when it was called has returned. The kernel runs
/// struct_ops programs inside RCU read-side critical sections (`__bpf_prog_enter` in their
/// trampoline), and `membarrier(MEMBARRIER_CMD_GLOBAL)` returns after an RCU grace period
/// (`synchronize_rcu()` in kernel/sched/membarrier.c, Linux ≥ 4.16, when more than one CPU is
/// online; with one CPU no op can be part-way through while this thread runs, outside
/// PREEMPT_RT). Where the call is refused (`nohz_full` CPUs, a kernel without
/// `CONFIG_MEMBARRIER`, a seccomp filter) a sleep of [`OPS_DRAIN_FALLBACK`] stands in.
fn wait_for_running_ops() {
    // SAFETY: membarrier takes two integers and touches no memory of this process.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        std::thread::sleep(OPS_DRAIN_FALLBACK);
    }
}

impl std::fmt::Debug for BbrP2p {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BbrP2p")
            .field("registration", &self.registration)
            .finish_non_exhaustive()
    }
}

impl BbrP2p {
    /// Loads the programs, writes the default tunables and registers `bbr-p2p`.
    pub fn register(btf: &Btf) -> Result<Self, StructOpsError> {
        let mut ops = StructOps::load(objects::BBR_P2P, btf)?;
        let map_error = |what: &str, e: String| StructOpsError::Malformed(format!("{what}: {e}"));
        let slots = ops
            .take_map(BBR_CONFIG_MAP)
            .ok_or_else(|| map_error(BBR_CONFIG_MAP, "missing".into()))?
            .and_then(Array::<MapData, BbrConfig>::try_from)
            .map_err(|e| map_error(BBR_CONFIG_MAP, e.to_string()))?;
        let in_use = ops
            .take_map(BBR_CONFIG_SLOT_MAP)
            .ok_or_else(|| map_error(BBR_CONFIG_SLOT_MAP, "missing".into()))?
            .and_then(Array::<MapData, u32>::try_from)
            .map_err(|e| map_error(BBR_CONFIG_SLOT_MAP, e.to_string()))?;
        let mut config = Config { slots, in_use };
        config
            .set(BbrConfig::DEFAULT)
            .map_err(|e| map_error(BBR_CONFIG_MAP, e.to_string()))?;
        let state = ops
            .take_map_fd(BBR_STATE_MAP)
            .ok_or_else(|| map_error(BBR_STATE_MAP, "missing".into()))?;
        let resume = ops.take_map_fd(BBR_RESUME_MAP);
        let registration = ops.register()?;
        Ok(Self {
            registration: Some(registration),
            state,
            config: std::sync::Mutex::new(config),
            resume,
        })
    }

    /// Uses the bbr-p2p another process registered: finds its maps by name (the newest ones,
    /// if several exist). `Ok(None)` if they cannot be found; an error naming the map if one
    /// has another type, key size or value size than this build reads (a lookup would let the
    /// kernel write past the buffer).
    pub fn attach_existing() -> Result<Option<Self>, AdoptError> {
        let Some(state) = sys::newest_map_named(BBR_STATE_MAP)? else {
            return Ok(None);
        };
        let Some(slots) = sys::newest_map_named(BBR_CONFIG_MAP)? else {
            return Ok(None);
        };
        let Some(in_use) = sys::newest_map_named(BBR_CONFIG_SLOT_MAP)? else {
            return Ok(None);
        };
        sys::check_map_shape(slots.as_raw_fd(), BBR_CONFIG_MAP, config_map_shape())?;
        sys::check_map_shape(
            in_use.as_raw_fd(),
            BBR_CONFIG_SLOT_MAP,
            config_slot_map_shape(),
        )?;
        sys::check_map_shape(state.as_raw_fd(), BBR_STATE_MAP, state_map_shape())?;
        let array = |fd| {
            let data = MapData::from_fd(fd).ok()?;
            Some(aya::maps::Map::Array(data))
        };
        let config = (|| {
            Some(Config {
                slots: Array::try_from(array(slots)?).ok()?,
                in_use: Array::try_from(array(in_use)?).ok()?,
            })
        })();
        let Some(config) = config else {
            return Ok(None);
        };
        let resume = match sys::newest_map_named(BBR_RESUME_MAP)? {
            Some(fd) => {
                sys::check_map_shape(fd.as_raw_fd(), BBR_RESUME_MAP, resume_map_shape())?;
                Some(fd)
            }
            None => None,
        };
        Ok(Some(Self {
            registration: None,
            state,
            config: std::sync::Mutex::new(config),
            resume,
        }))
    }

    /// Whether this node registered bbr-p2p (and unregisters it when it exits).
    pub fn owned(&self) -> bool {
        self.registration.is_some()
    }

    /// The BBR state of one of this process's sockets, if it runs bbr-p2p.
    pub fn state(&self, socket: BorrowedFd<'_>) -> Option<BbrState> {
        state_of(self.state.as_raw_fd(), socket)
    }

    /// Writes a socket's careful-resume entry (the node's hint, or why it starts cold) for
    /// bbr-p2p to take on its next ACK; false if this bbr-p2p has no such storage or the write
    /// failed (the socket does not run bbr-p2p, or closed).
    pub fn offer_resume(&self, socket: BorrowedFd<'_>, slot: &ResumeSlot) -> bool {
        let Some(map) = &self.resume else {
            return false;
        };
        let key = socket.as_raw_fd().to_ne_bytes();
        // SAFETY: ResumeSlot is plain `#[repr(C)]` integers without padding.
        let value = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(slot).cast::<u8>(),
                size_of::<ResumeSlot>(),
            )
        };
        sys::map_update(map.as_raw_fd(), &key, value).is_ok()
    }

    /// A socket's careful-resume entry, if the node wrote one.
    pub fn resume_of(&self, socket: BorrowedFd<'_>) -> Option<ResumeSlot> {
        let map = self.resume.as_ref()?;
        let key = socket.as_raw_fd().to_ne_bytes();
        let mut value = [0u8; size_of::<ResumeSlot>()];
        // SAFETY: the map's value size is size_of::<ResumeSlot>(): this node created it, or
        // checked it before adopting it.
        unsafe { sys::map_lookup(map.as_raw_fd(), &key, &mut value) }.ok()?;
        // SAFETY: ResumeSlot is plain `#[repr(C)]` integers without padding, of this size.
        Some(unsafe { value.as_ptr().cast::<ResumeSlot>().read_unaligned() })
    }

    pub fn config(&self) -> Result<BbrConfig, aya::maps::MapError> {
        self.config.lock().expect("lock poisoned").get()
    }

    /// Validates and applies new tunables (they take effect from the next ACK). Blocks for an
    /// RCU grace period (see [`Config::set`]): call it off the async runtime.
    pub fn set_config(&self, config: BbrConfig) -> Result<(), String> {
        self.update_config(|_| Ok((config, ())))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Reads the tunables, computes new ones with `change` and applies them, holding the lock
    /// throughout, so that two concurrent changes of different tunables both take effect (one
    /// after the other) instead of the second overwriting the first with what it read before
    /// the first was applied. Nothing is written if `change` or validation fails. Blocks as
    /// [`Self::set_config`] does.
    pub fn update_config<T>(
        &self,
        change: impl FnOnce(&BbrConfig) -> Result<(BbrConfig, T), String>,
    ) -> Result<(BbrConfig, T), ConfigError> {
        let mut config = self.config.lock().expect("lock poisoned");
        let current = config.get().map_err(ConfigError::Read)?;
        let (new, out) = change(&current).map_err(ConfigError::Refused)?;
        new.validate()
            .map_err(|e| ConfigError::Refused(e.to_owned()))?;
        config.set(new).map_err(ConfigError::Write)?;
        Ok((new, out))
    }
}

/// Why a change of bbr-p2p's tunables did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The change itself was refused (unknown name, out-of-range value): nothing was written.
    #[error("{0}")]
    Refused(String),
    #[error("reading the tunables: {0}")]
    Read(aya::maps::MapError),
    #[error("writing the tunables: {0}")]
    Write(aya::maps::MapError),
}

/// Why this node cannot use the bbr-p2p registration another process holds.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Mismatch(#[from] sys::MapMismatch),
    #[error(
        "bbr-p2p is registered by another process on this host and this node cannot use its maps"
    )]
    Denied(#[from] sys::MapIdsDenied),
}

/// What this build reads from `BBR_STATE`: socket storage keyed by a socket fd, of
/// `BbrStorage` (the `BbrState`, then the programs' scratch).
pub fn state_map_shape() -> sys::MapShape {
    sys::MapShape {
        map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as u32,
        key_size: size_of::<i32>() as u32,
        value_size: size_of::<BbrStorage>() as u32,
    }
}

/// What this build reads and writes in `BBR_CONFIG`: an array of `BbrConfig` slots.
pub fn config_map_shape() -> sys::MapShape {
    sys::MapShape {
        map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<BbrConfig>() as u32,
    }
}

/// What this build reads and writes in `BBR_RESUME`: socket storage of `ResumeSlot`.
pub fn resume_map_shape() -> sys::MapShape {
    sys::MapShape {
        map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as u32,
        key_size: size_of::<i32>() as u32,
        value_size: size_of::<ResumeSlot>() as u32,
    }
}

/// What this build reads and writes in `BBR_CFG_SLOT`: an array of one `u32` generation
/// (its low bit the slot index).
pub fn config_slot_map_shape() -> sys::MapShape {
    sys::MapShape {
        map_type: aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        key_size: size_of::<u32>() as u32,
        value_size: size_of::<u32>() as u32,
    }
}

/// Looks up the socket-storage value of `socket` in the state map `map` (whose shape the
/// caller checked: [`state_map_shape`]).
pub fn state_of(map: RawFd, socket: BorrowedFd<'_>) -> Option<BbrState> {
    let key = socket.as_raw_fd().to_ne_bytes();
    let mut value = [0u8; size_of::<BbrStorage>()];
    // SAFETY: the state map's value size is size_of::<BbrStorage>(): this node created it, or
    // checked it before adopting it (`attach_existing`).
    unsafe { sys::map_lookup(map, &key, &mut value) }.ok()?;
    // SAFETY: the value begins with the BbrState (BbrStorage is `#[repr(C)]`), which is plain
    // `#[repr(C)]` integers with no padding.
    Some(unsafe { value.as_ptr().cast::<BbrState>().read_unaligned() })
}
