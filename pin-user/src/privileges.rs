//! Privileges: what attaching needs, checked up front so a missing
//! capability is one clear error rather than a failed map load, and
//! shedding all of it once the probes are attached ([`shed`]).
//!
//! Attaching needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which
//! implies both); reading kernel symbols for call-site names wants
//! CAP_SYSLOG. pinwatch pins nothing in bpffs, so nothing it loads can
//! outlive its process.
//!
//! After attaching, the programs and links live as long as their file
//! descriptors; what remains is reading maps through descriptors already
//! held. Whether that needs CAP_BPF depends on the kernel (some check it on
//! every bpf() call while `kernel.unprivileged_bpf_disabled` is set), so
//! [`shed`] measures it by reading a map with an empty effective set, then
//! becomes `nobody` with no capability at all, or keeps CAP_BPF as root.
//! Debian's 6.1.192 and 6.12.117 (`unprivileged_bpf_disabled=2`) both allow
//! the reads: pinwatch runs as `nobody` there.

use std::collections::HashSet;

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

/// The unprivileged user pinwatch becomes (`nobody`).
pub const NOBODY: u32 = 65534;

/// What a command still needs after attaching.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Stay uid 0: the command waits for and signals a root child, or
    /// writes its output where only root may (`record`).
    pub stay_root: bool,
    /// Capabilities kept beyond map reads (e.g. CAP_DAC_OVERRIDE to write
    /// a recording into another user's directory).
    pub keep: Vec<Capability>,
}

/// What [`shed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shed {
    /// Not privileged to begin with: nothing to shed.
    Nothing,
    /// Became `nobody`, no capabilities (map reads need none here).
    Nobody,
    /// Stayed uid 0 with only these capabilities.
    Kept(Vec<Capability>),
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shed::Nothing => f.write_str("unprivileged from the start"),
            Shed::Nobody => write!(f, "now uid {NOBODY} (nobody), no capabilities"),
            Shed::Kept(caps) if caps.is_empty() => f.write_str("uid 0, no capabilities"),
            Shed::Kept(caps) => {
                let names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
                write!(f, "uid 0 keeping only {}", names.join(", "))
            }
        }
    }
}

/// Errors while shedding privileges.
#[derive(Debug, thiserror::Error)]
pub enum ShedError {
    /// A capability or credential call failed.
    #[error("shedding privileges after attaching: {0}")]
    Call(String),
    /// Threads already run: capabilities are per thread, so dropping them
    /// on one would leave the others privileged.
    #[error("shedding privileges after attaching: {0} threads already run")]
    Threads(u64),
}

fn call<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, ShedError> {
    r.map_err(|e| ShedError::Call(format!("{what}: {e}")))
}

/// Threads of this process.
fn threads() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_or(1, |s| s.threads)
}

/// Drops every privilege the command no longer needs: first measures
/// whether `read_map` works with no effective capability; if so (and
/// `needs` allows) runs `before_user_change` (e.g. loading kernel symbols)
/// and becomes `nobody`, else keeps CAP_BPF plus `needs.keep` as root.
/// Must run before the command starts threads of its own.
pub fn shed(
    read_map: impl Fn() -> bool,
    needs: &Needs,
    before_user_change: impl FnOnce(),
) -> Result<Shed, ShedError> {
    if !has(Capability::CAP_BPF) && !has(Capability::CAP_SYS_ADMIN) {
        return Ok(Shed::Nothing);
    }
    let n = threads();
    if n > 1 {
        return Err(ShedError::Threads(n));
    }
    // The measurement: effective capabilities are what the kernel checks,
    // and dropping them alone is reversible.
    let effective = call("capget", caps::read(None, CapSet::Effective))?;
    call("capset", caps::clear(None, CapSet::Effective))?;
    let reads_without_caps = read_map();
    call("capset", caps::set(None, CapSet::Effective, &effective))?;
    log::info!(
        "map reads with no capability: {}",
        if reads_without_caps {
            "allowed"
        } else {
            "refused"
        }
    );

    // Nothing exec'd from here on may gain privileges.
    // SAFETY: a plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(ShedError::Call(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        )));
    }
    if reads_without_caps && !needs.stay_root {
        before_user_change();
        // glibc applies these to every thread; leaving uid 0 clears every
        // capability set.
        // SAFETY: plain system calls.
        let failed = unsafe {
            libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
        };
        if failed {
            return Err(ShedError::Call(format!(
                "becoming nobody: {}",
                std::io::Error::last_os_error()
            )));
        }
        return Ok(Shed::Nobody);
    }
    let mut keep: HashSet<Capability> = needs.keep.iter().copied().collect();
    if !reads_without_caps {
        keep.insert(Capability::CAP_BPF);
    }
    // The bounding set first, while CAP_SETPCAP is still effective.
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            call("PR_CAPBSET_DROP", caps::drop(None, CapSet::Bounding, cap))?;
        }
    }
    call("clearing ambient", caps::clear(None, CapSet::Ambient))?;
    call(
        "clearing inheritable",
        caps::clear(None, CapSet::Inheritable),
    )?;
    call("capset", caps::set(None, CapSet::Effective, &keep))?;
    call("capset", caps::set(None, CapSet::Permitted, &keep))?;
    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(Shed::Kept(kept))
}

/// Shedding, for attached probes: kept here with the rest of the policy.
impl crate::probes::Probes {
    /// Whether one map lookup succeeds now: the measurement behind
    /// [`crate::privileges::shed`]. Touches nothing but the bpf() call.
    pub fn reads_maps(&self) -> bool {
        let Some(map) = self.ebpf.map("FILTER") else {
            return false;
        };
        aya::maps::Array::<_, u32>::try_from(map).is_ok_and(|filter| filter.get(&0, 0).is_ok())
    }

    /// Gives up every privilege the command no longer needs (see
    /// [`crate::privileges::shed`]) and starts loading the kernel's
    /// symbols for call-site names: before becoming `nobody` (who reads
    /// kallsyms without addresses), or after keeping CAP_SYSLOG for them.
    /// Call before the command starts threads.
    pub fn shed_privileges(
        &self,
        needs: &crate::privileges::Needs,
    ) -> Result<crate::privileges::Shed, crate::privileges::ShedError> {
        use crate::{
            attribution::symbols,
            privileges::{Needs, Shed},
        };
        let mut needs: Needs = needs.clone();
        if self.callers {
            needs.keep.push(caps::Capability::CAP_SYSLOG);
        }
        let shed = crate::privileges::shed(
            || self.reads_maps(),
            &needs,
            || {
                if self.callers {
                    symbols::load();
                }
            },
        )?;
        if self.callers && shed != Shed::Nobody {
            // Parsing kallsyms takes seconds under emulation: start now
            // rather than at the first view.
            symbols::preload();
        }
        log::info!("privileges after attaching: {shed}");
        Ok(shed)
    }
}
