//! What xtask installs, idempotently: the nightly toolchain with rust-src
//! and bpf-linker (the eBPF build), and the Debian packages the VM runs,
//! the tests and the benchmark need. Each `ensure_*` checks first and
//! installs only what is missing, so every xtask command calls the ones it
//! needs.

use std::{path::PathBuf, process::Command, sync::Once};

use anyhow::Context as _;

use crate::{apt::ensure_apt, cmd, workspace};

/// Debian packages the build needs (bpf-linker links against LLVM 22).
const BUILD_PACKAGES: &[&str] = &["llvm-22-dev"];
/// Debian packages the VM runs need.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "tmux",
    "ncurses-base",
];
/// Debian packages the host tests need: promtool checks the exposition and
/// the rules (and Prometheus runs in the fleet VM test), systemd-analyze the
/// service unit.
const TEST_PACKAGES: &[&str] = &["prometheus", "systemd"];
/// Debian packages of the benchmark's peers (carried into the VM image with
/// their libraries).
const BENCH_PACKAGES: &[&str] = &["bpftrace", "libbpf-tools"];
/// The bpf-linker release known to build here against LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Nightly with rust-src, LLVM 22 and bpf-linker: what building the eBPF
/// object needs.
pub fn ensure_build_tools() -> anyhow::Result<()> {
    static DONE: Once = Once::new();
    let mut result = Ok(());
    DONE.call_once(|| {
        result = ensure_apt(BUILD_PACKAGES)
            .with_context(|| {
                format!(
                    "the eBPF build needs LLVM 22, nightly rust-src and bpf-linker \
                     {BPF_LINKER_VERSION} built for LLVM 22"
                )
            })
            .and_then(|()| ensure_nightly_rust_src())
            .and_then(|()| ensure_bpf_linker());
    });
    result
}

/// promtool, Prometheus and systemd-analyze, for the host and fleet tests;
/// kubernetes-validate for the DaemonSet (`pin-user/tests/deploy.rs`).
pub fn ensure_test_tools() -> anyhow::Result<()> {
    ensure_apt(TEST_PACKAGES)?;
    ensure_python_tool("kubernetes-validate", KUBERNETES_VALIDATE).map(drop)
}

/// The kubernetes-validate release (PyPI) the DaemonSet is checked with:
/// it carries the Kubernetes schemas, so no cluster is needed.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// A Python 3 virtualenv at `target/tools/NAME` holding `requirement`
/// (`package==version`), made once: kept when it already has it. Returns
/// the virtualenv's directory.
pub fn ensure_python_tool(name: &str, requirement: &str) -> anyhow::Result<PathBuf> {
    let venv = workspace::root().join("target/tools").join(name);
    let python = venv.join("bin/python");
    if python.exists()
        && cmd::output(Command::new(&python).args(["-m", "pip", "freeze"]))
            .is_ok_and(|frozen| frozen.lines().any(|l| l.trim() == requirement))
    {
        return Ok(venv);
    }
    println!("setup: installing {requirement} into {}", venv.display());
    cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .with_context(|| format!("{name} runs in a Python 3 virtualenv (python3-venv)"))?;
    cmd::run(Command::new(&python).args(["-m", "pip", "install", "--quiet", requirement]))?;
    Ok(venv)
}

/// qemu, busybox, cpio, xz, tmux.
pub fn ensure_vm_tools() -> anyhow::Result<()> {
    ensure_apt(VM_PACKAGES)
}

/// bpftrace and libbpf-tools (for `funclatency`), the benchmark's peers.
pub fn ensure_bench_tools() -> anyhow::Result<()> {
    ensure_apt(BENCH_PACKAGES)
}

/// The target of the release binary: static, no shared library needed.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The Rust standard library for [`STATIC_TARGET`] (rustup; musl's libc
/// comes with it, no C toolchain is needed).
pub fn ensure_static_target() -> anyhow::Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the static (musl) target")?;
    if installed.lines().any(|l| l.trim() == STATIC_TARGET) {
        return Ok(());
    }
    eprintln!("setup: adding the {STATIC_TARGET} target");
    cmd::run(Command::new("rustup").args(["target", "add", STATIC_TARGET]))
}

fn ensure_nightly_rust_src() -> anyhow::Result<()> {
    let components = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup is needed to build the eBPF object (nightly toolchain)")?;
    if !components.status.success() {
        eprintln!("setup: installing the nightly toolchain");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("the eBPF object needs a nightly toolchain with rust-src")?;
        return Ok(());
    }
    if !String::from_utf8_lossy(&components.stdout).contains("rust-src") {
        eprintln!("setup: adding rust-src to nightly");
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let current = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &current
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
                "--force",
            ])
            .env("PATH", path),
    )
}
