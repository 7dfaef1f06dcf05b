//! What this binary is, for `--version` and bug reports: the package
//! version, the git revision it was built from and the SHA-256 of the eBPF
//! objects embedded in it (all set by build.rs at build time).

/// `pinwatch --version` (`-V`): version, revision, short object hashes.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("PINWATCH_GIT_REVISION"),
    ", eBPF ",
    env!("PINWATCH_EBPF_FULL_SHORT"),
    "/",
    env!("PINWATCH_EBPF_BASELINE_SHORT"),
    ")"
);

/// `pinwatch --version` in full: every hash whole, one per line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ngit revision: ",
    env!("PINWATCH_GIT_REVISION"),
    "\neBPF object (full): sha256:",
    env!("PINWATCH_EBPF_FULL_SHA256"),
    "\neBPF object (baseline): sha256:",
    env!("PINWATCH_EBPF_BASELINE_SHA256"),
    "\ntarget: ",
    env!("PINWATCH_TARGET"),
);
