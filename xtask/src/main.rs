//! Developer entry points for p2p-cc, for what cargo alone cannot do: install the toolchain
//! pieces and Debian packages the eBPF build needs, run the kernel tests as root, and start a
//! testbed of nodes in network namespaces.
//!
//! `cargo xtask setup | test | run` (the alias lives in `.cargo/config.toml`).

mod exec;
mod netns;
mod run;
mod setup;
mod test;

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
    /// Run setup, the unit tests, the eBPF crate's host tests, then the real-kernel tests (root).
    Test(test::Options),
    /// Run setup, build p2p-node, and start a testbed of nodes in network namespaces (root).
    Run(run::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test(options) => test::run(&options),
        Task::Run(options) => run::run(&options),
    }
}
