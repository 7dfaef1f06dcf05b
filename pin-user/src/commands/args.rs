//! Command-line pieces more than one command shares: the attach flags,
//! the choice of reduced mode, and the parsers for durations and intervals.

use std::time::Duration;

use crate::probes::{AttachMode, AttachOptions, MapCapacities};

/// Options shared by the commands that attach probes.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// Probe mechanism: fentry/fexit where possible, else kprobe/kretprobe;
    /// kprobe-multi attaches every function at once (fastest start, Linux
    /// 5.18-6.13 built with fprobe).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
    /// Do not attribute calls to their kernel call site (saves a short
    /// stack read on every outermost call).
    #[arg(long)]
    pub no_callers: bool,
    /// Time how long pinned pages stay pinned (costs a map update per
    /// pinned page and per release; hooks gup_put_folio).
    #[arg(long)]
    pub lifetimes: bool,
    /// The sizes of the kernel tables that grow with the work.
    #[command(flatten)]
    pub capacities: MapCapacities,
}

/// Which tasks the probes count, for the commands that watch the host
/// (not `validate` or `probes`, whose own calls must be seen).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScopeArgs {
    /// Count only the tasks of this cgroup (v2) and the cgroups below it,
    /// filtered in the kernel: a path under the cgroup2 mount (usually
    /// /sys/fs/cgroup), absolute or relative to it (e.g.
    /// system.slice/docker-ID.scope, kubepods.slice).
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup)]
    pub cgroup: Option<std::path::PathBuf>,
}

/// Options shared by the commands that show figures from the probes or,
/// when the kernel refuses them (or `--reduced` asks), from the kernel's
/// own counters.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Attach options.
    #[command(flatten)]
    pub attach: AttachArgs,
    /// Which tasks count.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Run without probes, from /proc/vmstat and per-process VmPin only
    /// (what pinwatch does by itself when the kernel refuses probes).
    #[arg(long)]
    pub reduced: bool,
}

impl AttachArgs {
    /// The probe options these flags ask for.
    pub fn options(&self) -> AttachOptions {
        AttachOptions {
            mode: self.attach,
            callers: !self.no_callers,
            lifetimes: self.lifetimes,
            cgroup: None,
            follow: false,
            events: false,
            capacities: self.capacities,
        }
    }

    /// The probe options these flags ask for, counting only the tasks
    /// `scope` names.
    pub fn options_in(&self, scope: &ScopeArgs) -> AttachOptions {
        AttachOptions {
            cgroup: scope.cgroup.clone(),
            ..self.options()
        }
    }
}

impl SourceArgs {
    /// The probe options these flags ask for.
    pub fn options(&self) -> AttachOptions {
        self.attach.options_in(&self.scope)
    }
}

/// Checks that `s` names a cgroup v2 directory and returns its full path.
pub fn parse_cgroup(s: &str) -> Result<std::path::PathBuf, crate::error::UsageError> {
    let root = crate::cgroups::cgroup2_root();
    crate::cgroups::CgroupFilter::open(s, root)
        .map(|chosen| root.join(chosen.path.trim_start_matches('/')))
        .map_err(|e| crate::error::UsageError(format!("--cgroup: {e}")))
}

/// Parses a duration such as `30s` or `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 30s, 5m)"))?;
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

/// Parses an interval such as `1s`, `250ms`, `2m`; must be at least 10ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 1s, 500ms, 2m)"))?;
    if d < Duration::from_millis(10) {
        return Err(format!("interval {s} is below the 10ms minimum"));
    }
    Ok(d)
}
