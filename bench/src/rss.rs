//! Peak resident set size of this process.

/// The peak RSS of this process in KiB: `VmHWM` from `/proc/self/status`, or 0 where that file
/// is missing or has no such line (not Linux).
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| parse_vm_hwm(&status))
        .unwrap_or(0)
}

fn parse_vm_hwm(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        assert_eq!(
            parse_vm_hwm("Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n"),
            12345
        );
        assert_eq!(parse_vm_hwm("Name:\tx\n"), 0);
    }

    #[test]
    fn reads_own_peak() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kb() > 0);
        }
    }
}
