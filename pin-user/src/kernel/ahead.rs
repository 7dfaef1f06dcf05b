//! Start-up work begun ahead of need on a thread of its own, so that it
//! overlaps the rest of start-up instead of following it: aya's loader,
//! made without the parse of the kernel BTF its constructor would do
//! (see [`aya_loader`]). fentry's attach needs no aya parse either: see
//! `probes::attach_ids`.

use aya::EbpfLoader;

/// Where aya's constructor looks for the kernel BTF, an absolute path.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A directory that holds no `sys/kernel/btf/vmlinux`: the kernel BTF's
/// own (its entries are files, one per module). As a thread's root it
/// hides [`KERNEL_BTF`] from that thread alone.
const ROOT_WITHOUT_KERNEL_BTF: &str = "/sys/kernel/btf";

/// A value being made on a thread of its own; made on the caller's
/// thread where no thread could be had, or the thread died.
pub struct Ahead<T> {
    thread: Option<std::thread::JoinHandle<T>>,
    /// How the value is made on the caller's thread instead.
    make_here: fn() -> T,
}

impl<T: Send + 'static> Ahead<T> {
    /// Starts making the value with `make` on a thread named `name`;
    /// `make_here` makes it on the caller's thread if that fails.
    fn start(name: &str, make: fn() -> T, make_here: fn() -> T) -> Self {
        log::info!("starting {name} ahead of need");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(make)
            .ok();
        Self { thread, make_here }
    }

    /// The value, waited for (made here if its thread is gone).
    pub fn take(&mut self) -> T {
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_else(self.make_here)
    }

    /// Gives the value up unused (reduced mode, or taken already): its
    /// thread, if still working, drops it when done.
    pub fn forget(&mut self) {
        self.thread = None;
    }
}

/// aya's loader, made on a thread started in `KernelFacts::discover` and
/// taken by the load.
///
/// aya 0.14's `EbpfLoader::new` always parses the whole kernel BTF, to
/// apply CO-RE relocations, of which pinwatch's objects have none (a test
/// in `probes::load` checks); the loader uses it for nothing else. That
/// parse cost 0.25-0.37 s of a CPU at start-up on Debian 6.12 under TCG,
/// and the load waited about 0.1 s for it after the agent's own parse
/// (BENCHMARKS.md, "Start-up, twelfth look"). aya 0.16 parses only when
/// an object needs it (aya-rs/aya#1639) but needs a newer rustc than
/// this project builds with, so the constructor runs on a thread that
/// cannot see the file ([`hide_kernel_btf`]) and finds none. Where that
/// cannot be arranged, the loader is made as aya makes it, parse and all.
pub fn aya_loader() -> Ahead<EbpfLoader<'static>> {
    Ahead::start("aya-loader", loader_without_kernel_btf, EbpfLoader::new)
}

/// [`EbpfLoader::new`] on a thread of its own, with the kernel BTF out of
/// its sight where that can be arranged. Never call it on a thread that
/// does anything else: its root may be changed.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    match hide_kernel_btf() {
        Ok(()) => log::info!("aya's loader made without a parse of {KERNEL_BTF}"),
        Err(e) => log::info!("aya's loader parses {KERNEL_BTF} ({e})"),
    }
    EbpfLoader::new()
}

/// Makes [`ROOT_WITHOUT_KERNEL_BTF`] the calling thread's root, after
/// giving the thread a root of its own (`unshare(CLONE_FS)` copies the
/// root, working directory and umask for this thread alone), so that no
/// other thread's paths change. Needs CAP_SYS_CHROOT, which an agent that
/// loads tracing programs as root has; without it (or where a seccomp
/// filter refuses `unshare`) the thread is left as it was.
fn hide_kernel_btf() -> std::io::Result<()> {
    // SAFETY: a plain syscall; it changes only this thread's filesystem
    // context, and only when it succeeds.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Only now: with the root shared, this would move every thread's.
    std::os::unix::fs::chroot(ROOT_WITHOUT_KERNEL_BTF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `loader` holds a parse of the kernel BTF (its `Debug`
    /// shows the field, as `None` when there is none).
    fn has_kernel_btf(loader: &EbpfLoader<'_>) -> bool {
        !format!("{loader:?}").starts_with("EbpfLoader { btf: None")
    }

    #[test]
    fn the_thread_made_loader_skips_the_kernel_btf_and_the_process_root_stays() {
        let kernel_has_btf = std::path::Path::new(KERNEL_BTF).exists();
        // SAFETY: a plain syscall.
        let root = unsafe { libc::geteuid() } == 0;
        let loader = aya_loader().take();
        // As root the thread hides the file; otherwise it cannot, and the
        // loader is aya's own, with the parse where the kernel has BTF.
        assert_eq!(has_kernel_btf(&loader), kernel_has_btf && !root);
        // The new root stayed on the loader's thread: this one still
        // resolves paths from the process's root.
        assert!(std::path::Path::new("/proc/self/status").exists());
    }
}
