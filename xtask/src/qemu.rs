//! The second-kernel tier of `cargo xtask test`: Debian 12's Linux 6.1 (the oldest kernel
//! p2p-cc supports) booted under QEMU (TCG: KVM is not usable on these machines), with an
//! initramfs holding the release `p2p-node` and `qemu_guest.sh` as `/init`.
//!
//! `cargo xtask setup` fetches the kernel ([`fetch_kernel`]: `apt-get download` of the newest
//! `linux-image-6.1.0-<N>-cloud-amd64-unsigned`, unpacked into `target/qemu/`), `qemu-system-x86`
//! and `busybox-static`. The guest prints one `P2PCC-QEMU <check> ...` line per check on the
//! serial console (among them CGROUP2: a node in a cgroup v2 child with `memory.max` = 256 MiB
//! reports that limit in /api/node); QEMU's exit status is always 0, so [`judge`] decides from those lines, under
//! a hard host-side timeout.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exec::{exec, output, release_node, workspace_root};

/// The guest's `/init`.
const GUEST_INIT: &str = include_str!("qemu_guest.sh");
/// Prefix of every line the guest's checks print.
const MARKER: &str = "P2PCC-QEMU ";
/// The whole guest run, boot to poweroff (measured: ~2 s boot, ~1 min of checks under TCG on a
/// loaded 2-core machine). QEMU is killed past it.
const GUEST_TIMEOUT: Duration = Duration::from_secs(420);
/// The guest's own watchdog, a minute before [`GUEST_TIMEOUT`]: a guest that hangs still prints
/// its nodes' logs and a failing marker before QEMU is killed. Written into `/init` in place of
/// `@WATCHDOG_SECS@`.
const GUEST_WATCHDOG: Duration = Duration::from_secs(GUEST_TIMEOUT.as_secs() - 60);

/// The guest's `/init` with its watchdog's time filled in.
fn guest_init() -> String {
    GUEST_INIT.replace("@WATCHDOG_SECS@", &GUEST_WATCHDOG.as_secs().to_string())
}
/// Debian package name pattern of the guest kernel.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-cloud-amd64-unsigned";
/// Shared libraries the dynamically linked p2p-node needs (the guest has no other userland).
const GUEST_LIBS: &[&str] = &[
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    "/lib64/ld-linux-x86-64.so.2",
];
/// busybox-static's binary.
const BUSYBOX: &str = "/bin/busybox";

fn qemu_dir() -> PathBuf {
    workspace_root().join("target/qemu")
}

/// The unpacked guest kernel, if `setup` fetched it.
pub fn kernel_image() -> Option<PathBuf> {
    fs::read_dir(qemu_dir())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-6.1."))
        })
        .max()
}

/// `setup` step: the newest Debian 6.1 cloud kernel image, unpacked to `target/qemu/`.
pub fn fetch_kernel() -> anyhow::Result<()> {
    if let Some(image) = kernel_image() {
        println!(
            "[setup] guest kernel for the QEMU tier: present ({})",
            image.display()
        );
        return Ok(());
    }
    println!(
        "[setup] guest kernel for the QEMU tier: downloading Debian's Linux 6.1 (about 27 MB)"
    );
    let search = || {
        output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            &format!("^{KERNEL_PREFIX}[0-9]+{KERNEL_SUFFIX}$"),
        ]))
    };
    let mut found = newest_kernel_package(&search()?);
    if found.is_none() {
        exec(Command::new("apt-get").arg("update"))?;
        found = newest_kernel_package(&search()?);
    }
    let package = found.context("apt-cache knows no linux-image-6.1.0-<N>-cloud-amd64-unsigned")?;
    let dir = qemu_dir();
    let download = dir.join("download");
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    exec(
        Command::new("apt-get")
            .current_dir(&download)
            .args(["download", &package]),
    )?;
    let deb = fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = download.join("root");
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = fs::read_dir(unpacked.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the kernel package has no boot/vmlinuz-*")?;
    let name = image.file_name().expect("found by name").to_owned();
    fs::copy(&image, dir.join(&name)).context("copying the guest kernel")?;
    fs::remove_dir_all(&download).context("removing the unpacked package")?;
    println!("[setup] guest kernel: {}", dir.join(name).display());
    Ok(())
}

/// The package with the highest ABI number `<N>` in `apt-cache search` output.
fn newest_kernel_package(search: &str) -> Option<String> {
    search
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let n = name
                .strip_prefix(KERNEL_PREFIX)?
                .strip_suffix(KERNEL_SUFFIX)?;
            Some((n.parse::<u32>().ok()?, name.to_owned()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Why the tier cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if kernel_image().is_none() {
        return Some("no guest kernel in target/qemu (run `cargo xtask setup` as root)".into());
    }
    for (what, path) in [
        ("qemu-system-x86_64", "/usr/bin/qemu-system-x86_64"),
        ("busybox-static", BUSYBOX),
    ] {
        if !Path::new(path).exists() {
            return Some(format!(
                "{what} is not installed ({path}); run `cargo xtask setup` as root"
            ));
        }
    }
    None
}

/// Builds the release binary and the initramfs, boots the guest and judges its console.
pub fn run() -> anyhow::Result<String> {
    let kernel = kernel_image().context("no guest kernel")?;
    let node = release_node(true)?;
    let initramfs = build_initramfs(&node)?;
    let started = Instant::now();
    let console = boot(&kernel, &initramfs)?;
    // Kept after every run, pass or fail: the guest's console with the nodes' last log lines.
    let saved = qemu_dir().join("console.log");
    fs::write(&saved, &console).with_context(|| format!("writing {}", saved.display()))?;
    let verdict = judge(&console);
    let took = started.elapsed();
    match verdict {
        Ok(summary) => Ok(format!(
            "passed on {summary} ({took:.0?}; console in {})",
            saved.display()
        )),
        Err(why) => {
            println!("[qemu] console:\n{console}");
            bail!("QEMU tier (Linux 6.1) failed: {why}")
        }
    }
}

fn build_initramfs(node: &Path) -> anyhow::Result<PathBuf> {
    let dir = qemu_dir();
    let root = dir.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for sub in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "lib/x86_64-linux-gnu",
        "lib64",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    // Debug info is 90% of the binary; the guest has 768 MB of RAM for the unpacked initramfs.
    exec(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(node)
            .arg(root.join("p2p-node")),
    )?;
    fs::copy(BUSYBOX, root.join("bin/busybox")).context("copying busybox")?;
    for lib in GUEST_LIBS {
        fs::copy(lib, root.join(lib.trim_start_matches('/')))
            .with_context(|| format!("copying {lib}"))?;
    }
    let init = root.join("init");
    fs::write(&init, guest_init())?;
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    let cpio = dir.join("initramfs.cpio");
    // busybox's cpio (no host cpio needed): newc, the format the kernel unpacks.
    exec(Command::new("sh").current_dir(&root).arg("-c").arg(format!(
        "find . | {BUSYBOX} cpio -o -H newc > {}",
        cpio.display()
    )))?;
    Ok(cpio)
}

/// Boots the guest; returns its console (CRs removed). Killed at [`GUEST_TIMEOUT`].
fn boot(kernel: &Path, initramfs: &Path) -> anyhow::Result<String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["--signal=KILL", &GUEST_TIMEOUT.as_secs().to_string()])
        .args([
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "768",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!("$ {}", crate::exec::describe(&cmd));
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let mut console = String::new();
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).replace('\r', "");
        if line.contains(MARKER) {
            println!("[qemu] {}", line.trim());
        }
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait()?;
    // `timeout` exits 137 when it had to kill QEMU; QEMU itself always exits 0.
    if status.code() == Some(137) || status.code() == Some(124) {
        console.push_str(&format!("(killed by the host after {GUEST_TIMEOUT:?})\n"));
    }
    Ok(console)
}

/// Pass or fail from the guest's console: every check must have printed its marker, none may
/// say FAIL, and the guest must have reached the end. Returns the kernel and what bbr-p2p did.
pub fn judge(console: &str) -> Result<String, String> {
    let markers: Vec<&str> = console
        .lines()
        .filter_map(|l| l.find(MARKER).map(|at| l[at + MARKER.len()..].trim()))
        .collect();
    let find = |check: &str| markers.iter().find(|m| m.starts_with(check)).copied();
    if let Some(failed) = markers
        .iter()
        .find(|m| m.split_whitespace().nth(1) == Some("FAIL"))
    {
        return Err(failed.to_string());
    }
    let kernel = find("KERNEL ").ok_or("the guest printed no KERNEL line (did it boot?)")?;
    for check in ["PROBES ok", "FEATURES ok", "SWITCH ok", "CGROUP2 ok"] {
        if find(check).is_none() {
            return Err(format!("no `{check}` marker"));
        }
    }
    let bbr = find("BBR ok")
        .or_else(|| find("BBR unavailable: ").filter(|m| m.len() > "BBR unavailable: ".len()))
        .ok_or("no `BBR ok` or `BBR unavailable: <reason>` marker")?;
    if find("DONE").is_none() {
        return Err("the guest did not finish (no DONE marker): timeout or crash".into());
    }
    if bbr.starts_with("BBR ok") && find("STOP ok").is_none() {
        return Err("bbr-p2p ran, but no `STOP ok` marker (its cleanup on SIGTERM)".into());
    }
    let bbr = match bbr.strip_prefix("BBR ok") {
        Some(_) => "bbr-p2p carried a transfer, unregistered on SIGTERM".to_owned(),
        None => bbr.to_owned(),
    };
    Ok(format!("{} ({bbr})", kernel.trim_start_matches("KERNEL ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = "[    2.1] random kernel line\r\n\
        P2PCC-QEMU KERNEL 6.1.0-57-cloud-amd64\r\n\
        P2PCC-QEMU AVAILABLE reno cubic\n\
        P2PCC-QEMU PROBES ok cwnd,srtt(ms)=10,0.05\n\
        P2PCC-QEMU FEATURES ok tcp_retransmit_skb=tcp_retransmit_skb_2args; unavailable: struct_ops_link (x);\n\
        P2PCC-QEMU SWITCH ok reno,cubic\n\
        P2PCC-QEMU CC-LIST {}\n\
        P2PCC-QEMU BBR unavailable: bbr-p2p is unavailable on this kernel (Linux 6.1.0-57-cloud-amd64): x\n\
        P2PCC-QEMU CGROUP2 ok memory.max=268435456; cgroup: 0::/p2pcc-mem\n\
        P2PCC-QEMU DONE\n";

    #[test]
    fn passes_only_with_every_marker() {
        let summary = judge(PASS).unwrap();
        assert!(
            summary.starts_with("6.1.0-57-cloud-amd64 (BBR unavailable: bbr-p2p is"),
            "{summary}"
        );
        for gone in [
            "PROBES ok",
            "FEATURES ok",
            "SWITCH ok",
            "BBR unavailable",
            "CGROUP2 ok",
            "DONE",
            "KERNEL",
        ] {
            let cut: String = PASS
                .lines()
                .filter(|l| !l.contains(gone))
                .map(|l| format!("{l}\n"))
                .collect();
            assert!(judge(&cut).is_err(), "passed without {gone}");
        }
    }

    #[test]
    fn a_fail_marker_or_an_empty_reason_fails() {
        let failed = PASS.replace("SWITCH ok reno,cubic", "SWITCH FAIL cc set said no");
        assert_eq!(judge(&failed).unwrap_err(), "SWITCH FAIL cc set said no");
        let no_reason = PASS.replace(
            "BBR unavailable: bbr-p2p is unavailable on this kernel (Linux 6.1.0-57-cloud-amd64): x",
            "BBR unavailable: ",
        );
        assert!(judge(&no_reason).is_err());
        assert!(judge("").is_err());
    }

    #[test]
    fn the_guest_watchdog_fires_before_the_host_kills_the_guest() {
        let init = guest_init();
        assert!(!init.contains("@WATCHDOG_SECS@"));
        let secs = GUEST_WATCHDOG.as_secs();
        assert!(init.contains(&format!("( sleep {secs}; dump_logs;")));
        assert!(init.contains(&format!("the guest ran {secs} s without finishing")));
        assert!(GUEST_WATCHDOG < GUEST_TIMEOUT);
    }

    #[test]
    fn the_nodes_log_lines_never_decide_and_the_watchdog_fails() {
        let logged = PASS.replace(
            "P2PCC-QEMU DONE",
            "guest a.log: ERROR swarm: FAIL to dial\nguest b.log: DONE\nP2PCC-QEMU DONE",
        );
        assert!(judge(&logged).is_ok());
        let hung = PASS.replace(
            "P2PCC-QEMU DONE",
            "guest a.log: last line\nP2PCC-QEMU WATCHDOG FAIL the guest ran 360 s without finishing",
        );
        assert_eq!(
            judge(&hung).unwrap_err(),
            "WATCHDOG FAIL the guest ran 360 s without finishing"
        );
    }

    #[test]
    fn a_bbr_run_needs_its_stop_marker() {
        let ran = PASS.replace(
            "BBR unavailable: bbr-p2p is unavailable on this kernel (Linux 6.1.0-57-cloud-amd64): x",
            "BBR ok cwnd,srtt(ms)=40,1.2",
        );
        assert!(judge(&ran).unwrap_err().contains("no `STOP ok` marker"));
        let stopped = ran.replace("DONE", "STOP ok bbr_p2p unregistered\nP2PCC-QEMU DONE");
        assert_eq!(
            judge(&stopped).unwrap(),
            "6.1.0-57-cloud-amd64 (bbr-p2p carried a transfer, unregistered on SIGTERM)"
        );
    }

    #[test]
    fn picks_the_newest_kernel_package() {
        let search = "linux-image-6.1.0-47-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
            linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
            linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n";
        assert_eq!(
            newest_kernel_package(search).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        assert_eq!(newest_kernel_package(""), None);
    }
}
