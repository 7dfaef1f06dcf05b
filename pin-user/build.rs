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
    // aya-build compiles in a target directory under OUT_DIR, and each
    // build of pin-user (clippy's, debug, release, musl) has an OUT_DIR of
    // its own: each compiled the objects and `core` for BPF anew, about
    // 60 s apiece, four times in CI. The workspace's .cargo/config.toml
    // names one directory for them all, where the second build finds the
    // objects fresh. Without it (pin-user built on its own), OUT_DIR.
    println!("cargo:rerun-if-env-changed={SHARED_DIR}");
    let (stage, lock) = match std::env::var_os(SHARED_DIR).map(std::path::PathBuf::from) {
        Some(shared) => match locked(&shared) {
            Ok(lock) => (shared, Some(lock)),
            // A source tree it cannot write to (mounted read-only, say):
            // this build's own OUT_DIR, as without the setting.
            Err(e) => {
                println!(
                    "cargo:warning=building the eBPF objects under OUT_DIR: {e:#} \
                     (set {SHARED_DIR} to a writable directory to share them)"
                );
                (out_dir.clone(), None)
            }
        },
        None => (out_dir.clone(), None),
    };
    // aya-build builds and copies to where OUT_DIR says; this process
    // runs no other thread that reads the environment.
    // SAFETY: single-threaded here (see above).
    unsafe { std::env::set_var("OUT_DIR", &stage) };
    // aya-build names its output after the binary; each build is copied
    // away before the next overwrites it. Removed first, so that a build
    // aya-build skips (AYA_BUILD_SKIP) fails here rather than embedding
    // the other feature set's object.
    let built = stage.join("pin-ebpf");
    for (features, object) in [
        (&[][..], "pinwatch-full.bpf.o"),
        (&["baseline"][..], "pinwatch-baseline.bpf.o"),
    ] {
        match std::fs::remove_file(&built) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow!("removing {}: {e}", built.display()));
            }
            _ => {}
        }
        aya_build::build_ebpf(
            [Package {
                name: "pin-ebpf",
                root_dir: ebpf_dir,
                features,
                ..Default::default()
            }],
            Toolchain::default(),
        )?;
        strip_debug_info(&built, &out_dir.join(object))?;
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("OUT_DIR", &out_dir) };
    drop(lock);
    build_info(&manifest_dir, &out_dir)
}

/// Where the workspace's .cargo/config.toml puts the eBPF build that every
/// build of pin-user shares.
const SHARED_DIR: &str = "PINWATCH_EBPF_TARGET_DIR";

/// Creates the shared directory and takes its lock, held while building
/// and copying: two builds of pin-user at once would otherwise copy each
/// other's object.
fn locked(shared: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(shared).with_context(|| format!("creating {}", shared.display()))?;
    let path = shared.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(lock)
}

/// LLVM's strip (`llvm-strip -g`, as libbpf's own builds do): the first of
/// these on PATH. `cargo xtask setup` installs LLVM 22 for bpf-linker.
const STRIP: [&str; 2] = ["llvm-strip-22", "llvm-strip"];

/// Copies the eBPF build `from` to `to` without its DWARF sections. The
/// BTF that bpf-linker made from them (`.BTF`, `.BTF.ext`) stays. The DWARF
/// is most of an object (the full one: 4.8 MiB, 1.1 MiB stripped), which
/// `pinwatch` would embed twice and parse at every start for nothing: the
/// kernel and aya read only the BTF.
fn strip_debug_info(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    for strip in STRIP {
        match std::process::Command::new(strip)
            .arg("--strip-debug")
            .arg(from)
            .arg("-o")
            .arg(to)
            .status()
        {
            Ok(status) if status.success() => return Ok(()),
            Ok(status) => {
                return Err(anyhow!(
                    "{strip} --strip-debug {}: {status}",
                    from.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow!("{strip}: {e}")),
        }
    }
    Err(anyhow!(
        "none of {} found to strip the eBPF objects; run `cargo xtask setup`",
        STRIP.join(", ")
    ))
}

/// What `pinwatch --version` says (`crate::build_info`): the SHA-256 of
/// each embedded object, the git revision and the target.
fn build_info(manifest_dir: &str, out_dir: &std::path::Path) -> anyhow::Result<()> {
    use sha2::{Digest as _, Sha256};
    for (object, name) in [
        ("pinwatch-full.bpf.o", "FULL"),
        ("pinwatch-baseline.bpf.o", "BASELINE"),
    ] {
        let bytes =
            std::fs::read(out_dir.join(object)).with_context(|| format!("reading {object}"))?;
        let hash = format!("{:x}", Sha256::digest(&bytes));
        println!("cargo:rustc-env=PINWATCH_EBPF_{name}_SHA256={hash}");
        println!("cargo:rustc-env=PINWATCH_EBPF_{name}_SHORT={}", &hash[..12]);
    }
    println!(
        "cargo:rustc-env=PINWATCH_TARGET={}",
        std::env::var("TARGET").context("TARGET")?
    );
    println!(
        "cargo:rustc-env=PINWATCH_GIT_REVISION={}",
        git_revision(manifest_dir)
    );
    Ok(())
}

/// HEAD's commit (12 hex digits), or "unknown" outside a git checkout (a
/// source tarball). Like cargo's own --version it names the commit, not
/// local changes; the eBPF hashes identify the objects exactly. The build
/// script runs again when HEAD moves (the files watched exist: a missing
/// one would rerun it, and rebuild the objects, on every build).
fn git_revision(manifest_dir: &str) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(["-C", manifest_dir])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let Some(revision) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let head_ref = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).unwrap_or_default();
        for file in ["HEAD", "packed-refs", head_ref.as_str()] {
            let path = std::path::Path::new(&git_dir).join(file);
            if !file.is_empty() && path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    revision
}
