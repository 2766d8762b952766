//! Developer entry points for p2p-cc, for what cargo alone cannot do: install the toolchain
//! pieces and Debian packages the eBPF build needs, run the kernel tests as root, and start a
//! testbed of nodes in network namespaces.
//!
//! `cargo xtask setup | test | run | bench | delay-line` (the alias lives in `.cargo/config.toml`).

mod bench;
mod bench_probes;
mod bench_report;
mod bench_scale;
mod bench_warm;
mod delay_line;
mod exec;
mod link;
mod netns;
mod overview;
mod prometheus;
mod qemu;
mod run;
mod setup;
mod svg;
mod test;
mod testbed_test;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about, version)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and tests need (nightly rust-src, Debian packages, bpf-linker) and
    /// mount bpffs and tracefs; a fast no-op when all is present.
    Setup,
    /// Run setup, the unit tests, the eBPF crate's host tests, the real-kernel tests, the QEMU tier
    /// (Linux 6.1) and the testbed (`cargo xtask run` driven from headless Chromium); root.
    Test(test::Options),
    /// Run setup, build p2p-node, and start a testbed of nodes in network namespaces (root).
    Run(run::Options),
    /// Benchmarks (root): measurements written to docs/bench.md, not pass/fail tests.
    Bench {
        #[command(subcommand)]
        which: BenchKind,
    },
    /// Hold every packet of an NFQUEUE in a network namespace for a fixed delay (root); with
    /// `--forward-rule` it also sends the namespace's forwarded packets to that queue.
    DelayLine(delay_line::Options),
}

#[derive(Subcommand)]
enum BenchKind {
    /// bbr-p2p vs the kernel's bbr on the same shaped links, issue 10's scenarios (a)–(f) (one
    /// or several per invocation): goodput, RTT, retransmissions, fairness, per-ACK program cost
    /// and CPU per GB; writes "## bbr-p2p vs kernel bbr" in docs/bench.md with plots.
    Bbr(bench::BbrOptions),
    /// Cost per event of the node's TCP probe programs and bulk loopback throughput with them
    /// attached vs none; writes "## Probes" in docs/bench.md.
    Probes(bench_probes::ProbesOptions),
    /// Careful resume (issue 13): 8 MB libp2p transfers on fresh connections, resumed vs cold,
    /// on the same path, a changed path and with 1% loss; writes its section in docs/bench.md.
    Warm(bench_warm::WarmOptions),
    /// Telemetry at 100/500/1,000 peers (issue 12): `/metrics` and `/api/peers` latency,
    /// syscalls per scrape, RSS, map memory; writes "## Telemetry at scale (issue 12)".
    Scale(bench_scale::ScaleOptions),
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first statement of main, before any thread is started.
    unsafe { exec::forget_cargo_run_env() };
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test(options) => test::run(&options),
        Task::Run(options) => run::run(&options),
        Task::Bench { which } => match which {
            BenchKind::Bbr(options) => bench::run_bbr(&options),
            BenchKind::Probes(options) => bench_probes::run(&options),
            BenchKind::Warm(options) => bench_warm::run(&options),
            BenchKind::Scale(options) => bench_scale::run(&options),
        },
        Task::DelayLine(options) => delay_line::run(&options),
    }
}
