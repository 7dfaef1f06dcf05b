//! aya's loader made ahead of need: `EbpfLoader::new` parses the whole
//! kernel BTF its own way, so it runs on a thread from the moment the
//! kernel's facts start being gathered, beside the agent's own BTF parse
//! and the kallsyms read, and the attach takes the loader when it loads.

use aya::EbpfLoader;

/// A fresh aya loader, made on a thread of its own from the start
/// ([`LoaderPrep::start`], in `KernelFacts::discover`): `EbpfLoader::new`
/// parses the whole kernel BTF (0.25-0.37 s on Debian 6.12 under TCG,
/// most of what "load+verify" spent in aya), which then overlaps the
/// agent's own BTF parse and the kallsyms read instead of following them.
pub struct LoaderPrep(Option<std::thread::JoinHandle<EbpfLoader<'static>>>);

impl LoaderPrep {
    /// Starts making the loader; made on first use where no thread can be
    /// had.
    pub fn start() -> Self {
        Self(
            std::thread::Builder::new()
                .name("aya-loader".into())
                .spawn(EbpfLoader::new)
                .ok(),
        )
    }

    /// The loader, waited for (made here if its thread died).
    pub fn take(&mut self) -> EbpfLoader<'static> {
        self.0
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }

    /// Gives up the loader unmade or unused (reduced mode, or attached
    /// already): its thread, if still parsing, drops it when done, so
    /// that the agent does not hold a second copy of the kernel's types.
    pub fn forget(&mut self) {
        self.0 = None;
    }
}
