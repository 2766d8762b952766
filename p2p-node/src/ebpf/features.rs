//! What the running kernel lets the node do, probed rather than assumed from a version: each
//! TCP probe, each algorithm, and the kernel features the eBPF part uses — available, or
//! unavailable with the reason and what is lost. Computed once at start; `/api/node`
//! (`features`) lists them and `p2pcc_kernel_feature_available{kind,name}` exports them (a
//! fixed, small label set).

use cc_ebpf_common::btf::Btf;

use super::{ProbeStatus, objects, struct_ops};

/// What a feature is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A TCP tracepoint the probes attach to.
    Probe,
    /// A congestion control the node can set.
    Algorithm,
    /// A kernel facility the eBPF part uses (struct_ops links, a kfunc, a prototype).
    Kernel,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Algorithm => "algorithm",
            Self::Kernel => "kernel",
        }
    }
}

/// One feature on this kernel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Feature {
    pub kind: Kind,
    pub name: String,
    pub available: bool,
    /// How it is used when available (e.g. the program form), if that varies by kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why not, when unavailable: one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// What the node does without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without: Option<String>,
}

impl Feature {
    pub fn available(kind: Kind, name: impl Into<String>, detail: Option<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            available: true,
            detail,
            unavailable: None,
            without: None,
        }
    }

    pub fn unavailable(
        kind: Kind,
        name: impl Into<String>,
        why: impl Into<String>,
        without: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            name: name.into(),
            available: false,
            detail: None,
            unavailable: Some(why.into()),
            without: Some(without.into()),
        }
    }
}

/// The probes' statuses as features.
pub fn probes(status: &[ProbeStatus]) -> Vec<Feature> {
    status
        .iter()
        .map(|s| match &s.unavailable {
            None => Feature::available(
                Kind::Probe,
                s.tracepoint,
                s.program.map(|p| format!("program {p}")),
            ),
            Some(why) => Feature::unavailable(
                Kind::Probe,
                s.tracepoint,
                why.clone(),
                format!("no {}", s.without.unwrap_or("data from it")),
            ),
        })
        .collect()
}

/// The collector's refresh of idle sockets (`iter/tcp`, see `Probes::refresh`): loaded, or
/// why not and what the node shows without it.
pub fn refresher(status: Result<(), &str>) -> Feature {
    const NAME: &str = "iter_tcp";
    match status {
        Ok(()) => Feature::available(
            Kind::Kernel,
            NAME,
            Some(format!(
                "program {}: every collection refreshes each tracked socket from its tcp_sock",
                cc_ebpf_common::REFRESH_PROGRAM
            )),
        ),
        Err(why) => Feature::unavailable(
            Kind::Kernel,
            NAME,
            why,
            format!("no {}", super::WITHOUT_REFRESH),
        ),
    }
}

/// The kernel facilities bbr-p2p's loader uses: struct_ops links, the prototype of
/// `cong_control`, and each kfunc its programs call (none today; each would be probed by name).
pub fn kernel(btf: &Btf) -> Vec<Feature> {
    let mut out = Vec::new();
    const OPS: &str = "tcp_congestion_ops";
    out.push(match struct_ops::links_supported(btf, OPS) {
        Ok(true) => Feature::available(Kind::Kernel, "struct_ops_link", None),
        Ok(false) => Feature::unavailable(
            Kind::Kernel,
            "struct_ops_link",
            "the kernel refuses struct_ops maps with BPF_F_LINK (struct_ops links exist from Linux 6.4)",
            "the kernel does not unregister bbr-p2p when its node dies: the node unregisters it on \
             exit, and the next node to start clears what a crashed one left",
        ),
        Err(e) => Feature::unavailable(
            Kind::Kernel,
            "struct_ops_link",
            super::error_chain(&e),
            "bbr-p2p",
        ),
    });
    out.push(match btf.fn_member_arity(OPS, "cong_control") {
        Some(n) => Feature::available(
            Kind::Kernel,
            "tcp_congestion_ops.cong_control",
            Some(format!(
                "{n} arguments (bbr-p2p loads the form built for them)"
            )),
        ),
        None => Feature::unavailable(
            Kind::Kernel,
            "tcp_congestion_ops.cong_control",
            "tcp_congestion_ops has no cong_control member in the kernel's BTF",
            "bbr-p2p",
        ),
    });
    match struct_ops::kfuncs(objects::BBR_P2P, btf) {
        Ok(kfuncs) => out.extend(kfuncs.into_iter().map(|(name, present)| {
            let feature = format!("kfunc {name}");
            if present {
                Feature::available(Kind::Kernel, feature, None)
            } else {
                Feature::unavailable(
                    Kind::Kernel,
                    feature,
                    format!("the kernel's BTF has no function {name}"),
                    "bbr-p2p",
                )
            }
        })),
        Err(e) => out.push(Feature::unavailable(
            Kind::Kernel,
            "bbr-p2p object",
            super::error_chain(&e),
            "bbr-p2p",
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfuncs_are_probed_one_by_one_by_name() {
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        // The Reno fixture calls two kfuncs; this kernel has both.
        let found = struct_ops::kfuncs(objects::RENO_RS, &btf).unwrap();
        assert_eq!(
            found,
            [
                ("tcp_cong_avoid_ai".to_owned(), true),
                ("tcp_slow_start".to_owned(), true)
            ]
        );
        // bbr-p2p calls none (its arithmetic is its own).
        assert_eq!(struct_ops::kfuncs(objects::BBR_P2P, &btf).unwrap(), []);
        // A kernel whose BTF lacks one: that one, by name, unavailable.
        let mut raw = btf.bytes().to_vec();
        let renamed = rename_function(&mut raw, "tcp_slow_start");
        let other = Btf::parse(raw).unwrap();
        assert!(renamed);
        assert_eq!(
            struct_ops::kfuncs(objects::RENO_RS, &other).unwrap(),
            [
                ("tcp_cong_avoid_ai".to_owned(), true),
                ("tcp_slow_start".to_owned(), false)
            ]
        );
    }

    /// Overwrites the first byte of function name `name` in the BTF string section (every
    /// reference to that string then names another, absent function).
    fn rename_function(raw: &mut [u8], name: &str) -> bool {
        let needle = [b"\0", name.as_bytes(), b"\0"].concat();
        match raw.windows(needle.len()).position(|w| w == needle) {
            Some(at) => {
                raw[at + 1] = b'X';
                true
            }
            None => false,
        }
    }

    #[test]
    fn tracepoint_prototypes_choose_the_probe_form() {
        let retransmit = &crate::ebpf::PROBES[1];
        assert_eq!(retransmit.tracepoint, "tcp_retransmit_skb");
        assert_eq!(retransmit.form(Some(3)), Ok("tcp_retransmit_skb"));
        assert_eq!(retransmit.form(Some(2)), Ok("tcp_retransmit_skb_2args"));
        assert_eq!(
            retransmit.form(Some(1)).unwrap_err(),
            "the kernel's tcp_retransmit_skb tracepoint passes 1 arguments; this build reads at least 2"
        );
        assert_eq!(
            retransmit.form(None).unwrap_err(),
            "the kernel has no BTF tracepoint tcp_retransmit_skb (no btf_trace_tcp_retransmit_skb in its BTF)"
        );
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        // This kernel (6.18) passes `err` too; Debian 12's 6.1 does not (the QEMU tier).
        assert_eq!(btf.tracepoint_arity("tcp_retransmit_skb"), Some(3));
        assert_eq!(btf.tracepoint_arity("tcp_probe"), Some(2));
        assert_eq!(btf.tracepoint_arity("tcp_destroy_sock"), Some(1));
        assert_eq!(btf.tracepoint_arity("no_such_tracepoint"), None);
        for probe in crate::ebpf::PROBES {
            assert!(probe.form(btf.tracepoint_arity(probe.tracepoint)).is_ok());
        }
    }
}
