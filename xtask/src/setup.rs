//! `cargo xtask setup`: installs what building and testing need, and does nothing when it is all
//! there (`test` and `run` call it first, so the no-op path must stay fast: only queries).

use std::{env, fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::exec::{exec, is_root, output};

/// Debian packages the project needs:
/// - `llvm-22-dev`, `libpolly-22-dev`, `libzstd-dev`, `zlib1g-dev`: bpf-linker links against
///   LLVM 22, the same major as rustc's LLVM, so the bitcode it reads is one it understands;
/// - `iproute2` (ip, tc, ss), `iptables`, `procps` (sysctl): the testbed (namespaces, veth,
///   tbf, forwarding, random loss and the NFQUEUE delay line);
/// - `bpftool`: inspecting loaded programs and their run time (`bpf_stats_enabled`);
/// - `iperf3`: reference traffic with a chosen congestion control (`-C`);
/// - `prometheus`: provides `promtool`, which checks the exported metrics text;
/// - `chromium`, `chromium-driver`: the testbed test drives the live page headless (WebDriver).
/// - `qemu-system-x86`, `busybox-static`, `binutils` (objcopy): the QEMU tier, which boots
///   Debian's Linux 6.1 (fetched by [`crate::qemu::fetch_kernel`]) with a busybox initramfs;
/// - `systemd` (`systemd-analyze verify` of deploy/p2p-node.service), `util-linux` (`setpriv`:
///   the security tests run the CLI as an unprivileged user).
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "procps",
    "bpftool",
    "iperf3",
    "iptables",
    "prometheus",
    "chromium",
    "chromium-driver",
    "qemu-system-x86",
    "busybox-static",
    "binutils",
    "systemd",
    "util-linux",
];

/// The oldest bpf-linker that works with LLVM 22 and the nightly's bitcode.
const BPF_LINKER_MIN: (u32, u32) = (0, 13);

/// Where Debian's LLVM 22 keeps `llvm-config`; bpf-linker's build finds LLVM through it.
const LLVM_22_BIN: &str = "/usr/lib/llvm-22/bin";

/// Runs every step and prints the elapsed time.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    nightly_rust_src()?;
    debian_packages()?;
    bpf_linker()?;
    web_assets()?;
    js_interop_peer()?;
    crate::qemu::fetch_kernel()?;
    mount_if_missing("bpffs", "bpf", "/sys/fs/bpf")?;
    mount_if_missing("tracefs", "tracefs", "/sys/kernel/tracing")?;
    println!("[setup] done in {:.2?}", started.elapsed());
    Ok(())
}

/// The eBPF crate builds with the nightly and `-Z build-std=core`, which needs the std sources.
fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    match installed {
        Ok(components) if components.lines().any(|line| line.trim() == "rust-src") => {
            println!("[setup] rust-src for nightly: present");
        }
        Ok(_) => {
            println!("[setup] rust-src for nightly: installing");
            exec(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
        // `rustup component list` fails when the toolchain itself is not installed.
        Err(_) => {
            println!("[setup] nightly toolchain: installing (with rust-src)");
            exec(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "-c",
                "rust-src",
            ]))?;
        }
    }
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| !dpkg_installed(package))
        .collect();
    if missing.is_empty() {
        println!(
            "[setup] Debian packages ({}): present",
            DEBIAN_PACKAGES.len()
        );
        return Ok(());
    }
    let missing_list = missing.join(" ");
    println!("[setup] Debian packages {missing_list}: installing");

    let has_apt = Command::new("apt-get").arg("--version").output().is_ok();
    if !is_root() || !has_apt {
        bail!(
            "missing Debian packages: {missing_list}; install them as root with:\n  \
             apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends {missing_list}"
        );
    }
    // The update is required, not a courtesy: llvm-22-dev is only visible after it.
    exec(Command::new("apt-get").arg("update"))?;
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Whether dpkg reports `package` as fully installed (a removed package keeps a status entry
/// like `deinstall ok config-files`, so the whole status string is compared).
fn dpkg_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.trim() == "install ok installed")
}

fn bpf_linker() -> anyhow::Result<()> {
    let found = bpf_linker_candidates()
        .into_iter()
        .find_map(|program| bpf_linker_version(&program).map(|version| (program, version)));
    match found {
        Some((program, version)) if version >= BPF_LINKER_MIN => {
            println!(
                "[setup] bpf-linker: present ({program} {}.{})",
                version.0, version.1
            );
            return Ok(());
        }
        Some((program, version)) => {
            println!(
                "[setup] bpf-linker: {program} is {}.{}, too old: installing",
                version.0, version.1
            );
        }
        None => println!("[setup] bpf-linker: installing (about 3 minutes)"),
    }
    // LLVM 22's bin first on PATH: otherwise the build finds Debian's default LLVM 14 through
    // `llvm-config` and fails to link `-lLLVM`. `--force` replaces a binary that exists but
    // does not run or is too old (cargo would otherwise call it "already installed").
    let path = match env::var_os("PATH") {
        Some(path) => format!("{LLVM_22_BIN}:{}", path.to_string_lossy()),
        None => LLVM_22_BIN.to_owned(),
    };
    exec(
        Command::new("cargo")
            .env("PATH", path)
            .args(["install", "bpf-linker", "--version", "^0.13", "--force"])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
}

/// `bpf-linker` from PATH, then from cargo's bin directory (which may not be on PATH for root).
fn bpf_linker_candidates() -> Vec<String> {
    let mut candidates = vec!["bpf-linker".to_owned()];
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(cargo_home) = cargo_home {
        candidates.push(
            cargo_home
                .join("bin/bpf-linker")
                .to_string_lossy()
                .into_owned(),
        );
    }
    candidates
}

/// The (major, minor) version `program --version` reports, or `None` when it does not run.
fn bpf_linker_version(program: &str) -> Option<(u32, u32)> {
    let text = output(Command::new(program).arg("--version")).ok()?;
    parse_version(&text)
}

/// Parses `bpf-linker 0.13.0` into `(0, 13)`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.split_whitespace().nth(1)?;
    let mut numbers = version.split('.');
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

/// The uPlot version `web/package-lock.json` pins (checked so a stale install is replaced).
const UPLOT_VERSION: &str = "1.6.32";

/// uPlot for the live pages: `npm ci` in `web/` (exactly what `web/package-lock.json` pins),
/// unless that version is installed. p2p-node's build.rs embeds it.
fn web_assets() -> anyhow::Result<()> {
    let web = crate::exec::workspace_root().join("web");
    let installed = fs::read_to_string(web.join("node_modules/uplot/package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|package| package["version"].as_str().map(str::to_owned));
    if installed.as_deref() == Some(UPLOT_VERSION) {
        println!("[setup] uPlot {UPLOT_VERSION} (web/node_modules): present");
        return Ok(());
    }
    println!("[setup] uPlot {UPLOT_VERSION} (web/node_modules): installing with npm ci");
    if Command::new("npm").arg("--version").output().is_err() {
        bail!(
            "npm is missing: install Node.js and npm (Debian: apt-get install -y npm), then re-run"
        );
    }
    exec(
        Command::new("npm")
            .current_dir(&web)
            .args(["ci", "--no-audit", "--no-fund"]),
    )
}

/// The oldest Node.js js-libp2p 3 runs on here (with `interop/js/polyfill.mjs`; Debian 12's
/// nodejs is 18, which also lacks `AbortSignal.any`).
const NODE_MIN_MAJOR: u32 = 20;

/// The js-libp2p peer of the interoperability test (`p2p-node/tests/interop.rs`): `npm ci` in
/// `interop/js/` unless every package its lockfile pins is installed at the pinned version.
/// Without Node.js ≥ 20 it says so and goes on (only that test needs it, and it fails under CI
/// without it), except under CI, where setup fails.
fn js_interop_peer() -> anyhow::Result<()> {
    let node = output(Command::new("node").arg("--version")).ok();
    let major = node.as_deref().and_then(node_major);
    if major.is_none_or(|major| major < NODE_MIN_MAJOR) {
        let found = node.as_deref().map_or("none", str::trim);
        let problem = format!(
            "the js-libp2p interop test needs Node.js >= {NODE_MIN_MAJOR} (found: {found}; \
             Debian 12's nodejs is 18, NodeSource has 20+)"
        );
        if env::var_os("CI").is_some() {
            bail!("{problem}");
        }
        println!("[setup] js-libp2p interop peer: skipped: {problem}");
        return Ok(());
    }
    let dir = crate::exec::workspace_root().join("interop/js");
    let lock = fs::read_to_string(dir.join("package-lock.json"))
        .context("reading interop/js/package-lock.json")?;
    let lock: serde_json::Value =
        serde_json::from_str(&lock).context("parsing interop/js/package-lock.json")?;
    let pinned = pinned_packages(&lock);
    let stale = pinned
        .iter()
        .filter(|(path, version)| installed_version(&dir.join(path)).as_deref() != Some(version))
        .count();
    if stale == 0 {
        println!(
            "[setup] js-libp2p interop peer (interop/js/node_modules, {} packages): present",
            pinned.len()
        );
        return Ok(());
    }
    println!(
        "[setup] js-libp2p interop peer (interop/js/node_modules): {stale} of {} packages \
         missing or at another version: installing with npm ci",
        pinned.len()
    );
    if Command::new("npm").arg("--version").output().is_err() {
        bail!(
            "npm is missing: install Node.js and npm (Debian: apt-get install -y npm), then re-run"
        );
    }
    exec(
        Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]),
    )
}

/// `(node_modules/… path, version)` of every package a lockfile (v2 or v3) pins.
fn pinned_packages(lock: &serde_json::Value) -> Vec<(String, String)> {
    let Some(packages) = lock["packages"].as_object() else {
        return Vec::new();
    };
    packages
        .iter()
        .filter(|(path, _)| path.starts_with("node_modules/"))
        .filter_map(|(path, entry)| Some((path.clone(), entry["version"].as_str()?.to_owned())))
        .collect()
}

/// Parses `v20.20.2` (`node --version`) into 20.
fn node_major(version: &str) -> Option<u32> {
    version
        .trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The version in `package_dir/package.json`, if it is there.
fn installed_version(package_dir: &std::path::Path) -> Option<String> {
    let text = fs::read_to_string(package_dir.join("package.json")).ok()?;
    let package: serde_json::Value = serde_json::from_str(&text).ok()?;
    package["version"].as_str().map(str::to_owned)
}

/// Mounts `fstype` at `mount_point` unless it is already mounted there: aya pins maps in bpffs,
/// and tracepoint programs look up their ids in tracefs.
fn mount_if_missing(name: &str, fstype: &str, mount_point: &str) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if is_mounted(&mounts, fstype, mount_point) {
        println!("[setup] {name} at {mount_point}: mounted");
        return Ok(());
    }
    if !is_root() {
        println!("[setup] {name} at {mount_point}: not mounted, needs root (skipped)");
        return Ok(());
    }
    println!("[setup] {name} at {mount_point}: mounting");
    exec(Command::new("mount").args(["-t", fstype, fstype, mount_point]))
}

/// Whether a `/proc/mounts` line mounts `fstype` at `mount_point` (fields: source, target, type).
fn is_mounted(mounts: &str, fstype: &str, mount_point: &str) -> bool {
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&mount_point) && fields.get(2) == Some(&fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpf_linker_versions() {
        assert_eq!(parse_version("bpf-linker 0.13.0\n"), Some((0, 13)));
        assert_eq!(parse_version("bpf-linker 0.9.14"), Some((0, 9)));
        assert_eq!(parse_version("bpf-linker"), None);
        assert_eq!(parse_version("bpf-linker x.y"), None);
        assert!((0, 9) < BPF_LINKER_MIN && (1, 0) >= BPF_LINKER_MIN);
    }

    #[test]
    fn parses_node_versions() {
        assert_eq!(node_major("v20.20.2\n"), Some(20));
        assert_eq!(node_major("v18.20.4"), Some(18));
        assert_eq!(node_major("20.1.0"), None);
        assert_eq!(node_major(""), None);
    }

    #[test]
    fn lists_the_packages_a_lockfile_pins() {
        let lock = serde_json::json!({
            "lockfileVersion": 3,
            "packages": {
                "": { "name": "root", "dependencies": { "a": "1.0.0" } },
                "node_modules/a": { "version": "1.0.0" },
                "node_modules/@s/b": { "version": "2.1.0" },
                "node_modules/a/node_modules/c": { "version": "0.3.0" },
                "node_modules/no-version": {}
            }
        });
        let mut pinned = pinned_packages(&lock);
        pinned.sort();
        let want = [
            ("node_modules/@s/b", "2.1.0"),
            ("node_modules/a", "1.0.0"),
            ("node_modules/a/node_modules/c", "0.3.0"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, v)| ((*p).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(pinned, want);
        assert!(pinned_packages(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn finds_mounts_by_type_and_target() {
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n";
        assert!(is_mounted(mounts, "bpf", "/sys/fs/bpf"));
        assert!(!is_mounted(mounts, "tracefs", "/sys/kernel/tracing"));
        // A different filesystem at the same place is not a bpffs.
        assert!(!is_mounted(
            "tmpfs /sys/fs/bpf tmpfs rw 0 0\n",
            "bpf",
            "/sys/fs/bpf"
        ));
    }
}
