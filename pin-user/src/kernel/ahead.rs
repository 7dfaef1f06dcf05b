//! Start-up work begun ahead of need on a thread of its own, so that it
//! overlaps the rest of start-up instead of following it: aya's loader,
//! whose constructor parses the kernel BTF its own way (0.25-0.37 s on
//! Debian 6.12 under TCG). fentry's attach needs no second aya parse:
//! see `probes::attach_ids`.

use aya::EbpfLoader;

/// A value being made on a thread of its own; made on the caller's
/// thread where no thread could be had, or the thread died.
pub struct Ahead<T> {
    thread: Option<std::thread::JoinHandle<T>>,
    make: fn() -> T,
}

impl<T: Send + 'static> Ahead<T> {
    /// Starts making the value with `make` on a thread named `name`.
    fn start(name: &str, make: fn() -> T) -> Self {
        log::info!("starting {name} ahead of need");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(make)
            .ok();
        Self { thread, make }
    }

    /// The value, waited for (made here if its thread is gone).
    pub fn take(&mut self) -> T {
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_else(self.make)
    }

    /// Gives the value up unused (reduced mode, or taken already): its
    /// thread, if still working, drops it when done, so that the agent
    /// does not hold another copy of the kernel's types.
    pub fn forget(&mut self) {
        self.thread = None;
    }
}

/// aya's loader: `EbpfLoader::new` parses the whole kernel BTF its own
/// way (to apply CO-RE relocations, of which pinwatch's objects have
/// none, but aya 0.14 always does it). Started in `KernelFacts::discover`,
/// beside the agent's own BTF parse and the kallsyms read, and taken by
/// the load.
pub fn aya_loader() -> Ahead<EbpfLoader<'static>> {
    Ahead::start("aya-loader", EbpfLoader::new)
}
