//! Loading the eBPF programs: the TCP probes with aya, and (see `struct_ops`) the congestion
//! control aya cannot load.

pub mod bbr;
pub mod caps;
pub mod features;
pub mod kfunc;
pub mod offsets;
pub mod stack;
pub mod struct_ops;
#[doc(hidden)]
pub mod sys; // public for the kernel tests (crafted maps)

/// The eBPF objects embedded in the binary.
pub mod objects {
    /// `bbr-p2p`: the BBR variant (struct_ops `tcp_congestion_ops`).
    pub static BBR_P2P: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bbr_p2p.bpf.o"));
    /// `p2pcc_reno`: Reno in Rust, the struct_ops loader's reference algorithm.
    pub static RENO_RS: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reno_rs.bpf.o"));
}

use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, SkStorage},
    programs::{BtfTracePoint, Iter},
};
use cc_ebpf_common::{
    FINAL_RECORDS_MAP, FinalRecord, PROBE_COUNTERS_MAP, ProbeCounters, REFRESH_PROGRAM,
    RTT_HIST_MAP, RTT_HIST_MAX_ENTRIES, RttHist, SOCK_STATS_MAP, SOCK_STATS_MAX_ENTRIES,
    SOCK_TRACK_MAP, SockStats, SockTrack, TCP_PROBE_ALL_PROGRAM, TCP_PROBE_PROGRAM, layout,
    unpadded,
};

use crate::sockets::SocketObserver;

/// The TCP probes object.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));

/// The benchmark's `tcp_probe` programs: the empty floor and the diagnostic pieces (see
/// `cc-ebpf/src/bin/probe_floor.rs`).
static PROBE_FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe_floor.bpf.o"));

/// The programs of [`PROBE_FLOOR_OBJECT`], attached in this order (after the probes; the
/// floor last, so the benchmark sees all once it sees the floor).
pub const PROBE_FLOOR_PROGRAMS: [&str; 4] = [
    "diag_load",
    "diag_helper",
    "diag_storage",
    "tcp_probe_floor",
];

/// An empty program on `tcp_probe` and the diagnostic pieces of the probes' path, attached for
/// `cargo xtask bench probes` only (hidden `--bench-probe-floor`): the floor the probes' cost
/// per event is measured against, and what one load, one helper call and one storage lookup
/// cost on the same events. Dropping it detaches them.
pub struct ProbeFloor {
    _ebpf: Ebpf,
}

impl ProbeFloor {
    pub fn attach() -> Result<Self, LoadError> {
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Load(e.into()))?;
        let kernel = cc_ebpf_common::btf::Btf::from_sys_fs().map_err(LoadError::NoBtf)?;
        let object = offsets::patch(PROBE_FLOOR_OBJECT, &layout::resolve(&kernel))
            .map_err(LoadError::Offsets)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(object.bytes())
            .map_err(LoadError::Load)?;
        for program in PROBE_FLOOR_PROGRAMS {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or(LoadError::Missing("a floor program"))?
                .try_into()
                .map_err(|source| LoadError::Program { program, source })?;
            prog.load("tcp_probe", &btf)
                .and_then(|()| prog.attach().map(drop))
                .map_err(|source| LoadError::Program { program, source })?;
        }
        Ok(Self { _ebpf: ebpf })
    }
}

/// Why the eBPF part could not start. Each message is one sentence a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "p2p-node cannot load its eBPF programs: missing {missing} (run as root, or grant them with \
         `setcap cap_bpf,cap_perfmon,cap_net_admin+ep <p2p-node binary>`)"
    )]
    MissingCapabilities { missing: String },
    #[error(
        "kernel BTF is unavailable ({0}); the kernel needs CONFIG_DEBUG_INFO_BTF=y for the TCP \
         probes and the bbr-p2p congestion control (the libp2p node and the kernel's own \
         algorithms still work)"
    )]
    NoBtf(#[source] cc_ebpf_common::btf::BtfError),
    #[error("loading the TCP probes object")]
    Load(#[source] aya::EbpfError),
    #[error("placing the kernel's field offsets in the TCP probes object")]
    Offsets(#[source] offsets::OffsetsError),
    #[error("linking the TCP probes' kernel-function calls")]
    Kfunc(#[source] kfunc::KfuncError),
    #[error("loading or attaching program `{program}`")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("TCP probe `{program}` cannot run on this kernel: {fields}")]
    KernelFields {
        program: &'static str,
        fields: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("TCP probe {tracepoint} cannot attach: {why}")]
    Tracepoint {
        tracepoint: &'static str,
        why: String,
    },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error("opening map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Checks what every eBPF load needs: capabilities and the kernel's BTF (where the loaders find
/// the kernel field offsets they patch into the programs).
pub fn preflight() -> Result<cc_ebpf_common::btf::Btf, LoadError> {
    if let Some(missing) = caps::missing_for_ebpf() {
        return Err(LoadError::MissingCapabilities { missing });
    }
    cc_ebpf_common::btf::Btf::from_sys_fs().map_err(LoadError::NoBtf)
}

/// A kernel tracepoint the probes attach to. The node runs without an optional one (reported
/// unavailable, with what is lost) but not without `tcp_probe`.
pub struct Probe {
    pub tracepoint: &'static str,
    pub required: bool,
    /// `(program in the object, tracepoint arguments it reads)`, most arguments first: the
    /// loader takes the first form the running kernel's prototype can feed.
    forms: &'static [(&'static str, u32)],
    /// What the node does not measure without it.
    pub without: &'static str,
}

pub const PROBES: &[Probe] = &[
    Probe {
        tracepoint: "tcp_probe",
        required: true,
        // `tcp_probe_all` replaces it in observe-all mode (see `Probes::load`).
        forms: &[(TCP_PROBE_PROGRAM, 2)],
        without: "per-peer TCP telemetry (cwnd, RTT, delivery rate, bytes)",
    },
    Probe {
        tracepoint: "tcp_retransmit_skb",
        required: false,
        // Linux 6.10 added `err` (and fires for failed attempts); before, two arguments.
        forms: &[("tcp_retransmit_skb", 3), ("tcp_retransmit_skb_2args", 2)],
        without: "retransmitted segments and bytes per peer",
    },
    Probe {
        tracepoint: "tcp_cong_state_set",
        required: false,
        forms: &[("tcp_cong_state_set", 2)],
        without: "time in each congestion state and recovery/loss episodes per peer",
    },
    Probe {
        tracepoint: "tcp_destroy_sock",
        required: false,
        forms: &[("tcp_destroy_sock", 1)],
        without: "final records of closed sockets (the node ends their tracking itself after 90 s)",
    },
];

impl Probe {
    /// The program form for a kernel whose tracepoint passes `arity` arguments (`None`: the
    /// kernel has no such tracepoint), or why there is none.
    pub fn form(&self, arity: Option<u32>) -> Result<&'static str, String> {
        let Some(arity) = arity else {
            return Err(format!(
                "the kernel has no BTF tracepoint {} (no btf_trace_{} in its BTF)",
                self.tracepoint, self.tracepoint
            ));
        };
        self.forms
            .iter()
            .find(|(_, reads)| *reads <= arity)
            .map(|&(program, _)| program)
            .ok_or_else(|| {
                format!(
                    "the kernel's {} tracepoint passes {arity} arguments; this build reads at least {}",
                    self.tracepoint,
                    self.forms.iter().map(|f| f.1).min().unwrap_or(0)
                )
            })
    }
}

/// Whether a probe is attached on this kernel, and if not, why and what is lost.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProbeStatus {
    pub tracepoint: &'static str,
    /// The program form attached (`tcp_retransmit_skb_2args` on kernels before 6.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// What the node does not measure while it is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without: Option<&'static str>,
}

impl ProbeStatus {
    /// Every probe unavailable for one reason (the probes object did not load).
    pub fn all_unavailable(why: &str) -> Vec<Self> {
        PROBES
            .iter()
            .map(|p| Self {
                tracepoint: p.tracepoint,
                program: None,
                unavailable: Some(why.to_owned()),
                without: Some(p.without),
            })
            .collect()
    }
}

/// How long an entry the node dropped may wait for `tcp_destroy_sock` (which fires once the
/// kernel frees the socket: after the FIN exchange, or `tcp_fin_timeout` = 60 s for a peer that
/// never answers) before the node removes it itself.
pub const DESTROY_GRACE: Duration = Duration::from_secs(90);

/// Run time and count of one program (`BPF_OBJ_GET_INFO_BY_FD`; counted only while
/// `kernel.bpf_stats_enabled` is on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// A record of a socket whose tracking ended: from `tcp_destroy_sock`, or read by the node when
/// the destroy did not come within [`DESTROY_GRACE`] (`expired`).
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    pub record: FinalRecord,
    pub expired: bool,
}

/// The loaded and attached TCP probes and their maps.
pub struct Probes {
    /// Owns the programs and their links; dropping it detaches everything.
    ebpf: Ebpf,
    stats: Mutex<HashMap<MapData, u64, SockStats>>,
    /// The node's marks on its own sockets (socket storage, keyed by fd).
    track: Mutex<SkStorage<MapData, SockTrack>>,
    counters: PerCpuArray<MapData, ProbeCounters>,
    final_records: Mutex<RingBuf<MapData>>,
    /// Second fds of `SOCK_STATS` and `RTT_HIST` for batched reads (aya's typed maps do not
    /// expose `BPF_MAP_LOOKUP_BATCH`).
    stats_fd: OwnedFd,
    rtt_hist_fd: OwnedFd,
    /// Sockets the node dropped whose entry waits for `tcp_destroy_sock`.
    closing: Mutex<std::collections::HashMap<u64, Instant>>,
    program_ids: Vec<(&'static str, u32)>,
    /// Programs that failed to load or attach, with the error.
    failed: Vec<(&'static str, String)>,
    /// Every probe: attached (which form) or unavailable (why, and what is lost).
    status: Vec<ProbeStatus>,
    /// Holds `BPF_ENABLE_STATS` on while open (the kernel restores the setting when the node
    /// exits, even when it is killed).
    run_stats_fd: Mutex<Option<OwnedFd>>,
    /// The link of [`REFRESH_PROGRAM`] the collector walks from, or why there is none.
    refresher: Result<OwnedFd, String>,
    /// Set once a walk failed and was reported (reported once, not per collection).
    refresh_failed: std::sync::atomic::AtomicBool,
}

/// What an idle socket's snapshot is without the collector's refresh ([`Probes::refresh`]).
pub const WITHOUT_REFRESH: &str = "exact numbers for idle sockets: a socket's snapshot lags its last traffic by \
     < 1 kernel tick (a burst of ACKs in one tick counts as one) until its next segment";

/// Times a walk may be asked to go on (`EAGAIN`: the kernel ends one read after 1,000,000
/// sockets; `EINTR`) before the collection gives up on it.
const REFRESH_READS: usize = 8;

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Probes {
    /// Loads and attaches the probes (call [`preflight`] first). `observe_all`: every TCP
    /// socket on the host is tracked, not only the node's own (`tcp_probe`'s other form; fixed
    /// for the probes' life, so no event reads a setting).
    pub fn load(observe_all: bool) -> Result<Self, LoadError> {
        let btf = Btf::from_sys_fs().map_err(|e| LoadError::Load(e.into()))?;
        let kernel = cc_ebpf_common::btf::Btf::from_sys_fs().map_err(LoadError::NoBtf)?;
        let layout = layout::resolve(&kernel);
        // The running kernel's field offsets as the programs' immediates.
        let object = offsets::patch(PROBES_OBJECT, &layout).map_err(LoadError::Offsets)?;
        // Its kfunc calls linked to the running kernel's (aya 0.14 links none).
        let object = kfunc::link(object.bytes(), &kernel).map_err(LoadError::Kfunc)?;
        if !object.missing.is_empty() {
            tracing::info!(
                missing = ?object.missing,
                "this kernel lacks kfuncs tcp_probe's pre-test reads through (Linux < 6.2): \
                 every tracked event goes on to the socket-storage lookup"
            );
        }
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(object.bytes())
            .map_err(LoadError::Load)?;
        let mut program_ids = Vec::new();
        let mut failed = Vec::new();
        let mut status = Vec::new();
        for probe in PROBES {
            let tracepoint = probe.tracepoint;
            let form =
                probe
                    .form(kernel.tracepoint_arity(tracepoint))
                    .map(|program| match program {
                        TCP_PROBE_PROGRAM if observe_all => TCP_PROBE_ALL_PROGRAM,
                        program => program,
                    });
            let attached = (|| -> Result<u32, LoadError> {
                let program = form
                    .clone()
                    .map_err(|why| LoadError::Tracepoint { tracepoint, why })?;
                let prog: &mut BtfTracePoint = ebpf
                    .program_mut(program)
                    .ok_or(LoadError::Missing("a probe program"))?
                    .try_into()
                    .map_err(|source| LoadError::Program { program, source })?;
                prog.load(tracepoint, &btf)
                    .and_then(|()| prog.attach().map(drop))
                    .map_err(|source| match layout.summary() {
                        Some(fields) => LoadError::KernelFields {
                            program,
                            fields,
                            source,
                        },
                        None => LoadError::Program { program, source },
                    })?;
                Ok(prog.info().map(|i| i.id()).unwrap_or(0))
            })();
            match attached {
                Ok(id) => {
                    program_ids.push((tracepoint, id));
                    status.push(ProbeStatus {
                        tracepoint,
                        program: form.ok(),
                        unavailable: None,
                        without: None,
                    });
                }
                Err(e) if probe.required => return Err(e),
                Err(e) => {
                    let why = error_chain(&e);
                    tracing::warn!(
                        "TCP probe {tracepoint} not attached: {why}; without it: no {}",
                        probe.without
                    );
                    failed.push((tracepoint, why.clone()));
                    status.push(ProbeStatus {
                        tracepoint,
                        program: None,
                        unavailable: Some(why),
                        without: Some(probe.without),
                    });
                }
            }
        }
        // The collector's refresh: optional (the node keeps the probes' lag without it).
        let refresher = (|| -> Result<(OwnedFd, u32), LoadError> {
            let program = REFRESH_PROGRAM;
            let prog: &mut Iter = ebpf
                .program_mut(program)
                .ok_or(LoadError::Missing("the refresh program"))?
                .try_into()
                .map_err(|source| LoadError::Program { program, source })?;
            prog.load("tcp", &btf)
                .map_err(|source| LoadError::Program { program, source })?;
            let fd = prog
                .fd()
                .map_err(|source| LoadError::Program { program, source })?;
            let link = sys::iter_link_create(fd.as_fd().as_raw_fd()).map_err(|io_error| {
                LoadError::Program {
                    program,
                    source: aya::sys::SyscallError {
                        call: "bpf_link_create",
                        io_error,
                    }
                    .into(),
                }
            })?;
            Ok((link, prog.info().map(|i| i.id()).unwrap_or(0)))
        })();
        let refresher = match refresher {
            Ok((link, id)) => {
                program_ids.push((REFRESH_PROGRAM, id));
                Ok(link)
            }
            Err(e) => {
                let why = error_chain(&e);
                tracing::warn!(
                    "the collector's refresh (iter/tcp) not loaded: {why}; without it: no {WITHOUT_REFRESH}"
                );
                failed.push((REFRESH_PROGRAM, why.clone()));
                Err(why)
            }
        };
        let map = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::Missing(name))
        };
        let err = |map: &'static str| move |source| LoadError::Map { map, source };
        let stats = map(&mut ebpf, SOCK_STATS_MAP)?;
        let stats_fd = second_fd(&stats).map_err(err(SOCK_STATS_MAP))?;
        let stats = HashMap::try_from(stats).map_err(err(SOCK_STATS_MAP))?;
        let track =
            SkStorage::try_from(map(&mut ebpf, SOCK_TRACK_MAP)?).map_err(err(SOCK_TRACK_MAP))?;
        let counters = PerCpuArray::try_from(map(&mut ebpf, PROBE_COUNTERS_MAP)?)
            .map_err(err(PROBE_COUNTERS_MAP))?;
        let rtt_hist = map(&mut ebpf, RTT_HIST_MAP)?;
        let rtt_hist_fd = second_fd(&rtt_hist).map_err(err(RTT_HIST_MAP))?;
        // The typed map only checks the type and sizes; reads go through the second fd.
        PerCpuHashMap::<_, u64, RttHist>::try_from(rtt_hist).map_err(err(RTT_HIST_MAP))?;
        let final_records = RingBuf::try_from(map(&mut ebpf, FINAL_RECORDS_MAP)?)
            .map_err(err(FINAL_RECORDS_MAP))?;
        Ok(Self {
            ebpf,
            stats: Mutex::new(stats),
            track: Mutex::new(track),
            counters,
            final_records: Mutex::new(final_records),
            stats_fd,
            rtt_hist_fd,
            closing: Mutex::new(std::collections::HashMap::new()),
            program_ids,
            failed,
            status,
            run_stats_fd: Mutex::new(None),
            refresher,
            refresh_failed: Default::default(),
        })
    }

    /// Whether the collector's refresh is loaded (`Ok`) or why not.
    pub fn refresher(&self) -> Result<(), &str> {
        self.refresher.as_ref().map(drop).map_err(String::as_str)
    }

    /// Refreshes every tracked socket's entry from its `tcp_sock`: one walk of
    /// [`REFRESH_PROGRAM`] over the TCP sockets of the calling thread's network namespace (one
    /// `BPF_ITER_CREATE` and one `read`, which returns 0 once the walk is done: the program
    /// prints nothing). Costs O(buckets of the namespace's established-socket table + TCP
    /// sockets in the namespace), each socket visited under its lock (measured in the program's
    /// note, `cc-ebpf/src/bin/probes.rs`). Returns how long the walk took; `None` when the refresh is unavailable or the walk
    /// failed (reported once).
    pub fn refresh(&self) -> Option<Duration> {
        let link = self.refresher.as_ref().ok()?;
        let started = Instant::now();
        let walked = sys::iter_create(link.as_raw_fd()).and_then(|iter| {
            let mut buf = [0u8; 64];
            for _ in 0..REFRESH_READS {
                // SAFETY: `buf` is writable for its length; `iter` is an open fd.
                let n = unsafe { libc::read(iter.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                match n {
                    0 => return Ok(()),
                    n if n > 0 => continue,
                    _ => {
                        let e = std::io::Error::last_os_error();
                        match e.kind() {
                            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => {}
                            _ => return Err(e),
                        }
                    }
                }
            }
            Err(std::io::Error::other(format!(
                "the walk did not end within {REFRESH_READS} reads"
            )))
        });
        match walked {
            Ok(()) => Some(started.elapsed()),
            Err(e) => {
                if !self
                    .refresh_failed
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(
                        "walking {REFRESH_PROGRAM} (iter/tcp) failed: {e}; until it works again: no {WITHOUT_REFRESH}"
                    );
                }
                None
            }
        }
    }

    /// Turns on the kernel's per-program run time and count (`BPF_ENABLE_STATS`) for as long
    /// as the node runs. Costs every BPF program on the host ~20 ns per run while on.
    pub fn enable_run_stats(&self) -> Result<(), aya::sys::SyscallError> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
        *self.run_stats_fd.lock().expect("lock poisoned") = Some(fd);
        Ok(())
    }

    /// Run time and count of each attached program.
    pub fn run_stats(&self) -> Vec<(&'static str, RunStats)> {
        let stats = |info: aya::programs::ProgramInfo| RunStats {
            run_time_ns: info.run_time().as_nanos() as u64,
            run_count: info.run_count(),
        };
        let mut out: Vec<_> = self
            .status
            .iter()
            .filter_map(|s| {
                let (name, program) = (s.tracepoint, s.program?);
                let prog: &BtfTracePoint = self.ebpf.program(program)?.try_into().ok()?;
                Some((name, stats(prog.info().ok()?)))
            })
            .collect();
        if self.refresher.is_ok() {
            let refresh = self
                .ebpf
                .program(REFRESH_PROGRAM)
                .and_then(|p| <&Iter>::try_from(p).ok())
                .and_then(|p| p.info().ok());
            out.extend(refresh.map(|info| (REFRESH_PROGRAM, stats(info))));
        }
        out
    }

    /// Whether this node holds the kernel's run-time statistics on (`--bpf-stats`).
    pub fn run_stats_enabled(&self) -> bool {
        self.run_stats_fd.lock().expect("lock poisoned").is_some()
    }

    /// Programs that failed to load or attach, with the error.
    pub fn failed(&self) -> &[(&'static str, String)] {
        &self.failed
    }

    /// Every probe: attached (which form) or unavailable (why, and what is lost).
    pub fn status(&self) -> &[ProbeStatus] {
        &self.status
    }

    /// Smoothed-RTT histograms per algorithm name, summed over CPUs (entries of re-registered
    /// algorithms merged by name), with the entry count; one batched read of `RTT_HIST`.
    pub fn rtt_histograms(&self) -> (Vec<(String, RttHist)>, usize) {
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let stride = size_of::<RttHist>().next_multiple_of(8);
        let mut out: std::collections::BTreeMap<String, RttHist> = Default::default();
        let mut entries = 0;
        let result = sys::map_lookup_batch(
            self.rtt_hist_fd.as_raw_fd(),
            size_of::<u64>(),
            stride * cpus,
            RTT_HIST_MAX_ENTRIES,
            |_, values| {
                entries += 1;
                let per_cpu = (0..cpus).map(|cpu| {
                    // SAFETY: `values` holds `cpus` values of `stride` bytes; RttHist is plain
                    // integers (any bit pattern valid); read unaligned.
                    unsafe {
                        std::ptr::read_unaligned(values[cpu * stride..].as_ptr().cast::<RttHist>())
                    }
                });
                let per_cpu: Vec<RttHist> = per_cpu.collect();
                let name = per_cpu
                    .iter()
                    .map(|h| unpadded(&h.name))
                    .find(|n| !n.is_empty())
                    .unwrap_or("unknown")
                    .to_owned();
                let sum = out.entry(name).or_default();
                for h in &per_cpu {
                    sum.count += h.count;
                    sum.sum_us += h.sum_us;
                    for (a, b) in sum.buckets.iter_mut().zip(h.buckets.iter()) {
                        *a += b;
                    }
                }
            },
        );
        if let Err(e) = result {
            tracing::warn!("reading {RTT_HIST_MAP}: {e}");
        }
        (out.into_iter().collect(), entries)
    }

    pub const fn rtt_hist_capacity() -> u32 {
        RTT_HIST_MAX_ENTRIES
    }

    /// Takes the final records `tcp_destroy_sock` emitted, and ends the tracking of dropped
    /// sockets whose destroy did not come within [`DESTROY_GRACE`] (their entry read, then
    /// removed). Call regularly: the ring buffer holds ~1200 records.
    pub fn take_ended(&self) -> Vec<Ended> {
        let mut out = Vec::new();
        {
            let mut ring = self.final_records.lock().expect("lock poisoned");
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<FinalRecord>() {
                    // SAFETY: the program writes whole `FinalRecord`s (plain integers, any bit
                    // pattern valid); read unaligned from the ring's memory.
                    let record =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FinalRecord>()) };
                    out.push(Ended {
                        record,
                        expired: false,
                    });
                }
            }
        }
        let mut closing = self.closing.lock().expect("lock poisoned");
        for e in &out {
            closing.remove(&e.record.cookie);
        }
        let now = Instant::now();
        let expired: Vec<u64> = closing
            .iter()
            .filter(|&(_, &since)| now.duration_since(since) >= DESTROY_GRACE)
            .map(|(&cookie, _)| cookie)
            .collect();
        if !expired.is_empty() {
            let mut stats = self.stats.lock().expect("lock poisoned");
            for cookie in expired {
                closing.remove(&cookie);
                if let Ok(mut s) = stats.get(&cookie, 0) {
                    s.account_ca_state(monotonic_ns());
                    let _ = stats.remove(&cookie);
                    out.push(Ended {
                        record: FinalRecord {
                            cookie,
                            algorithm: [0; 16],
                            stats: s,
                        },
                        expired: true,
                    });
                }
            }
        }
        out
    }

    /// Sockets the node dropped whose entry still waits for `tcp_destroy_sock`.
    pub fn closing(&self) -> usize {
        self.closing.lock().expect("lock poisoned").len()
    }

    /// The latest state of a socket, if the probe has seen it.
    pub fn stats(&self, cookie: u64) -> Option<SockStats> {
        let stats = self.stats.lock().expect("lock poisoned");
        stats.get(&cookie, 0).ok().filter(SockStats::refreshed)
    }

    /// Every entry of `SOCK_STATS`, in batched reads (`BPF_MAP_LOOKUP_BATCH`, 1,024 entries
    /// per syscall), including entries the probe has not seen yet (`events == 0`).
    pub fn all_stats(&self) -> Vec<(u64, SockStats)> {
        const CHUNK: u32 = 1024;
        let mut out = Vec::new();
        let result = sys::map_lookup_batch(
            self.stats_fd.as_raw_fd(),
            size_of::<u64>(),
            size_of::<SockStats>(),
            CHUNK,
            |key, value| {
                // SAFETY: the slices are one key (u64) and one SockStats as the kernel copied
                // them; both are plain integers (any bit pattern valid); read unaligned.
                let (cookie, stats) = unsafe {
                    (
                        std::ptr::read_unaligned(key.as_ptr().cast::<u64>()),
                        std::ptr::read_unaligned(value.as_ptr().cast::<SockStats>()),
                    )
                };
                out.push((cookie, stats));
            },
        );
        if let Err(e) = result {
            tracing::warn!("reading {SOCK_STATS_MAP}: {e}");
        }
        out
    }

    pub const fn tracked_capacity() -> u32 {
        SOCK_STATS_MAX_ENTRIES
    }

    /// The probes' own counters, summed over CPUs.
    pub fn counters(&self) -> ProbeCounters {
        let mut sum = ProbeCounters::default();
        if let Ok(per_cpu) = self.counters.get(&0, 0) {
            for c in per_cpu.iter() {
                sum.refreshes += c.refreshes;
                sum.update_failed += c.update_failed;
                sum.retransmit_events += c.retransmit_events;
                sum.cong_state_events += c.cong_state_events;
                sum.destroy_events += c.destroy_events;
                sum.final_lost += c.final_lost;
                sum.hist_lost += c.hist_lost;
            }
        }
        sum
    }

    /// `(program name, kernel program id)` of each attached program.
    pub fn programs(&self) -> &[(&'static str, u32)] {
        &self.program_ids
    }
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("programs", &self.program_ids)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SocketObserver for Probes {
    /// Inserts the socket's entry, then marks the socket in socket storage: from then on the
    /// probes update the entry (an unmarked socket costs them one storage lookup).
    fn opened(&self, cookie: u64, fd: BorrowedFd<'_>) {
        let mut stats = self.stats.lock().expect("lock poisoned");
        if let Err(e) = stats.insert(cookie, SockStats::opened_at(monotonic_ns()), 0) {
            tracing::warn!(cookie, "cannot track socket: {e}");
            return;
        }
        drop(stats);
        let marked =
            self.track
                .lock()
                .expect("lock poisoned")
                .insert(&fd, SockTrack::owned(cookie), 0);
        if let Err(e) = marked {
            tracing::warn!(cookie, "cannot mark socket for the probes: {e}");
        }
    }

    /// The entry stays for `tcp_destroy_sock` to emit the final record and remove it (the
    /// kernel frees the socket only after its fd is closed, i.e. after this call); without that
    /// program, or after [`DESTROY_GRACE`] (see [`Probes::take_ended`]), the node removes it.
    fn closed(&self, cookie: u64) {
        let destroy_attached = self
            .program_ids
            .iter()
            .any(|&(name, _)| name == "tcp_destroy_sock");
        if destroy_attached {
            self.closing
                .lock()
                .expect("lock poisoned")
                .insert(cookie, Instant::now());
        } else {
            // Idempotent: the entry may already be gone (LRU eviction).
            let _ = self.stats.lock().expect("lock poisoned").remove(&cookie);
        }
    }
}

/// A second fd of a hash map (for the batched reads aya does not offer).
fn second_fd(map: &aya::maps::Map) -> Result<OwnedFd, aya::maps::MapError> {
    use aya::maps::Map;
    match map {
        Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuHashMap(d) | Map::PerCpuLruHashMap(d) => {
            d.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
                aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error,
                })
            })
        }
        _ => Err(aya::maps::MapError::InvalidMapType { map_type: 0 }),
    }
}

/// An error and its sources on one line (`a: b: c`), for one-sentence user messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
