//! p2p-node: a libp2p node whose TCP connections run a chosen congestion control (including the
//! eBPF `bbr-p2p`) and whose per-peer TCP state is exported live.
//!
//! Layers, lower ones never importing higher ones: `fsutil` (private files written whole), `heap`
//! (freed heap back to the kernel), `sockets` (the cookie ↔ PeerId join) and `ebpf` (loading) at
//! the bottom; `node` (libp2p) and `telemetry` (collect, export) above them; `http` and `cc` (the
//! user-facing API) and `tables` (what the CLI prints of it) on top; `main.rs` wires them.

pub mod cc;
pub mod cli;
pub mod ebpf;
pub mod fsutil;
#[cfg(test)]
mod fuzz;
pub mod heap;
pub mod http;
pub mod known;
pub mod node;
pub mod rcvwarm;
pub mod sockets;
pub mod tables;
pub mod telemetry;
pub mod tunables;
