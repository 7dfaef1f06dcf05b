//! Privileges: what attaching needs, checked up front so a missing
//! capability is one clear error rather than a failed map load.
//!
//! Attaching needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which
//! implies both); reading kernel symbols for call-site names wants
//! CAP_SYSLOG. pinwatch pins nothing in bpffs, so nothing it loads can
//! outlive its process.

use caps::{CapSet, Capability};

/// Errors about what the process may do.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Capabilities that attaching needs are missing.
    #[error(
        "pinwatch needs {missing} to load its probes: run it as root (sudo pinwatch ...), or give \
         the binary the capabilities (setcap cap_bpf,cap_perfmon,cap_syslog+ep PATH)"
    )]
    Missing {
        /// The missing capabilities, e.g. "CAP_BPF and CAP_PERFMON".
        missing: String,
    },
}

/// Whether the effective set holds `cap` (false when the kernel or the
/// library cannot tell, e.g. a capability newer than the kernel).
pub fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// Checks that the effective capabilities allow loading and attaching
/// tracing programs.
pub fn check_can_attach() -> Result<(), PrivilegeError> {
    if has(Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (Capability::CAP_BPF, "CAP_BPF"),
        (Capability::CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(" and "),
        })
    }
}
