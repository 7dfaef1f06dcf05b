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
//!
//! Root becomes `nobody` only where `nobody` can still read the files the
//! agent goes on reading ([`READ_AFTER_SHEDDING`]); a guest whose `/` only
//! root may search keeps uid 0 instead. A regular user running a binary
//! given file capabilities (`setcap cap_bpf,cap_perfmon,cap_syslog+ep`)
//! has no CAP_SETUID to change users and no need to: it stays that user
//! and drops every capability it no longer needs.

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
    /// A regular user (file capabilities): stayed that user with only
    /// these capabilities.
    User {
        /// The effective uid.
        uid: u32,
        /// The capabilities left.
        kept: Vec<Capability>,
    },
}

/// "CAP_BPF, CAP_SYSLOG".
fn names(caps: &[Capability]) -> String {
    let names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    names.join(", ")
}

impl std::fmt::Display for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shed::Nothing => f.write_str("unprivileged from the start"),
            Shed::Nobody => write!(f, "now uid {NOBODY} (nobody), no capabilities"),
            Shed::Kept(caps) if caps.is_empty() => f.write_str("uid 0, no capabilities"),
            Shed::Kept(caps) => write!(f, "uid 0 keeping only {}", names(caps)),
            Shed::User { uid, kept } if kept.is_empty() => {
                write!(f, "unprivileged user {uid}, no capabilities")
            }
            Shed::User { uid, kept } => {
                write!(f, "unprivileged user {uid} keeping only {}", names(kept))
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
    /// A file the agent needs after shedding could not be read before.
    #[error("shedding privileges after attaching: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn call<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, ShedError> {
    r.map_err(|e| ShedError::Call(format!("{what}: {e}")))
}

/// Threads of this process.
/// The process's thread count once threads already joined are gone: a
/// joined thread (attach runs on threads) still counts for a moment, since
/// the kernel wakes the joiner before it unhashes the exiting thread. Waits
/// at most 1 s for the count to reach 1.
fn threads_settled() -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let n = threads();
        if n <= 1 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn threads() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_or(1, |s| s.threads)
}

/// The uid when the process runs as a regular user: no uid (real,
/// effective, saved) is 0, so it holds only what file capabilities gave it
/// and may not change users.
fn regular_user() -> Option<u32> {
    let (mut real, mut effective, mut saved) = (0, 0, 0);
    // SAFETY: getresuid writes three uids it is given valid pointers to.
    if unsafe { libc::getresuid(&mut real, &mut effective, &mut saved) } != 0 {
        return None;
    }
    (real != 0 && effective != 0 && saved != 0).then_some(effective)
}

/// Files the agent goes on reading after shedding: aya reads the possible
/// CPUs on each thread's first per-CPU map read; interval snapshots read
/// the kernel's pin counters (the ancestors of `/proc/vmstat` also lead to
/// each `/proc/PID/status`, read for VmPin). `/proc/sys/vm/stat_refresh`
/// is root's whoever asks, so it is no reason to stay root.
pub const READ_AFTER_SHEDDING: &[&str] = &["/sys/devices/system/cpu/possible", "/proc/vmstat"];

/// Why a user who neither owns nor shares a group with anything on the
/// way (`nobody`) could not read `path`: the first directory others may
/// not search, or the file others may not read. Mode bits only (ACLs and
/// security modules aside); a file root cannot see either is no reason to
/// stay root, so it gives None.
pub fn blocked_for_others(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    };
    let file_mode = mode(path)?;
    // Both the path as written and as resolved are walked: a symlink on
    // the way is searched through its own directories and its target's.
    let mut walks = vec![path.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(path)
        && real != path
    {
        walks.push(real);
    }
    for walk in &walks {
        for dir in walk.ancestors().skip(1) {
            if let Some(m) = mode(dir)
                && m & 0o001 == 0
            {
                return Some(format!(
                    "others may not search {} (mode {m:04o})",
                    dir.display()
                ));
            }
        }
    }
    (file_mode & 0o004 == 0).then(|| {
        format!(
            "others may not read {} (mode {file_mode:04o})",
            path.display()
        )
    })
}

/// Keeps only `keep` (those of it still permitted) in the effective and
/// permitted sets, clears the inheritable and ambient ones, and drops the
/// rest of the bounding set where CAP_SETPCAP allows it. Without
/// CAP_SETPCAP (a regular user) the bounding set stays: with
/// `no_new_privs` set, no exec can gain what it bounds anyway.
fn keep_only(keep: &HashSet<Capability>) -> Result<Vec<Capability>, ShedError> {
    let permitted = call("capget", caps::read(None, CapSet::Permitted))?;
    let keep: HashSet<Capability> = keep.intersection(&permitted).copied().collect();
    // The bounding set first, while CAP_SETPCAP is still effective.
    if has(Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                call("PR_CAPBSET_DROP", caps::drop(None, CapSet::Bounding, cap))?;
            }
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
    Ok(kept)
}

/// Drops every privilege the command no longer needs: first measures
/// whether `read_map` works with no effective capability. A regular user
/// (file capabilities) then keeps CAP_BPF if reads need it plus
/// `needs.keep`, and stays who it is. Root, if reads need nothing, `needs`
/// allows and `nobody` can read [`READ_AFTER_SHEDDING`], runs
/// `before_user_change` (e.g. loading kernel symbols) and becomes `nobody`;
/// else it keeps CAP_BPF (if reads need it) plus `needs.keep` as root.
/// Must run before the command starts threads of its own.
pub fn shed(
    read_map: impl Fn() -> bool,
    needs: &Needs,
    before_user_change: impl FnOnce(),
) -> Result<Shed, ShedError> {
    if !has(Capability::CAP_BPF) && !has(Capability::CAP_SYS_ADMIN) {
        return Ok(Shed::Nothing);
    }
    let n = threads_settled();
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
    let mut keep: HashSet<Capability> = needs.keep.iter().copied().collect();
    if !reads_without_caps {
        keep.insert(Capability::CAP_BPF);
    }
    if let Some(uid) = regular_user() {
        // No CAP_SETUID to become anyone else. `before_user_change` is not
        // run: whatever it starts (kernel symbols load on a thread of their
        // own) would keep every capability the process started with, since
        // only a change of uid clears them in all threads at once; what it
        // needs stays in `needs.keep` instead and is used after shedding.
        let kept = keep_only(&keep)?;
        return Ok(Shed::User { uid, kept });
    }
    if reads_without_caps && !needs.stay_root {
        let blocked = READ_AFTER_SHEDDING
            .iter()
            .find_map(|path| blocked_for_others(std::path::Path::new(path)));
        match blocked {
            Some(why) => log::info!("staying uid 0 rather than becoming nobody: {why}"),
            None => {
                before_user_change();
                // glibc applies these to every thread; leaving uid 0
                // clears every capability set.
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
        }
    }
    Ok(Shed::Kept(keep_only(&keep)?))
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn blocked_for_others_names_the_first_obstacle() {
        let dir = tempfile::tempdir().unwrap();
        // tempdir makes its directory 0700: open it as the test's root.
        chmod(dir.path(), 0o755);
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let file = sub.join("possible");
        fs::write(&file, "0-3\n").unwrap();
        chmod(&sub, 0o755);
        chmod(&file, 0o444);
        assert_eq!(blocked_for_others(&file), None);

        chmod(&sub, 0o750);
        let why = blocked_for_others(&file).expect("sub blocks");
        assert!(why.contains(&sub.display().to_string()), "{why}");
        assert!(why.contains("0750"), "{why}");

        chmod(&sub, 0o711);
        chmod(&file, 0o440);
        let why = blocked_for_others(&file).expect("the file blocks");
        assert!(why.contains(&file.display().to_string()), "{why}");
        assert!(why.contains("0440"), "{why}");

        // What root cannot see either is no reason to stay root.
        assert_eq!(blocked_for_others(&sub.join("absent")), None);
    }

    #[test]
    fn blocked_for_others_walks_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        // link -> hidden/open: open itself is searchable, its parent not.
        let hidden = dir.path().join("hidden");
        let open = hidden.join("open");
        fs::create_dir_all(&open).unwrap();
        fs::write(open.join("vmstat"), "").unwrap();
        chmod(&open.join("vmstat"), 0o444);
        chmod(&open, 0o755);
        chmod(&hidden, 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let why = blocked_for_others(&link.join("vmstat")).expect("the target's parent blocks");
        assert!(why.contains(&hidden.display().to_string()), "{why}");
        chmod(&hidden, 0o711);
        assert_eq!(blocked_for_others(&link.join("vmstat")), None);
    }

    #[test]
    fn shed_outcomes_read_as_sentences() {
        assert_eq!(
            Shed::User {
                uid: 1000,
                kept: vec![]
            }
            .to_string(),
            "unprivileged user 1000, no capabilities"
        );
        assert_eq!(
            Shed::User {
                uid: 1000,
                kept: vec![Capability::CAP_SYSLOG, Capability::CAP_BPF]
            }
            .to_string(),
            "unprivileged user 1000 keeping only CAP_SYSLOG, CAP_BPF"
        );
        assert_eq!(
            Shed::Kept(vec![Capability::CAP_BPF]).to_string(),
            "uid 0 keeping only CAP_BPF"
        );
    }

    #[test]
    fn what_the_agent_reads_after_shedding_is_absolute() {
        // Relative paths would be walked from wherever pinwatch started.
        assert!(READ_AFTER_SHEDDING.iter().all(|p| p.starts_with('/')));
    }
}
