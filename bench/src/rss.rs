//! Peak resident set size of this process.

/// The peak RSS of this process in KiB: `VmHWM` from `/proc/self/status`, or 0 where that file
/// is missing or has no such line (not Linux).
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| parse_vm_hwm(&status))
        .unwrap_or(0)
}

/// The minor page faults this process has taken so far (`ru_minflt`): each is a page the
/// kernel had to supply, so an allocator that hands fresh memory back and forth with the OS
/// shows here first.
pub fn minor_faults() -> u64 {
    // SAFETY: `getrusage` writes only into the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_minflt as u64
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
