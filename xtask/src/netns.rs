//! Network-namespace housekeeping shared by `test` (the kernel tests build testbeds) and `run`.
//!
//! Everything xtask and the tests create is named with [`PREFIX`], so a crashed run's leftovers
//! can be found and removed without tracking state between runs.

use std::{
    io,
    net::SocketAddr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::exec::{describe, exec, output};

/// The prefix of every namespace and init-namespace link this project creates.
pub const PREFIX: &str = "p2pcc-";

/// Deletes every network namespace named `p2pcc-*`, and every `p2pcc-*` link left in the init
/// namespace (a veth whose peer was never moved out, e.g. after a crash halfway through setup).
///
/// Deleting a namespace destroys the veths inside it and with them their peers elsewhere.
///
/// Processes still running in such a namespace (a node of a run whose xtask was killed before
/// its nodes got their parent-death signal) are killed first: they would keep the namespace
/// alive, and a node keeps its congestion control registered.
pub fn delete_leftovers() -> anyhow::Result<()> {
    for namespace in namespace_names(&output(Command::new("ip").args(["netns", "list"]))?) {
        if namespace.starts_with(PREFIX) {
            kill_processes_in(namespace)?;
            delete(namespace)?;
        }
    }
    for link in link_names(&output(Command::new("ip").args(["-o", "link", "show"]))?) {
        if link.starts_with(PREFIX) {
            delete_link(link)?;
        }
    }
    Ok(())
}

/// Deletes network namespace `namespace`, aborting its TCP sockets first (`ss -K`, a RST to
/// each). A connection closed while its path is being torn down (a delay line stopped, a
/// router namespace gone) cannot deliver its FIN and lingers as an orphan for minutes,
/// retransmitting into nothing; it keeps its congestion control referenced (a bbr_p2p
/// struct_ops map outlived its node by ~2 minutes that way) and the namespace alive.
pub fn delete(namespace: &str) -> anyhow::Result<()> {
    abort_tcp_sockets(namespace);
    exec(Command::new("ip").args(["netns", "del", namespace]))
}

/// `ss -K` over every TCP socket of `namespace`, listeners and orphans included. Best effort:
/// a kernel without `CONFIG_INET_DIAG_DESTROY` refuses, and the namespace is deleted anyway.
fn abort_tcp_sockets(namespace: &str) {
    let aborted = Command::new("ip")
        .args(["netns", "exec", namespace, "ss", "-K", "-t", "-a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(aborted, Ok(status) if status.success()) {
        eprintln!("[netns] {namespace}: could not abort its TCP sockets (ss -K); deleting anyway");
    }
}

/// Deletes `link` from the init namespace unless it is gone already: deleting one end of a veth
/// pair deletes the other, and a deleted namespace takes its veths' peers with it a moment
/// later (the kernel dismantles it asynchronously), so a link listed or seen just before may
/// vanish before `ip link del` reaches it. An error only when the link is still there after.
pub fn delete_link(link: &str) -> anyhow::Result<()> {
    if !link_exists(link) {
        return Ok(());
    }
    let mut cmd = Command::new("ip");
    cmd.args(["link", "del", link]);
    println!("$ {}", describe(&cmd));
    match output(&mut cmd) {
        Err(_) if !link_exists(link) => Ok(()),
        result => result.map(drop),
    }
}

/// SIGKILL to every process in `namespace` (`ip netns pids`), then waits up to a second for them
/// to be gone.
fn kill_processes_in(namespace: &str) -> anyhow::Result<()> {
    let pids = || -> anyhow::Result<Vec<libc::pid_t>> {
        let listing = output(Command::new("ip").args(["netns", "pids", namespace]))?;
        Ok(listing
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect())
    };
    let leftovers = pids()?;
    if leftovers.is_empty() {
        return Ok(());
    }
    println!("[netns] killing leftover processes in {namespace}: {leftovers:?}");
    for pid in leftovers {
        // SAFETY: kill has no memory-safety preconditions; the pid was just listed as living in
        // one of this project's namespaces.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !pids()?.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Round trips from inside `namespace` to `target`, a TCP port nothing listens on, as TCP sees
/// them (no `ping` binary needed): the time from SYN to the RST, `tries` times, milliseconds.
pub fn tcp_round_trips(
    namespace: &str,
    target: SocketAddr,
    tries: usize,
) -> anyhow::Result<Vec<f64>> {
    let path = format!("/run/netns/{namespace}");
    let probe = thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        // setns changes only this thread's namespace.
        crate::delay_line::enter_namespace(&path)?;
        // Woken on time when the answer arrives, as the delay line is: on a busy machine a
        // normal thread's wake-up latency would count as path delay.
        crate::delay_line::realtime_priority();
        let mut rtts = Vec::with_capacity(tries);
        for _ in 0..tries {
            let start = Instant::now();
            match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                    rtts.push(start.elapsed().as_secs_f64() * 1e3);
                }
                Err(err) => bail!("connecting to {target} (expected a refusal): {err}"),
                Ok(_) => bail!("{target} accepted a connection; expected a closed port"),
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(rtts)
    });
    probe
        .join()
        .map_err(|_| anyhow::anyhow!("the RTT probe thread panicked"))?
}

/// One GET of `url` by curl from inside `namespace` (10 s at most); the body.
pub fn http_get(namespace: &str, url: &str) -> anyhow::Result<String> {
    output(Command::new("ip").args([
        "netns",
        "exec",
        namespace,
        "curl",
        "-sf",
        "--max-time",
        "10",
        url,
    ]))
}

/// Whether the init namespace has a link named `name`.
pub fn link_exists(name: &str) -> bool {
    output(Command::new("ip").args(["link", "show", name])).is_ok()
}

/// A rule that drops packets at random, first in `chain` of a namespace's filter table:
/// `iptables-legacy -I <chain> 1 <matches> -m statistic --mode random --probability <p> -j DROP`
/// (the xtables `statistic` match is built in; netem's loss is not, see PLATFORM.md). First, so
/// that it sees packets before a delay line's NFQUEUE rule takes them. The one place xtask spells
/// the rule; p2p-node's kernel tests spell the same text in `tests/common` (`Routed::random_loss`).
///
/// Deleted when dropped, or by [`RandomLoss::remove`], which reports a failure; nothing to delete
/// once its namespace is gone (the rule went with it).
pub struct RandomLoss {
    namespace: String,
    /// The chain, then the rule's match and target arguments, as `-I` and `-D` both take them.
    rule: Vec<String>,
}

impl RandomLoss {
    /// Inserts the rule dropping the packets that `matches` selects (e.g. `["-i", "veth0"]`)
    /// with `probability` (0 to 1).
    pub fn insert(
        namespace: &str,
        chain: &str,
        matches: &[&str],
        probability: f64,
    ) -> anyhow::Result<Self> {
        if !(0.0..=1.0).contains(&probability) {
            bail!("a loss probability is between 0 and 1, not {probability}");
        }
        let mut rule = vec![chain.to_owned()];
        rule.extend(matches.iter().map(|word| (*word).to_owned()));
        rule.extend(["-m", "statistic", "--mode", "random", "--probability"].map(str::to_owned));
        rule.push(probability.to_string());
        rule.extend(["-j", "DROP"].map(str::to_owned));
        let loss = Self {
            namespace: namespace.to_owned(),
            rule,
        };
        loss.iptables("-I", Some("1"))?;
        Ok(loss)
    }

    /// Deletes the rule now.
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.delete()
    }

    fn delete(&mut self) -> anyhow::Result<()> {
        if self.rule.is_empty() {
            return Ok(());
        }
        let deleted = if Path::new("/run/netns").join(&self.namespace).exists() {
            self.iptables("-D", None)
        } else {
            Ok(())
        };
        self.rule.clear();
        deleted
    }

    fn iptables(&self, action: &str, position: Option<&str>) -> anyhow::Result<()> {
        let (chain, spec) = self.rule.split_first().expect("a rule has a chain");
        exec(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.namespace,
                    "iptables-legacy",
                    action,
                    chain,
                ])
                .args(position)
                .args(spec),
        )
    }
}

impl Drop for RandomLoss {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            eprintln!("[netns] cleanup: {err:#}");
        }
    }
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
