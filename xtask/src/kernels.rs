//! Stock Debian kernels for the VM matrix: resolve the newest package of a
//! series, download and unpack it once into the cache, keep the bzImage and
//! the modules the tests load (brd, for an O_DIRECT-capable ramdisk).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup, workspace_root};

/// The named kernels of the matrix.
pub const MATRIX_KERNELS: &[&str] = &["debian-6.1", "debian-6.12", "debian-6.12-rt"];

/// The kernels the overhead benchmark runs on by default (the stock cloud
/// kernels users run most).
pub const BENCH_KERNELS: &[&str] = &["debian-6.1", "debian-6.12"];

/// An unpacked kernel ready to boot.
pub struct Kernel {
    /// Display name (e.g. debian-6.12 or the path given).
    pub name: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// Uncompressed modules to put into the initramfs.
    pub modules: Vec<PathBuf>,
}

/// Package name pattern (anchored regex for apt-cache) of each series.
fn package_regex(spec: &str) -> Option<&'static str> {
    match spec {
        "debian-6.1" => Some(r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$"),
        "debian-6.12" => Some(r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$"),
        // PREEMPT_RT: BPF programs run preemptible (migration disabled).
        "debian-6.12-rt" => Some(r"^linux-image-6\.12\.[0-9]+\+deb12-rt-amd64$"),
        _ => None,
    }
}

/// Modules the VM init script loads, relative to lib/modules/RELEASE/kernel
/// (in name order: configfs before null_blk, which needs it). brd is an
/// O_DIRECT-capable ramdisk that completes I/O in the submitting task;
/// null_blk (irqmode=2) completes every request from a timer interrupt.
const MODULES: &[&str] = &[
    "drivers/block/brd.ko",
    "fs/configfs/configfs.ko",
    "drivers/block/null_blk/null_blk.ko",
];

/// The module list a cached kernel was unpacked with, one path a line.
fn modules_stamp() -> String {
    MODULES.join("\n")
}

fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("vm").join("kernels")
}

/// Sorts package names by their embedded version numbers.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn newest_package(regex: &str) -> anyhow::Result<Option<String>> {
    let search = |refresh: bool| -> anyhow::Result<Vec<String>> {
        if refresh {
            setup::apt_update_once()?;
        }
        let out = cmd::output(Command::new("apt-cache").args(["search", "--names-only", regex]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    };
    let mut found = search(false)?;
    if found.is_empty() {
        found = search(true)?;
    }
    found.sort_by_key(|n| version_key(n));
    Ok(found.pop())
}

/// Resolves, downloads and unpacks a kernel (cached), or takes a path.
pub fn ensure(spec: &str) -> anyhow::Result<Kernel> {
    let Some(regex) = package_regex(spec) else {
        let path = PathBuf::from(spec);
        if !path.is_file() {
            bail!(
                "unknown kernel {spec}: use debian-6.1, debian-6.12, debian-6.12-rt or the path of a bzImage"
            );
        }
        return Ok(Kernel {
            name: spec.to_string(),
            vmlinuz: path,
            modules: Vec::new(),
        });
    };
    setup::ensure_apt(&["xz-utils"])?;
    let package = match newest_package(regex) {
        Ok(Some(p)) => p,
        Ok(None) | Err(_) => {
            // Offline or apt lists missing: fall back to the newest cached.
            return newest_cached(spec).with_context(|| {
                format!("no package matches {regex} in apt-cache and none is cached")
            });
        }
    };
    let dir = cache_dir().join(spec).join(&package);
    // Unpacked with another module list (an older xtask): unpack again.
    let stamp = fs::read_to_string(dir.join("modules")).unwrap_or_default();
    if !dir.join("vmlinuz").is_file() || stamp != modules_stamp() {
        unpack(&package, &dir)?;
    }
    load(spec, &dir)
}

fn newest_cached(spec: &str) -> anyhow::Result<Kernel> {
    let base = cache_dir().join(spec);
    let mut dirs: Vec<PathBuf> = fs::read_dir(&base)
        .with_context(|| format!("reading {}", base.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("vmlinuz").is_file())
        .collect();
    dirs.sort_by_key(|p| version_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    let dir = dirs.pop().context("nothing cached")?;
    load(spec, &dir)
}

fn load(spec: &str, dir: &Path) -> anyhow::Result<Kernel> {
    let mut modules = Vec::new();
    for m in MODULES {
        let name = Path::new(m).file_name().expect("module file name");
        let path = dir.join(name);
        if path.is_file() {
            modules.push(path);
        }
    }
    Ok(Kernel {
        name: spec.to_string(),
        vmlinuz: dir.join("vmlinuz"),
        modules,
    })
}

fn unpack(package: &str, dir: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: downloading {package}");
    let tmp = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&tmp),
    )?;
    let deb = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = tmp.join("root");
    cmd::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    let boot = fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no boot/vmlinuz-* in the package")?;
    fs::copy(&boot, tmp.join("vmlinuz"))?;
    let release = boot
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let kernel_dir = root.join("lib/modules").join(&release).join("kernel");
    for m in MODULES {
        let name = Path::new(m).file_name().expect("module file name");
        let plain = kernel_dir.join(m);
        let xz = kernel_dir.join(format!("{m}.xz"));
        if plain.is_file() {
            fs::copy(&plain, tmp.join(name))?;
        } else if xz.is_file() {
            let out = Command::new("xz").arg("-dc").arg(&xz).output()?;
            if !out.status.success() {
                bail!("xz -d {} failed", xz.display());
            }
            fs::write(tmp.join(name), out.stdout)?;
        }
    }
    fs::write(tmp.join("release"), &release)?;
    fs::write(tmp.join("modules"), modules_stamp())?;
    fs::remove_dir_all(&root)?;
    fs::remove_file(&deb)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_by_version() {
        let mut names = [
            "linux-image-6.12.9+deb12-cloud-amd64".to_string(),
            "linux-image-6.12.117+deb12-cloud-amd64".to_string(),
            "linux-image-6.12.101+deb12-cloud-amd64".to_string(),
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(
            names.last().unwrap(),
            "linux-image-6.12.117+deb12-cloud-amd64"
        );
    }
}
