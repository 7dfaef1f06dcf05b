//! Signal dispositions read from /proc, shared by the host tests
//! (`stopping`) and the VM suite (`processes`), which are separate test
//! crates and include this file by path.

/// Whether `pid` has `sig` blocked or caught (from /proc): a signal sent
/// now is kept, not discarded as an ignored one would be.
pub fn holds_signal(pid: u32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigBlk:") | mask("SigCgt:")) & (1 << (sig - 1)) != 0
}
