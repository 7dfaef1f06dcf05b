//! Shedding privileges once the probes are attached: the measurement
//! [`crate::privileges::shed`] needs (can this process still read the
//! maps?) and what the probes need kept (CAP_SYSLOG for call-site names).
//! The policy itself is [`crate::privileges`]'.

use super::Probes;

impl Probes {
    /// Whether one map lookup succeeds now: the measurement behind
    /// [`crate::privileges::shed`]. Touches nothing but the bpf() call.
    pub fn reads_maps(&self) -> bool {
        self.maps()
            .filter()
            .is_ok_and(|filter| filter.get(&0, 0).is_ok())
    }

    /// Gives up every privilege the command no longer needs (see
    /// [`crate::privileges::shed`]), opening the kernel's symbols for
    /// call-site names before becoming `nobody` (who reads kallsyms
    /// without addresses); otherwise CAP_SYSLOG is kept for them and the
    /// first lookup opens them. Reads what per-CPU map reads need first.
    /// Call before the command starts threads.
    pub fn shed_privileges(
        &self,
        needs: &crate::privileges::Needs,
    ) -> Result<crate::privileges::Shed, crate::privileges::ShedError> {
        use crate::{
            kernel::symbols,
            privileges::{Needs, ShedError},
        };
        // aya reads the possible CPUs on each thread's first per-CPU map
        // read, then caches it for the thread: read it now, on the thread
        // that reads the maps, while every file is still reachable, and
        // name the file if even that fails (aya would report a refused
        // bpf_map_lookup_elem instead).
        aya::util::nr_cpus().map_err(|(path, source)| ShedError::Read {
            path: path.to_string(),
            source,
        })?;
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
        log::info!("privileges after attaching: {shed}");
        // Start-up is over: what it freed can go.
        crate::agent_memory::return_freed_memory();
        Ok(shed)
    }
}
