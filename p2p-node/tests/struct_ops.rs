//! The struct_ops loader on the real kernel, with `p2pcc_reno` (Reno in Rust) as the algorithm:
//! registration, a transfer through it between namespaces, unregistration on drop and on
//! SIGKILL, and the errors a user sees.

mod common;

use std::{
    io::{BufRead as _, BufReader},
    os::fd::AsFd as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use cc_ebpf_common::btf::Btf;
use common::{NetnsPair, TcpFlow, available_cc, eventually, kernel_tests_possible};
use p2p_node::{
    ebpf::{
        objects::RENO_RS,
        struct_ops::{Attach, StructOps, StructOpsError},
    },
    sockets,
};

const NAME: &str = "p2pcc_reno";
const CHILD_ENV: &str = "P2PCC_STRUCT_OPS_CHILD";

fn btf() -> Btf {
    Btf::from_sys_fs().expect("kernel BTF")
}

fn register(object: &[u8]) -> Result<p2p_node::ebpf::struct_ops::Registration, StructOpsError> {
    StructOps::load(object, &btf())?.register()
}

/// `object` with every occurrence of `from` replaced by `to` (same length).
fn patched(object: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = object.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "pattern not found in the object");
    out
}

#[test]
fn registers_carries_a_transfer_and_unregisters_on_drop() {
    if !kernel_tests_possible() {
        return;
    }
    assert!(
        !available_cc().contains(&NAME.to_owned()),
        "{NAME} registered before the test"
    );
    let btf_start = Instant::now();
    let btf = btf();
    let btf_elapsed = btf_start.elapsed();
    let start = Instant::now();
    let registration = StructOps::load(RENO_RS, &btf)
        .and_then(StructOps::register)
        .expect("registering p2pcc_reno");
    let elapsed = start.elapsed();
    eprintln!(
        "reading kernel BTF took {:.1} ms; loading all programs and registering took {:.1} ms",
        btf_elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(registration.name(), NAME);
    assert!(available_cc().contains(&NAME.to_owned()));

    let net = NetnsPair::new("so", 2);
    let mut flow = TcpFlow::open(&net, 5001, NAME);
    flow.send(32 << 20);
    assert_eq!(sockets::congestion(flow.client.as_fd()).unwrap(), NAME);
    let info = sockets::tcp_info(flow.client.as_fd()).unwrap();
    assert!(
        info.snd_cwnd > 10,
        "Reno grew no window: cwnd {}",
        info.snd_cwnd
    );
    let ss = common::sh(&[
        "ip",
        "netns",
        "exec",
        &net.a,
        "ss",
        "-tin",
        "dst",
        &net.addr_b,
    ]);
    assert!(ss.contains(NAME), "ss does not show {NAME}:\n{ss}");
    assert_eq!(flow.finish(), 32 << 20);

    drop(registration);
    assert!(
        eventually(Duration::from_secs(2), || (!available_cc()
            .contains(&NAME.to_owned()))
        .then_some(()))
        .is_some(),
        "{NAME} still registered after the owner dropped it"
    );
}

#[test]
fn sigkill_of_the_owner_unregisters_and_existing_sockets_keep_working() {
    if !kernel_tests_possible() {
        return;
    }
    let mut child = spawn_child("register", false);
    let stdout = child.stdout.take().unwrap();
    // The harness prints its own lines around ours; ours ends the line with "registered".
    let registered = BufReader::new(stdout)
        .lines()
        .take(10)
        .map_while(Result::ok)
        .any(|l| l.ends_with("registered"));
    assert!(registered, "child did not register");
    assert!(available_cc().contains(&NAME.to_owned()));

    let net = NetnsPair::new("kill", 3);
    let mut flow = TcpFlow::open(&net, 5002, NAME);
    flow.send(8 << 20);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        eventually(Duration::from_secs(2), || (!available_cc()
            .contains(&NAME.to_owned()))
        .then_some(()))
        .is_some(),
        "{NAME} still registered after its owner was SIGKILLed"
    );
    // The established socket keeps its algorithm and keeps carrying data.
    flow.send(8 << 20);
    assert_eq!(sockets::congestion(flow.client.as_fd()).unwrap(), NAME);
    assert_eq!(flow.finish(), 16 << 20);
}

#[test]
fn registering_twice_names_the_owner() {
    if !kernel_tests_possible() {
        return;
    }
    let _first = register(RENO_RS).unwrap();
    let err = register(RENO_RS).unwrap_err().to_string();
    let me = std::process::id();
    assert!(
        err.starts_with(&format!(
            "an algorithm named `{NAME}` is already registered (by process {me} ("
        )),
        "{err}"
    );
    // A built-in algorithm's name: no process owns it.
    let cubic = patched(RENO_RS, b"p2pcc_reno\0", b"cubic\0\0\0\0\0\0");
    let err = register(&cubic).unwrap_err().to_string();
    assert_eq!(
        err,
        "an algorithm named `cubic` is already registered (built into the kernel or registered by a module)"
    );
}

#[test]
fn a_rejected_program_shows_the_verifier_log() {
    if !kernel_tests_possible() {
        return;
    }
    // In reno_ssthresh, r1 is the socket plus snd_cwnd's offset (read from the kernel layout
    // table); turn `w0 = *(u32 *)(r1 + 0)` into a store of 1 at r1 + (snd_cwnd_clamp -
    // snd_cwnd), i.e. to snd_cwnd_clamp, a field congestion controls may not write.
    let byte = |field: &str| btf().field("tcp_sock", field).unwrap().bit_offset / 8;
    let clamp_at = byte("snd_cwnd_clamp");
    let delta = (clamp_at as i16 - byte("snd_cwnd") as i16).to_le_bytes();
    let from = [0x61u8, 0x10, 0, 0, 0, 0, 0, 0, 0x77, 0, 0, 0, 1, 0, 0, 0];
    let to = [
        0x62, 0x01, delta[0], delta[1], 1, 0, 0, 0, 0x77, 0, 0, 0, 1, 0, 0, 0,
    ];
    let bad = patched(RENO_RS, &from, &to);
    let err = register(&bad).unwrap_err();
    assert!(matches!(err, StructOpsError::Verifier { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("the kernel verifier rejected struct_ops program `reno_ssthresh`"),
        "{text}"
    );
    assert!(
        text.contains(&format!("no write support to tcp_sock at off {clamp_at}")),
        "{text}"
    );
    assert!(!available_cc().contains(&NAME.to_owned()));
}

#[test]
fn missing_mandatory_op_unknown_type_and_missing_capability_are_named() {
    if !kernel_tests_possible() {
        return;
    }
    let no_undo = patched(
        RENO_RS,
        b"struct_ops/undo_cwnd\0",
        b"struct_ops/set_state\0",
    );
    let err = StructOps::load(&no_undo, &btf()).unwrap_err().to_string();
    assert_eq!(
        err,
        "`p2pcc_reno` lacks mandatory member(s) of tcp_congestion_ops: undo_cwnd"
    );

    let unknown = patched(RENO_RS, b"tcp_congestion_ops\0", b"tcp_congestion_opz\0");
    let err = StructOps::load(&unknown, &btf()).unwrap_err().to_string();
    assert!(
        err.starts_with("the running kernel has no struct_ops support for `tcp_congestion_opz`"),
        "{err}"
    );
    assert!(
        err.ends_with("The TCP probes and the kernel's own congestion controls still work"),
        "{err}"
    );

    let child = spawn_child("load", true);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("ERR ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("child said: {stdout}"));
    assert!(
        // The first privileged step: the read-only map holding the writable-field mask.
        line.starts_with("ERR registering struct_ops needs CAP_BPF and CAP_SYS_ADMIN (or root): creating the .rodata.P2PCC_KERNEL_WRITABLE map was refused"),
        "{line}"
    );
}

/// Kernels before 6.4 have no struct_ops links: the map alone registers, deleting its element
/// unregisters, and a registration left by a crashed process is cleared by the next one.
#[test]
fn registers_through_the_map_alone_and_clears_what_a_crash_left() {
    if !kernel_tests_possible() {
        return;
    }
    let load = || StructOps::load(RENO_RS, &btf()).expect("loading p2pcc_reno");
    let registration = load()
        .register_with(Attach::Map)
        .expect("map-only registration");
    assert!(!registration.linked());
    assert!(available_cc().contains(&NAME.to_owned()));
    drop(registration);
    assert!(
        !available_cc().contains(&NAME.to_owned()),
        "dropping unregisters"
    );

    // A "crash": every fd closed, nothing deleted. The kernel keeps the algorithm.
    load().register_with(Attach::Map).unwrap().abandon();
    assert!(
        available_cc().contains(&NAME.to_owned()),
        "a crash leaves it registered"
    );
    let again = load()
        .register_with(Attach::Map)
        .expect("clearing the orphan and registering");
    assert!(available_cc().contains(&NAME.to_owned()));
    drop(again);
    assert!(!available_cc().contains(&NAME.to_owned()));

    // This kernel has links, and `register` uses them.
    let linked = load().register().unwrap();
    assert!(linked.linked());
}

/// Re-runs this test binary as a child doing `mode` (see `child_process`).
fn spawn_child(mode: &str, unprivileged: bool) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if unprivileged {
        let nobody = common::as_nobody(&[]);
        let mut c = Command::new(&nobody[0]);
        c.args(&nobody[1..]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args([
        "--exact",
        "child_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, mode)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("spawning the child")
}

/// Not a test: the body of the child processes the tests above start.
#[test]
#[ignore = "run only as a child of the other tests"]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    match mode.as_str() {
        "register" => {
            let registration = register(RENO_RS).expect("child registering");
            println!("registered");
            // Bounded: the parent kills us long before this.
            std::thread::sleep(Duration::from_secs(60));
            drop(registration);
        }
        "load" => match Btf::from_sys_fs()
            .map_err(|e| e.to_string())
            .and_then(|btf| StructOps::load(RENO_RS, &btf).map_err(|e| e.to_string()))
        {
            Ok(_) => println!("OK"),
            Err(e) => println!("ERR {e}"),
        },
        other => panic!("unknown child mode {other}"),
    }
}
