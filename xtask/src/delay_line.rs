//! A netem-free delay line: packets that an `iptables-legacy ... -j NFQUEUE --queue-num N` rule
//! hands to userspace are held for a fixed delay, then accepted (PLATFORM.md: netem is not built
//! into this kernel, NFQUEUE is, and a holder like this one was measured to be accurate).
//!
//! It speaks nfnetlink_queue directly over a netlink socket (no libnetfilter_queue, no extra
//! crate), and is built to stay cheap per packet:
//! - metadata only (`NFQNL_COPY_META`): no payload is copied to userspace;
//! - `NFQA_CFG_F_GSO`: the kernel hands over GSO packets whole instead of segmenting them first;
//! - `recvmmsg`: up to [`RECV_BATCH`] queued packets per system call;
//! - one `NFQNL_MSG_VERDICT_BATCH` per wake-up: every packet is held for the same delay, so the
//!   packets that are due are exactly those with an id up to the newest due one, and a single
//!   batch verdict accepts them all (ids grow in queueing order);
//! - a real-time (SCHED_FIFO) thread: it wakes on time on a busy machine (see [`realtime_priority`]).
//!
//! Run it on a thread of its own with [`spawn`]: the thread enters the router's network namespace
//! (`setns` changes only the calling thread's namespace), and releases every packet still held
//! before it returns, whether it stops on request or on an error.

use std::{
    collections::VecDeque,
    ffi::CString,
    io, mem,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// nfnetlink subsystem id of nfnetlink_queue (`NFNL_SUBSYS_QUEUE`).
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_GSO: u32 = 1 << 2;
const NF_ACCEPT: u32 = 1;
/// `nla_type` bits that are flags, not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// Packets the kernel may hold for us: at 100 Mbit/s and 10 ms about 100 full-size packets per
/// direction are in the line; senders in slow start at veth speed can queue far more briefly.
const QUEUE_MAXLEN: u32 = 16_384;
/// The socket's receive buffer: a full one makes nfnetlink_queue drop packets.
const RCVBUF_BYTES: libc::c_int = 16 << 20;
/// Queued packets read per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Bytes per receive buffer: one packet's metadata is a few hundred bytes.
const RECV_BUF_BYTES: usize = 4096;
/// The longest sleep, so that a stop request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// What a finished delay line did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Packets received from the queue (each accepted after the delay).
    pub packets: u64,
    /// The most packets held at once.
    pub max_held: usize,
    /// `recvmmsg` calls that returned packets.
    pub receive_calls: u64,
    /// Batch verdicts sent.
    pub verdicts: u64,
    /// The latest any packet was released after its due time.
    pub max_late: Duration,
    /// Lateness summed over all packets (divide by `packets` for the mean).
    pub total_late: Duration,
}

/// A delay line running on its own thread; stopped and joined on drop.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<anyhow::Result<Stats>>>,
}

impl DelayLine {
    /// Whether the thread has ended (it only ends early on an error).
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(thread::JoinHandle::is_finished)
    }

    /// Stops the line, releasing what it holds, and returns what it did.
    pub fn stop(mut self) -> anyhow::Result<Stats> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => match thread.join() {
                Ok(result) => result,
                Err(_) => bail!("the delay-line thread panicked"),
            },
            None => Ok(Stats::default()),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if let Err(err) = self.finish() {
            eprintln!("[delay-line] {err:#}");
        }
    }
}

#[derive(clap::Args)]
pub struct Options {
    /// The network namespace (under /run/netns) whose NFQUEUE to serve.
    #[arg(long)]
    ns: String,
    /// How long each packet is held.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    #[arg(long, default_value_t = 0)]
    queue_num: u16,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Also hand every packet the namespace forwards to the queue (`iptables-legacy -A FORWARD
    /// -j NFQUEUE --queue-num N`) once it is bound, and delete that rule on exit; the
    /// "holding" line is printed when packets are being held.
    #[arg(long)]
    forward_rule: bool,
}

/// `cargo xtask delay-line`: serve the queue until Ctrl-C or `--duration`, then print what it did.
pub fn run(options: &Options) -> anyhow::Result<()> {
    if !crate::exec::is_root() {
        bail!("`cargo xtask delay-line` needs root (setns, netlink): run it as root");
    }
    crate::bench::install_stop_handler()?;
    let delay = Duration::from_millis(options.delay_ms);
    let line = if options.forward_rule {
        spawn_forwarding(&options.ns, options.queue_num, None, delay)?
    } else {
        spawn(&options.ns, options.queue_num, delay)?
    };
    println!(
        "[delay-line] holding NFQUEUE {} in {} for {} ms; Ctrl-C stops",
        options.queue_num, options.ns, options.delay_ms
    );
    let deadline = options
        .duration
        .map(|secs| Instant::now() + Duration::from_secs(secs));
    while !crate::bench::stop_requested()
        && !line.is_finished()
        && deadline.is_none_or(|deadline| Instant::now() < deadline)
    {
        thread::sleep(Duration::from_millis(100));
    }
    // The rule goes first: a packet queued after the line stopped would be dropped.
    let unruled = if options.forward_rule {
        forward_rule(&options.ns, "-D", options.queue_num, None)
    } else {
        Ok(())
    };
    let stats = line.stop()?;
    println!("[delay-line] {stats:?}");
    unruled?;
    Ok(())
}

/// Starts a delay line (see [`spawn`]) and then sends it the packets `namespace` forwards: all
/// of them, or with `out_dev` those leaving through that device. The rule goes in second
/// because a queue that nobody serves drops what reaches it.
pub fn spawn_forwarding(
    namespace: &str,
    queue_num: u16,
    out_dev: Option<&str>,
    delay: Duration,
) -> anyhow::Result<DelayLine> {
    let line = spawn(namespace, queue_num, delay)?;
    if let Err(err) = forward_rule(namespace, "-A", queue_num, out_dev) {
        let _ = line.stop();
        return Err(err);
    }
    Ok(line)
}

/// Appends (`action` "-A") or deletes ("-D") the FORWARD rule of `namespace` that hands
/// forwarded packets (with `out_dev`: those leaving through it) to NFQUEUE `queue_num`; the one
/// place the rule is spelled (p2p-node's kernel tests reach it through `delay-line
/// --forward-rule`).
pub fn forward_rule(
    namespace: &str,
    action: &str,
    queue_num: u16,
    out_dev: Option<&str>,
) -> anyhow::Result<()> {
    let queue = queue_num.to_string();
    let mut args = vec![
        "netns",
        "exec",
        namespace,
        "iptables-legacy",
        action,
        "FORWARD",
    ];
    if let Some(dev) = out_dev {
        args.extend(["-o", dev]);
    }
    args.extend(["-j", "NFQUEUE", "--queue-num", &queue]);
    crate::exec::exec(std::process::Command::new("ip").args(args))
}

/// Starts a delay line for NFQUEUE `queue_num` inside network namespace `namespace` (a name
/// under /run/netns). Returns once the queue is bound, so the caller may add the iptables rule
/// ([`spawn_forwarding`] does both).
pub fn spawn(namespace: &str, queue_num: u16, delay: Duration) -> anyhow::Result<DelayLine> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{namespace}");
    let thread_stop = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name("delay-line".into())
        .spawn(move || {
            realtime_priority();
            let queue = enter_namespace(&path).and_then(|()| Queue::bind(queue_num));
            let queue = match queue {
                Ok(queue) => {
                    let _ = ready_tx.send(Ok(()));
                    queue
                }
                Err(err) => {
                    let message = format!("{err:#}");
                    let _ = ready_tx.send(Err(err));
                    bail!("{message}");
                }
            };
            queue.run(delay, &thread_stop)
        })
        .context("starting the delay-line thread")?;
    let line = DelayLine {
        stop,
        thread: Some(thread),
    };
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(line),
        Ok(Err(err)) => Err(err.context(format!("delay line in {namespace}"))),
        Err(_) => bail!("the delay line in {namespace} did not bind its queue within 10 s"),
    }
}

/// The real-time priority of a delay line's thread (SCHED_FIFO, low in the 1–99 range).
const REALTIME_PRIORITY: libc::c_int = 10;

/// Makes the calling thread a SCHED_FIFO thread, so it wakes when a packet is due even when
/// every core is busy: on this 2-core machine under builds (load 10–12), a normal thread woke
/// late enough to add 3–6 ms to a 40 ms round trip (+14.5% once, over the 10% the testbed
/// allows), and every RTT the algorithms see grew with it. The thread sleeps between packets
/// and does little per wake-up; the kernel's RT throttling (95% by default) bounds it anyway.
/// Best effort: without the privilege the line still works, with a note.
pub(crate) fn realtime_priority() {
    let param = libc::sched_param {
        sched_priority: REALTIME_PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } != 0 {
        eprintln!(
            "[delay-line] no real-time priority ({}): delays may run late on a busy machine",
            io::Error::last_os_error()
        );
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub(crate) fn enter_namespace(path: &str) -> anyhow::Result<()> {
    let c_path = CString::new(path).expect("namespace paths have no NUL");
    // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("opening {path}"));
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setns on a namespace descriptor affects only this thread's network namespace.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setns({path})"));
    }
    Ok(())
}

/// A bound nfnetlink_queue socket.
struct Queue {
    fd: OwnedFd,
    queue_num: u16,
    seq: u32,
}

impl Queue {
    fn bind(queue_num: u16) -> anyhow::Result<Self> {
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_NETLINK, NETFILTER)");
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero is "the kernel picks the port id".
        let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        } != 0
        {
            return Err(io::Error::last_os_error()).context("bind(netlink)");
        }
        for (option, what) in [
            (libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE"),
            (libc::SO_SNDBUFFORCE, "SO_SNDBUFFORCE"),
        ] {
            set_int_option(&fd, libc::SOL_SOCKET, option, RCVBUF_BYTES).context(what)?;
        }
        // Bounds the blocking recv of config acknowledgements.
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: timeout is a valid timeval of the given size.
        if unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        } != 0
        {
            return Err(io::Error::last_os_error()).context("SO_RCVTIMEO");
        }
        let mut queue = Self {
            fd,
            queue_num,
            seq: 0,
        };
        // Unbind first: a queue left bound by a crashed run would make BIND fail with EBUSY
        // only if another socket holds it; unbinding our own (unbound) socket is harmless.
        let _ = queue.config(&cmd_attr(NFQNL_CFG_CMD_UNBIND));
        queue
            .config(&cmd_attr(NFQNL_CFG_CMD_BIND))
            .with_context(|| format!("binding NFQUEUE {queue_num}"))?;
        // copy_range (be32) and copy_mode (u8), packed.
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        queue
            .config(&attr(NFQA_CFG_PARAMS, &params))
            .context("setting metadata-only copy mode")?;
        queue
            .config(&attr(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAXLEN.to_be_bytes()))
            .context("setting the queue length")?;
        let mut flags = attr(NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes());
        flags.extend(attr(NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes()));
        queue
            .config(&flags)
            .context("accepting GSO packets whole")?;
        Ok(queue)
    }

    /// Sends a config message with `attrs` and waits for the kernel's acknowledgement.
    fn config(&mut self, attrs: &[u8]) -> anyhow::Result<()> {
        let seq = self.send(NFQNL_MSG_CONFIG, attrs, true)?;
        let mut buf = vec![0u8; RECV_BUF_BYTES];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error()).context("recv(netlink ack)");
            }
            for message in messages(&buf[..n as usize]) {
                if message.kind == libc::NLMSG_ERROR as u16 && message.seq == seq {
                    let errno = i32::from_ne_bytes(message.payload[..4].try_into()?);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno).into());
                    }
                    return Ok(());
                }
            }
        }
        bail!("no netlink acknowledgement within 2 s")
    }

    /// Sends one nfnetlink_queue message of `msg` type with `attrs`; returns its sequence number.
    fn send(&mut self, msg: u16, attrs: &[u8], ack: bool) -> anyhow::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + 4 + attrs.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend((len as u32).to_ne_bytes());
        buf.extend(((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
        let flags = libc::NLM_F_REQUEST as u16 | if ack { libc::NLM_F_ACK as u16 } else { 0 };
        buf.extend(flags.to_ne_bytes());
        buf.extend(self.seq.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes());
        // nfgenmsg: family AF_UNSPEC, version 0, resource id = queue number (big-endian).
        buf.extend([libc::AF_UNSPEC as u8, 0]);
        buf.extend(self.queue_num.to_be_bytes());
        buf.extend(attrs);
        // SAFETY: buf is valid for reads of its length; the kernel is the default destination.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("send(netlink)");
        }
        Ok(self.seq)
    }

    /// Accepts every queued packet with an id up to `id`.
    fn accept_through(&mut self, id: u32) -> anyhow::Result<()> {
        let mut header = NF_ACCEPT.to_be_bytes().to_vec();
        header.extend(id.to_be_bytes());
        self.send(
            NFQNL_MSG_VERDICT_BATCH,
            &attr(NFQA_VERDICT_HDR, &header),
            false,
        )
        .map(drop)
    }

    /// The holding loop: until `stop`, receive packets and accept each `delay` after it arrived.
    fn run(mut self, delay: Duration, stop: &AtomicBool) -> anyhow::Result<Stats> {
        let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
        let mut stats = Stats::default();
        let mut buffers = vec![[0u8; RECV_BUF_BYTES]; RECV_BATCH];
        let result = (|| -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let mut due = None;
                while let Some(&(at, id)) = held.front() {
                    if at > now {
                        break;
                    }
                    stats.max_late = stats.max_late.max(now - at);
                    stats.total_late += now - at;
                    due = Some(id);
                    held.pop_front();
                }
                if let Some(id) = due {
                    self.accept_through(id)?;
                    stats.verdicts += 1;
                }
                let sleep = held
                    .front()
                    .map_or(MAX_SLEEP, |&(at, _)| at.saturating_duration_since(now))
                    .min(MAX_SLEEP);
                if !self.wait_readable(sleep)? {
                    continue;
                }
                let received = self.receive(&mut buffers, delay, &mut held)?;
                if received > 0 {
                    stats.receive_calls += 1;
                    stats.packets += received as u64;
                    stats.max_held = stats.max_held.max(held.len());
                }
            }
            Ok(())
        })();
        // Whatever happened, release what is held rather than leave it to be dropped.
        if let Some(&(_, id)) = held.back() {
            let _ = self.accept_through(id);
        }
        let _ = self.send(NFQNL_MSG_CONFIG, &cmd_attr(NFQNL_CFG_CMD_UNBIND), false);
        result.map(|()| stats)
    }

    /// Waits up to `timeout` for queued packets; `true` when there are some.
    fn wait_readable(&self, timeout: Duration) -> anyhow::Result<bool> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        let n = unsafe { libc::ppoll(&raw mut pollfd, 1, &raw const ts, std::ptr::null()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(err).context("ppoll(netlink)");
        }
        Ok(n > 0)
    }

    /// Reads up to [`RECV_BATCH`] queued packets in one `recvmmsg` and holds each until
    /// `delay` from now. Returns how many packets arrived.
    fn receive(
        &mut self,
        buffers: &mut [[u8; RECV_BUF_BYTES]],
        delay: Duration,
        held: &mut VecDeque<(Instant, u32)>,
    ) -> anyhow::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|buf| libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; zero means no name, no control data.
                let mut header: libc::mmsghdr = unsafe { mem::zeroed() };
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
                header
            })
            .collect();
        // SAFETY: every header points at a live iovec over a live buffer of the stated length.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                // The socket buffer overflowed and the kernel dropped packets: the line goes on.
                Some(libc::ENOBUFS) => Ok(0),
                _ => Err(err).context("recvmmsg(netlink)"),
            };
        }
        let due = Instant::now() + delay;
        let mut packets = 0;
        for (header, buf) in headers.iter().zip(buffers.iter()).take(n as usize) {
            for message in messages(&buf[..header.msg_len as usize]) {
                if message.kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                    // After the 4-byte nfgenmsg come the attributes.
                    if let Some(id) = attrs(message.payload.get(4..).unwrap_or_default())
                        .find(|&(kind, _)| kind == NFQA_PACKET_HDR)
                        .and_then(|(_, value)| value.get(..4))
                    {
                        held.push_back((due, u32::from_be_bytes(id.try_into()?)));
                        packets += 1;
                    }
                } else if message.kind == libc::NLMSG_ERROR as u16 && message.payload.len() >= 4 {
                    let errno = i32::from_ne_bytes(message.payload[..4].try_into()?);
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno))
                            .context("the kernel refused a verdict");
                    }
                }
            }
        }
        Ok(packets)
    }
}

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value is a valid c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An NFQA_CFG_CMD attribute with `command` (pf 0: the kernel ignores it for BIND/UNBIND).
fn cmd_attr(command: u8) -> Vec<u8> {
    attr(NFQA_CFG_CMD, &[command, 0, 0, 0])
}

/// One netlink attribute, padded to 4 bytes.
fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend((len as u16).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

/// One netlink message: its type, sequence number and payload (after the 16-byte header).
struct Message<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The netlink messages in `buf`; stops at the first malformed one.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let message = Message {
            kind: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[16..len],
        };
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(message)
    })
}

/// The (type, value) netlink attributes in `buf`; stops at the first malformed one.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes(buf[0..2].try_into().ok()?));
        if len < 4 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[2..4].try_into().ok()?) & NLA_TYPE_MASK;
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_parse_back() {
        let mut buf = attr(NFQA_PACKET_HDR, &[0, 0, 0, 7, 8, 0, 3]);
        assert_eq!(buf.len(), 12);
        buf.extend(attr(NFQA_CFG_MASK, &4u32.to_be_bytes()));
        let parsed: Vec<_> = attrs(&buf).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (NFQA_PACKET_HDR, &[0, 0, 0, 7, 8, 0, 3][..]));
        assert_eq!(parsed[1].0, NFQA_CFG_MASK);
    }

    #[test]
    fn messages_split_on_their_lengths() {
        let mut buf = Vec::new();
        for seq in [1u32, 2] {
            buf.extend(20u32.to_ne_bytes());
            buf.extend(2u16.to_ne_bytes());
            buf.extend(0u16.to_ne_bytes());
            buf.extend(seq.to_ne_bytes());
            buf.extend(0u32.to_ne_bytes());
            buf.extend([0u8; 4]);
        }
        let seqs: Vec<_> = messages(&buf).map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert!(messages(&buf[..10]).next().is_none());
    }
}
