//! Choosing the congestion control: validation against what the kernel offers, and providing
//! bbr-p2p (registering it, or using the registration of another node on this host).

use std::sync::{Arc, RwLock};

use anyhow::{Context as _, bail};

use crate::{
    ebpf::{
        self, bbr,
        bbr::BbrP2p,
        features::{self, Feature},
    },
    sockets::SocketTable,
};

/// The bbr-p2p this node uses, replaceable when it has to register it anew.
pub type BbrSlot = Arc<RwLock<Option<Arc<BbrP2p>>>>;

const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
const DEFAULT: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Algorithms a node can use now, by the names users give: the kernel's (built-in and
/// registered struct_ops ones) and bbr-p2p, which the node registers when needed, if this
/// kernel can run it ([`unavailable`]).
pub fn available() -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(AVAILABLE).with_context(|| format!("reading {AVAILABLE}"))?;
    let mut names: Vec<String> = text
        .split_whitespace()
        .map(|n| bbr::user_name(n).to_owned())
        .collect();
    if !names.iter().any(|n| n == bbr::NAME) && bbr_unavailable().is_none() {
        names.insert(0, bbr::NAME.to_owned());
    }
    Ok(names)
}

/// Algorithms p2p-node provides that this kernel cannot run, each with the one sentence saying
/// why (the sentence `--cc` and `cc set` fail with).
pub fn unavailable() -> Vec<(&'static str, String)> {
    bbr_unavailable()
        .map(|why| (bbr::NAME, why))
        .into_iter()
        .collect()
}

/// Every algorithm as a feature (`/api/node`, `p2pcc_kernel_feature_available`): the ones the
/// node can set now, and those it provides that this kernel cannot run, with the reason.
pub fn features() -> Vec<Feature> {
    let mut out: Vec<Feature> = available()
        .unwrap_or_default()
        .into_iter()
        .map(|name| Feature::available(features::Kind::Algorithm, name, None))
        .collect();
    out.extend(unavailable().into_iter().map(|(name, why)| {
        Feature::unavailable(
            features::Kind::Algorithm,
            name,
            why,
            "this congestion control; the kernel's own algorithms and switching among them still work",
        )
    }));
    out
}

/// Why this kernel cannot run bbr-p2p, or `None` when it can. Probed, not assumed from a
/// version: the first call loads its programs against the running kernel (and drops them);
/// the answer is kept for the life of the process.
fn bbr_unavailable() -> Option<String> {
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let registered = std::fs::read_to_string(AVAILABLE)
                .unwrap_or_default()
                .split_whitespace()
                .any(|n| n == bbr::KERNEL_NAME);
            if registered {
                return None;
            }
            let why = match ebpf::preflight() {
                Err(e) => ebpf::error_chain(&e),
                Ok(btf) => match ebpf::struct_ops::StructOps::load(ebpf::objects::BBR_P2P, &btf) {
                    Ok(_) => return None,
                    Err(e) => ebpf::error_chain(&e),
                },
            };
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |r| r.trim().to_owned());
            Some(format!(
                "{} is unavailable on this kernel (Linux {release}): {why}",
                bbr::NAME
            ))
        })
        .clone()
}

/// Checks that `name` is an algorithm the node can use; the error lists the ones it can.
pub fn validate(name: &str) -> anyhow::Result<()> {
    // Only a request for bbr-p2p pays for probing it.
    if bbr::kernel_name(name) == bbr::KERNEL_NAME {
        return match bbr_unavailable() {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        };
    }
    let kernel = std::fs::read_to_string(AVAILABLE).unwrap_or_default();
    if kernel.split_whitespace().any(|n| n == name) {
        return Ok(());
    }
    let available = available()?;
    if available
        .iter()
        .any(|a| a == name || bbr::kernel_name(a) == name)
    {
        Ok(())
    } else {
        bail!(
            "unknown or unavailable congestion control {name:?}; available: {}",
            available.join(", ")
        )
    }
}

/// The algorithm new sockets of this node get, by its user-facing name.
pub fn current() -> String {
    let kernel = SocketTable::global().algorithm().unwrap_or_else(|| {
        std::fs::read_to_string(DEFAULT).map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
    });
    bbr::user_name(&kernel).to_owned()
}

/// Makes bbr-p2p available: uses the registration another node on this host holds, or
/// registers it (then this node owns it until it exits). Another node may be registering or
/// unregistering at the same moment, so a lost race is retried a few times.
pub fn provide_bbr() -> anyhow::Result<BbrP2p> {
    const ATTEMPTS: u32 = 5;
    const BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
    // On kernels before 6.4 a crashed node leaves its registration behind: clear it first.
    if let Ok(btf) = ebpf::preflight() {
        ebpf::struct_ops::clear_orphans(&btf, "tcp_congestion_ops", bbr::KERNEL_NAME);
    }
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let registered = std::fs::read_to_string(AVAILABLE)
            .unwrap_or_default()
            .split_whitespace()
            .any(|n| n == bbr::KERNEL_NAME);
        if registered {
            if let Some(existing) = BbrP2p::attach_existing()? {
                return Ok(existing);
            }
        } else {
            let btf = ebpf::preflight().context("bbr-p2p needs the eBPF struct_ops support")?;
            match BbrP2p::register(&btf) {
                Ok(handle) => return Ok(handle),
                Err(e @ ebpf::struct_ops::StructOpsError::AlreadyRegistered { .. }) => {
                    last_error = Some(e.into())
                }
                Err(e) => return Err(anyhow::Error::new(e).context("registering bbr-p2p")),
            }
        }
        // Registered but its maps are gone (its owner is exiting), or registered by someone
        // else a moment ago: look again.
        std::thread::sleep(BACKOFF);
    }
    Err(last_error.unwrap_or_else(|| {
        anyhow::anyhow!("bbr-p2p is registered on this host but its maps cannot be found")
    }))
}

/// Resolves `--cc` (default: bbr-p2p when the kernel can run it), provides bbr-p2p when it is
/// the choice, and sets the algorithm for the node's sockets. Returns the slot telemetry
/// reads bbr-p2p's maps through.
pub fn configure(requested: Option<&str>) -> anyhow::Result<BbrSlot> {
    let slot: BbrSlot = Arc::default();
    let wants_bbr = requested.is_none_or(|r| bbr::kernel_name(r) == bbr::KERNEL_NAME);
    if let Some(name) = requested {
        validate(name)?;
    }
    if wants_bbr {
        match provide_bbr() {
            Ok(handle) => {
                if handle.owned() {
                    eprintln!(
                        "registered congestion control {} (kernel name {})",
                        bbr::NAME,
                        bbr::KERNEL_NAME
                    );
                }
                *slot.write().expect("lock poisoned") = Some(Arc::new(handle));
                SocketTable::global().set_algorithm(Some(bbr::KERNEL_NAME.to_owned()));
            }
            Err(e) if requested.is_some() => return Err(e),
            Err(e) => {
                eprintln!(
                    "warning: bbr-p2p is unavailable ({e:#}); the node uses the kernel's default congestion control"
                );
            }
        }
    } else if let Some(name) = requested {
        SocketTable::global().set_algorithm(Some(bbr::kernel_name(name).to_owned()));
    }
    // If the node that registered bbr-p2p exits, register it again for the next socket.
    let reprovide_slot = slot.clone();
    SocketTable::global().set_reprovide(Box::new(move |name| {
        if name != bbr::KERNEL_NAME {
            return false;
        }
        match provide_bbr() {
            Ok(handle) => {
                tracing::warn!("bbr-p2p was unregistered (its owner exited); registered it again");
                *reprovide_slot.write().expect("lock poisoned") = Some(Arc::new(handle));
                true
            }
            Err(e) => {
                tracing::warn!("bbr-p2p is gone and cannot be registered again: {e:#}");
                false
            }
        }
    }));
    Ok(slot)
}

/// The outcome of switching the node's algorithm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwitchReport {
    /// The node's algorithm now (for new and existing connections).
    pub algorithm: String,
    /// Established sockets moved to it.
    pub switched: usize,
    /// Sockets that could not be moved, with the reason.
    pub failed: Vec<SwitchFailure>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SwitchFailure {
    pub cookie: u64,
    pub error: String,
}

/// Switches the node to `name`: new sockets get it, and every socket the node holds is moved
/// with `setsockopt(TCP_CONGESTION)` on its own fd (never another process's socket). Unknown
/// names change nothing.
/// Successful switches of the node's algorithm since it started (`p2pcc_cc_switches_total`:
/// the dashboards annotate them).
static SWITCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn switches() -> u64 {
    SWITCHES.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn switch(name: &str, slot: &BbrSlot) -> anyhow::Result<SwitchReport> {
    validate(name)?;
    let kernel = bbr::kernel_name(name).to_owned();
    if kernel == bbr::KERNEL_NAME {
        let usable = slot.read().expect("lock poisoned").is_some()
            && std::fs::read_to_string(AVAILABLE)
                .unwrap_or_default()
                .split_whitespace()
                .any(|n| n == kernel);
        if !usable {
            let handle = provide_bbr()?;
            *slot.write().expect("lock poisoned") = Some(Arc::new(handle));
        }
    }
    let table = SocketTable::global();
    table.set_algorithm(Some(kernel.clone()));
    SWITCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let results = table.switch_all(&kernel);
    let mut report = SwitchReport {
        algorithm: name.to_owned(),
        switched: 0,
        failed: Vec::new(),
    };
    for (cookie, result) in results {
        match result {
            Ok(()) => report.switched += 1,
            Err(e) => report.failed.push(SwitchFailure {
                cookie,
                error: e.to_string(),
            }),
        }
    }
    tracing::info!(
        algorithm = name,
        switched = report.switched,
        failed = report.failed.len(),
        "congestion control switched"
    );
    Ok(report)
}
