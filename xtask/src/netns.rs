//! Network-namespace housekeeping shared by `test` (the kernel tests build testbeds) and `run`.
//!
//! Everything xtask and the tests create is named with [`PREFIX`], so a crashed run's leftovers
//! can be found and removed without tracking state between runs.

use std::process::Command;

use crate::exec::{exec, output};

/// The prefix of every namespace and init-namespace link this project creates.
pub const PREFIX: &str = "p2pcc-";

/// Deletes every network namespace named `p2pcc-*`, and every `p2pcc-*` link left in the init
/// namespace (a veth whose peer was never moved out, e.g. after a crash halfway through setup).
///
/// Deleting a namespace destroys the veths inside it and with them their peers elsewhere.
pub fn delete_leftovers() -> anyhow::Result<()> {
    for namespace in namespace_names(&output(Command::new("ip").args(["netns", "list"]))?) {
        if namespace.starts_with(PREFIX) {
            exec(Command::new("ip").args(["netns", "del", namespace]))?;
        }
    }
    for link in link_names(&output(Command::new("ip").args(["-o", "link", "show"]))?) {
        // Re-checked because deleting one end of a veth pair also deletes the other.
        if link.starts_with(PREFIX) && link_exists(link) {
            exec(Command::new("ip").args(["link", "del", link]))?;
        }
    }
    Ok(())
}

/// Whether the init namespace has a link named `name`.
pub fn link_exists(name: &str) -> bool {
    output(Command::new("ip").args(["link", "show", name])).is_ok()
}

/// Namespace names from `ip netns list`, whose lines read `name` or `name (id: 3)`.
fn namespace_names(listing: &str) -> impl Iterator<Item = &str> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
}

/// Link names from `ip -o link show`, whose lines read `7: name@peer: <FLAGS> ...` for a veth
/// and `1: lo: <FLAGS> ...` otherwise.
fn link_names(listing: &str) -> impl Iterator<Item = &str> {
    listing.lines().filter_map(|line| {
        let name = line.split_whitespace().nth(1)?.trim_end_matches(':');
        name.split('@').next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_namespace_listing() {
        let listing = "p2pcc-n2 (id: 2)\np2pcc-r (id: 0)\nother\n";
        assert_eq!(
            namespace_names(listing).collect::<Vec<_>>(),
            ["p2pcc-n2", "p2pcc-r", "other"]
        );
    }

    #[test]
    fn reads_link_listing() {
        let listing = "1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue\n\
                       9: p2pcc-host@if8: <BROADCAST,MULTICAST> mtu 1500 qdisc noop\n";
        assert_eq!(
            link_names(listing).collect::<Vec<_>>(),
            ["lo", "p2pcc-host"]
        );
    }
}
