//! Builds the eBPF objects (crate `pin-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker, so that `cargo build -p pin-user` alone
//! yields a `pinwatch` with them embedded: the full object and the
//! `baseline` one (feature of the same name) for kernels that lack task
//! storage, `bpf_loop` or the function-argument helpers in tracing
//! programs. `cargo xtask setup` installs what this needs.
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
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    // aya-build names its output after the binary; each build is copied
    // away before the next overwrites it.
    for (features, object) in [
        (&[][..], "pinwatch-full.bpf.o"),
        (&["baseline"][..], "pinwatch-baseline.bpf.o"),
    ] {
        aya_build::build_ebpf(
            [Package {
                name: "pin-ebpf",
                root_dir: ebpf_dir,
                features,
                ..Default::default()
            }],
            Toolchain::default(),
        )?;
        std::fs::copy(out_dir.join("pin-ebpf"), out_dir.join(object))
            .with_context(|| format!("copying the eBPF build to {object}"))?;
    }
    Ok(())
}
