//! Which Linux capabilities the process has (from `/proc/self/status`).

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, or `None` when it cannot be read.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Names of the capabilities missing to load and attach the programs, or `None` if none are.
/// CAP_SYS_ADMIN covers the rest (older kernels and root).
pub fn missing_for_ebpf() -> Option<String> {
    missing(
        effective()?,
        &[
            (CAP_BPF, "CAP_BPF"),
            (CAP_PERFMON, "CAP_PERFMON"),
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        ],
    )
}

fn missing(eff: u64, needed: &[(u32, &str)]) -> Option<String> {
    if eff & (1 << CAP_SYS_ADMIN) != 0 {
        return None;
    }
    let names: Vec<&str> = needed
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|&(_, name)| name)
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_capability() {
        let all = [
            (CAP_BPF, "CAP_BPF"),
            (CAP_PERFMON, "CAP_PERFMON"),
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        ];
        assert_eq!(
            missing(0, &all).as_deref(),
            Some("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN")
        );
        assert_eq!(
            missing(1 << CAP_BPF, &all).as_deref(),
            Some("CAP_PERFMON, CAP_NET_ADMIN")
        );
        assert_eq!(missing(1 << CAP_SYS_ADMIN, &all), None);
        let granted = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert_eq!(missing(granted, &all), None);
    }
}
