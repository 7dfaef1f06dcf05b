//! Following one command's process tree (`record -- CMD`): the fork and
//! exit tracepoints that keep the kernel's followed set current, and the
//! pruning of followed processes that are gone.

use aya::programs::TracePoint;

use super::{
    Probes, program,
    settings::{ensure_tracefs, fork_child_pid_offset, set_setting},
};

impl Probes {
    /// Counts only `pid` and the processes it forks from now on (`record
    /// -- CMD`): attaches the fork/exit tracepoints that keep the followed
    /// set current, adds `pid`, and turns the kernel-side filter on. Only
    /// for probes attached with [`super::AttachOptions::follow`]: the
    /// others were verified without the filter's test.
    pub fn follow(&mut self, pid: u32) -> anyhow::Result<()> {
        use anyhow::Context as _;
        ensure_tracefs();
        // The record's layout is the running kernel's (it moved in 6.13).
        if let Some(offset) = fork_child_pid_offset() {
            set_setting(
                &mut self.maps_mut(),
                pin_common::settings::SETTING_FORK_CHILD_PID_OFFSET,
                offset,
            )?;
        }
        for (name, event) in [
            ("track_fork", "sched_process_fork"),
            ("track_exit", "sched_process_exit"),
        ] {
            let tp: &mut TracePoint = program(&mut self.ebpf, name).map_err(anyhow::Error::msg)?;
            tp.load().with_context(|| format!("loading {name}"))?;
            tp.attach("sched", event).with_context(|| {
                format!("attaching to sched:{event} (is tracefs mounted at /sys/kernel/tracing?)")
            })?;
        }
        let mut maps = self.maps_mut();
        maps.tracked()?
            .insert(pid, 1, 0)
            .with_context(|| format!("adding the command to {}", pin_common::maps::TRACKED))?;
        maps.filter()?
            .set(0, 1, 0)
            .context("turning the process filter on")?;
        Ok(())
    }

    /// Forgets followed processes that are gone (no `/proc/PID`): the
    /// kernel side keeps a process followed after its leader thread exits,
    /// since its other threads go on. Run each interval while following;
    /// a pid reused in between is dropped by the fork hook.
    pub fn prune_followed(&mut self) {
        let mut maps = self.maps_mut();
        let Ok(mut tracked) = maps.tracked() else {
            return;
        };
        let gone: Vec<u32> = tracked
            .keys()
            .flatten()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in gone {
            let _ = tracked.remove(&pid);
        }
    }
}
