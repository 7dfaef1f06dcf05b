//! What changes between kernel versions: pin rules that moved, and the
//! named deviations from the documented contract. Each entry says where the
//! boundary comes from; pinwatch has verified the ends on Debian 6.1 and
//! 6.12 kernels (`cargo xtask test`).

use serde::Serialize;

/// A kernel version, major.minor.patch (the upstream stable release).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Stable patch level (0 when unknown).
    pub patch: u32,
}

impl KernelVersion {
    /// `major.minor.0`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            patch: 0,
        }
    }

    /// `major.minor.patch`.
    pub const fn with_patch(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses the start of a release string such as `6.12.117+deb13-amd64`.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self {
            major,
            minor,
            patch,
        })
    }

    /// The upstream version from `/proc/version`: distributions such as
    /// Debian keep the ABI name in the release (`6.1.0-56-cloud-amd64`)
    /// and name the upstream stable release at the end (`Debian
    /// 6.1.192-2`); that one wins when present and of the same series.
    pub fn from_proc_version(proc_version: &str, release: &str) -> Option<Self> {
        let base = Self::parse(release)?;
        let upstream = proc_version
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "Debian" || w[0] == "Ubuntu")
            .filter_map(|w| Self::parse(w[1]))
            .find(|v| (v.major, v.minor) == (base.major, base.minor));
        Some(upstream.unwrap_or(base))
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A named, version-bound departure of a real kernel from the documented
/// contract ("returns the number of pages pinned, possibly fewer; 0 if
/// nr_pages <= 0; -errno only if nothing was pinned").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deviation {
    /// A negative `int nr_pages` to a fast variant is sign-extended and
    /// overflows the range check: -EOVERFLOW (or -EFAULT for tiny start
    /// addresses) instead of 0. 6.1 returns 0 as documented (or -EFAULT).
    FastNegativeNr,
    /// `pin_user_pages`, `_remote` and `_unlocked` return 0, not -EINVAL,
    /// when given invalid flags (6.4's `is_valid_gup_args`); 6.1 returns
    /// -EINVAL.
    PinInvalidArgsReturnZero,
    /// The non-fast variants take `unsigned long nr_pages` (since 4.x): a
    /// negative count is a huge one, and the walk runs until a page fails
    /// (the 2010 contract's `int nr_pages` returned 0).
    NegativeNrUnsigned,
}

impl Deviation {
    /// Stable kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Deviation::FastNegativeNr => "fast-negative-nr",
            Deviation::PinInvalidArgsReturnZero => "pin-invalid-args-return-zero",
            Deviation::NegativeNrUnsigned => "negative-nr-unsigned",
        }
    }

    /// One-line explanation.
    pub fn describe(self) -> &'static str {
        match self {
            Deviation::FastNegativeNr => {
                "negative nr_pages to a *_fast variant returns -EOVERFLOW/-EFAULT, not 0"
            }
            Deviation::PinInvalidArgsReturnZero => {
                "pin_user_pages{,_remote,_unlocked} return 0, not -EINVAL, on invalid flags"
            }
            Deviation::NegativeNrUnsigned => {
                "negative nr_pages to a non-fast variant is a huge unsigned count, not 0"
            }
        }
    }
}

/// Whether `/proc/PID/mem` accesses pass FOLL_FORCE: a build choice
/// (`CONFIG_PROC_MEM_*`), overridden by `proc_mem.force_override=`. Added in
/// 6.12 (41e8149c8892) and taken into the 6.1 stable series (Debian's
/// 6.1.0-57 configuration has it; 5.10.0-32's does not). Without it,
/// accesses are always forced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcMemForce {
    /// Always (`CONFIG_PROC_MEM_ALWAYS_FORCE`, the kernel's default).
    Always,
    /// Only when the caller is the target's active ptracer
    /// (`CONFIG_PROC_MEM_FORCE_PTRACE`): never for a process's own memory.
    Ptrace,
    /// Never (`CONFIG_PROC_MEM_NO_FORCE`).
    Never,
}

impl ProcMemForce {
    /// A `proc_mem.force_override=` value, as the kernel's table spells it.
    pub fn from_param(value: &str) -> Option<Self> {
        match value {
            "always" => Some(Self::Always),
            "ptrace" => Some(Self::Ptrace),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// Whether a process's access to its own `/proc/self/mem` is forced
    /// (it never ptraces itself, so only [`ProcMemForce::Always`] forces).
    pub fn forces_self(self) -> bool {
        self == Self::Always
    }
}

/// The version-dependent behaviour of one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rules {
    /// The kernel.
    pub version: KernelVersion,
    /// FOLL_PIN on the shared zero page counts in `nr_foll_pin_*` and the
    /// page's refcount. Off since 6.5 ("mm: Don't pin ZERO_PAGE in
    /// pin_user_pages()"). The 6.1 stable series changed in between: the
    /// 6.1.119 source counts it (`try_grab_page` has no zero check),
    /// Debian's 6.1.192 measurably does not; the boundary is placed after
    /// the release read.
    pub zero_page_pins_counted: bool,
    /// FOLL_LONGTERM|FOLL_WRITE pins of shared file mappings that need
    /// dirty tracking are refused (-EFAULT; the fast path rolls its grab
    /// back and falls back). Since 6.5 (`writable_file_mapping_allowed`).
    pub longterm_write_file_refused: bool,
    /// R/O FOLL_LONGTERM pins of non-anonymous pages (zero page, page cache)
    /// in private mappings unshare them into anonymous copies first (the
    /// fast path always falls back for them). Not in 6.1; in 6.5+.
    pub ro_longterm_unshares_non_anon: bool,
    /// A named deviation: see [`Deviation::PinInvalidArgsReturnZero`].
    pub pin_invalid_args_return_zero: bool,
    /// A named deviation: see [`Deviation::FastNegativeNr`] (6.1's range
    /// check returned 0 on overflow; later ones -EOVERFLOW).
    pub fast_negative_nr_overflow: bool,
    /// O_DIRECT takes user pages with FOLL_PIN (`iov_iter_extract_pages`,
    /// 6.3+) rather than FOLL_GET.
    pub dio_pins: bool,
    /// io_uring registers buffers with `pin_user_pages_fast` (6.10+) rather
    /// than `pin_user_pages` followed by its own VMA checks.
    pub io_uring_pins_fast: bool,
    /// A FOLL_FORCE write to a read-only private mapping follows the dirty
    /// PTE of an exclusive anonymous page without faulting
    /// (`can_follow_write_pte` checks PageAnonExclusive, 6.0's "mm/gup: fix
    /// FOLL_FORCE COW security issue and remove FOLL_COW"). Before, it
    /// follows only with FOLL_COW, which a first write fault sets: one fault
    /// (reusing the exclusive page, no copy) before the page is taken.
    pub force_write_follows_exclusive: bool,
    /// `madvise(MADV_POPULATE_READ/WRITE)` exists (5.14+); before, the
    /// advice is refused with -EINVAL and GUP is never called.
    pub madv_populate: bool,
    /// How `/proc/PID/mem` sets FOLL_FORCE: always before 6.1; from 6.1 on
    /// (where stable kernels may carry the choice) `None` until
    /// [`Rules::with_proc_mem_force`] is told it.
    pub proc_mem_force: Option<ProcMemForce>,
}

impl Rules {
    /// The rules of kernel `version`.
    pub fn for_version(version: KernelVersion) -> Self {
        let since = |major, minor| version >= KernelVersion::new(major, minor);
        Self {
            version,
            zero_page_pins_counted: !(since(6, 5)
                || (version.major, version.minor) == (6, 1)
                    && version >= KernelVersion::with_patch(6, 1, 120)),
            longterm_write_file_refused: since(6, 5),
            ro_longterm_unshares_non_anon: since(6, 5),
            pin_invalid_args_return_zero: since(6, 4),
            fast_negative_nr_overflow: since(6, 4),
            dio_pins: since(6, 3),
            io_uring_pins_fast: since(6, 10),
            force_write_follows_exclusive: since(6, 0),
            madv_populate: since(5, 14),
            proc_mem_force: (!since(6, 1)).then_some(ProcMemForce::Always),
        }
    }

    /// These rules with the kernel's `/proc/PID/mem` force mode as read
    /// from its configuration or command line (`None`: not readable, the
    /// version's default stays).
    pub fn with_proc_mem_force(mut self, mode: Option<ProcMemForce>) -> Self {
        if mode.is_some() {
            self.proc_mem_force = mode;
        }
        self
    }
}
