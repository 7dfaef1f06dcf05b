//! `cargo xtask setup`: everything the build, the VM tests and the
//! benchmarks need, installed or fetched once (each step is idempotent).

use crate::{dashboard, install, kernels, qemu};

/// Everything: build tools, VM tools, the benchmark's peers, every kernel
/// of the matrix.
pub fn all() -> anyhow::Result<std::process::ExitCode> {
    install::ensure_build_tools()?;
    install::ensure_static_target()?;
    install::ensure_test_tools()?;
    dashboard::ensure_grafanalib()?;
    install::ensure_vm_tools()?;
    let qemu = qemu::ensure()?;
    println!("qemu: {}", qemu.binary.display());
    install::ensure_bench_tools()?;
    for spec in kernels::MATRIX_KERNELS {
        let k = kernels::ensure(spec)?;
        println!("kernel {spec}: {}", k.vmlinuz.display());
    }
    println!("setup: everything is in place");
    Ok(std::process::ExitCode::SUCCESS)
}
