//! The eBPF object's tables without its programs: created and sized as an
//! attach creates them, nothing verified or attached. The sample path
//! (kernel maps -> snapshots -> deltas -> views) reads them exactly as it
//! reads an attached object's, so its cost can be measured natively on a
//! host whose kernel cannot run the probes (`benches/sample_cost.rs`).

use aya::{Ebpf, maps::Map};

use super::{AttachError, AttachOptions, KernelMaps, load::load_object, settings::Globals};
use crate::kernel::KernelFacts;

/// The object's maps, loaded with no program.
pub struct TablesOnly {
    ebpf: Ebpf,
}

impl TablesOnly {
    /// Creates the object's maps as [`super::attach`] would for `options`
    /// on this kernel (same object, sizes and globals).
    pub fn load(facts: &KernelFacts, options: &AttachOptions) -> Result<Self, AttachError> {
        let globals = Globals::for_kernel(facts, options);
        let (ebpf, _kernel_log, _) = load_object(facts, options, None, &globals)?;
        Ok(Self { ebpf })
    }

    /// The maps, for reading as the agent reads them.
    pub fn maps(&self) -> KernelMaps<'_> {
        KernelMaps::new(&self.ebpf, None, None)
    }

    /// The map `name`, to fill with entries the probes would have made.
    pub fn map_mut(&mut self, name: &str) -> Option<&mut Map> {
        self.ebpf.map_mut(name)
    }
}
