//! `cargo xtask test`: the three test tiers in order, cheapest first, so a broken unit test fails
//! in seconds instead of after the kernel tests.
//!
//! 0. every test binary (and the release node the QEMU tier and the testbed run) is built first,
//!    so that no compile happens once a stage touches the kernel: the later `cargo` commands find
//!    their targets fresh (`--build-only` stops here, for a build outside a kernel lock);
//! 1. unit tests of the workspace (`--lib --bins`: no kernel needed);
//! 2. host tests of the eBPF crate's pure code (`cc-ebpf`, on its own nightly toolchain);
//! 3. real-kernel integration tests of p2p-node (root; single-threaded because they share kernel
//!    state: registered congestion controls, pinned maps, namespaces); every `p2p-node/tests/*.rs`
//!    runs, among them `interop.rs` against js-libp2p (Node.js and `interop/js`, installed by
//!    setup; loopback only, no BPF);
//! 4. the QEMU tier: the release binary on Debian 12's Linux 6.1, the oldest supported kernel
//!    (see `qemu.rs`).
//! 5. the testbed end to end (`cargo xtask run` driven from headless Chromium, see
//!    `testbed_test.rs`; root, about 5 minutes; `--no-testbed` skips it outside CI, `--testbed-only`
//!    runs it alone).

use std::{
    env, fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    exec::{exec, is_root, workspace_root},
    netns, qemu, setup,
};

/// Where the kernel tests may pin maps and links; removed before and after them.
const BPFFS_PIN_DIR: &str = "/sys/fs/bpf/p2p-cc";

#[derive(clap::Args)]
pub struct Options {
    /// Run only the unit tiers (workspace and eBPF host tests), not the real-kernel tests.
    #[arg(long)]
    unit_only: bool,
    /// Skip the testbed stage (`cargo xtask run` driven from headless Chromium, ~5 min); CI does
    /// not skip it.
    #[arg(long)]
    no_testbed: bool,
    /// Run only the testbed stage.
    #[arg(long, conflicts_with_all = ["unit_only", "no_testbed"])]
    testbed_only: bool,
    /// Skip the QEMU tier (Linux 6.1 in a TCG guest, a few minutes); CI does not skip it.
    #[arg(long)]
    no_qemu: bool,
    /// Run only the QEMU tier.
    #[arg(long, conflicts_with_all = ["unit_only", "no_qemu", "testbed_only"])]
    qemu_only: bool,
    /// Only build what the selected stages run (test binaries, the release node), run nothing.
    #[arg(long)]
    build_only: bool,
    /// Passed to every test harness, e.g. a test name filter or `--ignored`.
    #[arg(last = true)]
    harness_args: Vec<String>,
}

/// How one stage ended, for the summary.
struct Stage {
    name: &'static str,
    outcome: String,
    took: Duration,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    setup::run()?;
    let root = workspace_root();
    let mut stages = Vec::new();

    let result = run_stages(&root, options, &mut stages);
    // The summary is printed on failure too: it says which stage broke and what already passed.
    println!("[test] summary:");
    for stage in &stages {
        println!(
            "[test]   {:<28} {:<40} {:>8.1?}",
            stage.name, stage.outcome, stage.took
        );
    }
    result
}

fn run_stages(root: &Path, options: &Options, stages: &mut Vec<Stage>) -> anyhow::Result<()> {
    stage(stages, "build (every stage's binaries)", || {
        build_stages(root, options)
    })?;
    if options.build_only {
        return Ok(());
    }
    if options.qemu_only {
        return qemu_stage(options, stages);
    }
    if !options.testbed_only {
        run_test_stages(root, options, stages)?;
    }
    testbed_stage(options, stages)?;
    Ok(())
}

fn run_test_stages(root: &Path, options: &Options, stages: &mut Vec<Stage>) -> anyhow::Result<()> {
    stage(stages, "unit tests (workspace)", || {
        exec(unit_tests(root).arg("--").args(&options.harness_args))?;
        Ok("passed".to_owned())
    })?;

    stage(stages, "host tests (cc-ebpf)", || {
        exec(host_tests(root).arg("--").args(&options.harness_args))?;
        Ok("passed".to_owned())
    })?;

    stage(stages, "kernel tests (p2p-node)", || {
        if options.unit_only {
            return Ok("skipped: --unit-only".to_owned());
        }
        // A developer may skip them with a reason; CI must not pass without having run them.
        if let Some(reason) = kernel_tests_skip_reason(root) {
            if env::var_os("CI").is_some() {
                bail!("cannot run the kernel tests: {reason}; CI is set, so this is a failure");
            }
            println!("[test] kernel tests skipped: {reason}");
            return Ok(format!("skipped: {reason}"));
        }
        clean_kernel_leftovers()?;
        let result = exec(
            kernel_tests(root)
                .args(["--", "--test-threads=1", "--nocapture"])
                .args(&options.harness_args),
        );
        // Cleaned after a failure too: a failed test is the likeliest one to leave things behind.
        let cleaned = clean_kernel_leftovers();
        result?;
        cleaned?;
        Ok("passed".to_owned())
    })?;
    qemu_stage(options, stages)
}

/// Builds, without running them, the binaries of every stage `options` selects, with the very
/// commands the stages run (so those find them fresh): the unit and host test binaries, the
/// kernel test binaries, and the release node of the QEMU tier and the testbed.
fn build_stages(root: &Path, options: &Options) -> anyhow::Result<String> {
    let mut built = Vec::new();
    if !options.qemu_only && !options.testbed_only {
        exec(unit_tests(root).arg("--no-run"))?;
        exec(host_tests(root).arg("--no-run"))?;
        built.push("unit and host tests");
        if !options.unit_only && kernel_tests_skip_reason(root).is_none() {
            exec(kernel_tests(root).arg("--no-run"))?;
            built.push("kernel tests");
        }
    }
    let qemu = !options.no_qemu && !options.testbed_only;
    let testbed = !options.no_testbed && !options.qemu_only;
    if !options.unit_only && (qemu || testbed) {
        crate::exec::release_node(true)?;
        built.push("release node");
    }
    Ok(format!("built: {}", built.join(", ")))
}

/// The workspace's unit tests (`--lib --bins`: no kernel needed).
fn unit_tests(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["test", "--workspace", "--lib", "--bins"]);
    cmd
}

/// The eBPF crate's host tests. Without RUSTUP_TOOLCHAIN (set by the rustup proxy that started
/// xtask on stable), rustup reads cc-ebpf/rust-toolchain.toml and uses its nightly.
fn host_tests(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("cc-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["test", "--lib"]);
    cmd
}

/// p2p-node's integration tests (`p2p-node/tests/*.rs`), which need the kernel.
fn kernel_tests(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["test", "-p", "p2p-node", "--test", "*"]);
    cmd
}

/// Why the kernel tests cannot run here, if they cannot.
fn kernel_tests_skip_reason(root: &Path) -> Option<&'static str> {
    if !is_root() {
        Some("not root (they need BPF and network namespaces)")
    } else if !has_integration_tests(&root.join("p2p-node/tests")) {
        // `cargo test --test '*'` would fail with "no test target matches pattern".
        Some("p2p-node has no integration tests (p2p-node/tests/*.rs)")
    } else {
        None
    }
}

fn qemu_stage(options: &Options, stages: &mut Vec<Stage>) -> anyhow::Result<()> {
    stage(stages, "QEMU tier (Linux 6.1)", || {
        if options.unit_only {
            return Ok("skipped: --unit-only".to_owned());
        }
        let skip_reason = if options.no_qemu {
            Some("--no-qemu".to_owned())
        } else {
            qemu::missing()
        };
        if let Some(reason) = skip_reason {
            if env::var_os("CI").is_some() {
                bail!("cannot run the QEMU tier: {reason}; CI is set, so this is a failure");
            }
            println!("[test] QEMU tier skipped: {reason}");
            return Ok(format!("skipped: {reason}"));
        }
        qemu::run()
    })
}

fn testbed_stage(options: &Options, stages: &mut Vec<Stage>) -> anyhow::Result<()> {
    stage(stages, "testbed (run + chromium)", || {
        if options.unit_only {
            return Ok("skipped: --unit-only".to_owned());
        }
        let skip_reason = if options.no_testbed {
            Some("--no-testbed")
        } else if !is_root() {
            Some("not root (the testbed needs network namespaces and BPF)")
        } else {
            None
        };
        if let Some(reason) = skip_reason {
            if env::var_os("CI").is_some() {
                bail!("cannot run the testbed test: {reason}; CI is set, so this is a failure");
            }
            println!("[test] testbed test skipped: {reason}");
            return Ok(format!("skipped: {reason}"));
        }
        crate::testbed_test::run()
    })
}

/// Runs one stage, prints its result line and records it for the summary.
fn stage(
    stages: &mut Vec<Stage>,
    name: &'static str,
    body: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    println!("[test] {name}: running");
    let started = Instant::now();
    let result = body();
    let took = started.elapsed();
    let outcome = match &result {
        Ok(outcome) => outcome.clone(),
        Err(_) => "FAILED".to_owned(),
    };
    println!("[test] {name}: {outcome} ({took:.1?})");
    stages.push(Stage {
        name,
        outcome,
        took,
    });
    result.map(drop)
}

/// Whether `dir` holds a test target (`*.rs`; cargo also accepts `<name>/main.rs`).
fn has_integration_tests(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.extension().is_some_and(|ext| ext == "rs") || path.join("main.rs").is_file()
    })
}

/// Removes what kernel tests leave when they crash: `p2pcc-*` namespaces and the pin directory.
fn clean_kernel_leftovers() -> anyhow::Result<()> {
    netns::delete_leftovers()?;
    if Path::new(BPFFS_PIN_DIR).exists() {
        println!("[test] removing {BPFFS_PIN_DIR}");
        fs::remove_dir_all(BPFFS_PIN_DIR).with_context(|| format!("removing {BPFFS_PIN_DIR}"))?;
    }
    Ok(())
}
