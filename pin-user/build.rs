//! Builds the eBPF object (crate `pin-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker, so that `cargo build -p pin-user` alone
//! yields a `pinwatch` with the object embedded. `cargo xtask setup`
//! installs what this needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("pin-user has no parent directory"))?
        .join("pin-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // The object also depends on the shared types.
    println!("cargo:rerun-if-changed={manifest_dir}/../pin-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "pin-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
