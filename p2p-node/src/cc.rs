//! Choosing the congestion control: validation against what the kernel offers.

use anyhow::{Context as _, bail};

use crate::sockets::SocketTable;

const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
const DEFAULT: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Algorithms the kernel offers now (built-in ones and registered struct_ops ones).
pub fn available() -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(AVAILABLE).with_context(|| format!("reading {AVAILABLE}"))?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// Checks that `name` is available; the error lists the ones that are.
pub fn validate(name: &str) -> anyhow::Result<()> {
    let available = available()?;
    if available.iter().any(|a| a == name) {
        Ok(())
    } else {
        bail!(
            "unknown or unavailable congestion control {name:?}; available: {}",
            available.join(", ")
        )
    }
}

/// The algorithm new sockets of this node get.
pub fn current() -> String {
    SocketTable::global().algorithm().unwrap_or_else(|| {
        std::fs::read_to_string(DEFAULT).map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
    })
}
