//! Stock Debian kernels for the VM matrix: resolve the newest package of a
//! series, download and unpack it once into the cache, keep the bzImage and
//! the modules the tests load (brd, for an O_DIRECT-capable ramdisk).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    apt::{self, PrivateApt},
    workspace,
};

/// The named kernels of the matrix.
pub const MATRIX_KERNELS: &[&str] = &[
    "debian-5.10",
    "debian-6.1",
    "debian-6.12",
    "debian-6.12-rt",
    "debian-6.18",
    "debian-7.3",
];

/// An unpacked kernel ready to boot.
pub struct Kernel {
    /// Display name (e.g. debian-6.12 or the path given).
    pub name: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// Uncompressed modules to put into the initramfs.
    pub modules: Vec<PathBuf>,
    /// Files of the packages copied into the guest at the same paths (the
    /// kernel's build configuration, which `pinwatch validate` reads).
    pub files: Option<PathBuf>,
}

/// Suites of Debian's archive the kernels beyond bookworm's come from:
/// bullseye (5.10), trixie-backports and sid (6.16 to 7.x).
const OTHER_SUITES: &[&str] = &["bullseye", "trixie-backports", "sid"];

/// A series of Debian's kernel packages: `debian-X.Y` (the cloud flavour)
/// or `debian-X.Y-rt` (PREEMPT_RT: BPF programs run preemptible).
#[derive(Debug, PartialEq)]
struct Series {
    major: u32,
    minor: u32,
    rt: bool,
}

impl Series {
    fn parse(spec: &str) -> Option<Self> {
        let rest = spec.strip_prefix("debian-")?;
        let (version, rt) = match rest.strip_suffix("-rt") {
            Some(v) => (v, true),
            None => (rest, false),
        };
        let (major, minor) = version.split_once('.')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
            rt,
        })
    }

    /// Anchored regex (for apt-cache) of the series' image packages.
    fn package_regex(&self) -> String {
        let Self { major, minor, rt } = self;
        let flavour = if *rt { "rt-amd64" } else { "cloud-amd64" };
        match (major, minor) {
            // Debian 11 and 12's stable kernels: ABI-numbered names.
            (5, 10) | (6, 1) => format!(r"^linux-image-{major}\.{minor}\.0-[0-9]+-{flavour}$"),
            // bookworm-backports' 6.12, the one the matrix has always run
            // (trixie's own 6.12 is +deb13).
            (6, 12) => format!(r"^linux-image-6\.12\.[0-9]+\+deb12-{flavour}$"),
            _ => format!(r"^linux-image-{major}\.{minor}\.[0-9]+\+deb[0-9]+-{flavour}$"),
        }
    }

    /// Where the series' packages are: the machine's own suites for
    /// bookworm's kernels, a private apt state for the others.
    fn archive(&self) -> PrivateApt {
        match (self.major, self.minor) {
            (6, 1) | (6, 12) => PrivateApt::machine(),
            _ => PrivateApt::new("kernels", OTHER_SUITES),
        }
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
    workspace::root().join("target").join("vm").join("kernels")
}

/// Sorts package names by their embedded version numbers.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Resolves, downloads and unpacks a kernel (cached), or takes a path.
pub fn ensure(spec: &str) -> anyhow::Result<Kernel> {
    let Some(series) = Series::parse(spec) else {
        let path = PathBuf::from(spec);
        if !path.is_file() {
            bail!(
                "unknown kernel {spec}: use debian-X.Y or debian-X.Y-rt for a series of Debian's \
                 archive (e.g. {}) or the path of a bzImage",
                MATRIX_KERNELS.join(", ")
            );
        }
        return Ok(Kernel {
            name: spec.to_string(),
            vmlinuz: path,
            modules: Vec::new(),
            files: None,
        });
    };
    apt::ensure_apt(&["xz-utils", "zstd"])?;
    let apt = series.archive();
    let regex = series.package_regex();
    let mut found = match apt.search(&regex) {
        Ok(found) => found,
        Err(e) => {
            // Offline: fall back to the newest cached.
            return newest_cached(spec)
                .with_context(|| format!("{e:#}; and no {spec} kernel is cached"));
        }
    };
    found.sort_by_key(|n| version_key(n));
    let Some(package) = found.pop() else {
        return newest_cached(spec).with_context(|| {
            format!("Debian's archive has no package matching {regex} ({spec}) and none is cached")
        });
    };
    let dir = cache_dir().join(spec).join(&package);
    // Unpacked with another module list or without the package files (an
    // older xtask): unpack again.
    let stamp = fs::read_to_string(dir.join("modules")).unwrap_or_default();
    if !dir.join("vmlinuz").is_file() || stamp != modules_stamp() || !dir.join(FILES).is_dir() {
        unpack(&apt, &package, &dir)?;
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
    let files = dir.join(FILES);
    Ok(Kernel {
        name: spec.to_string(),
        vmlinuz: dir.join("vmlinuz"),
        modules,
        files: files.is_dir().then_some(files),
    })
}

/// The directory of an unpacked kernel holding the package files the guest
/// gets at the same paths.
const FILES: &str = "files";

/// Downloads `package` (and, for the 7.x stubs, the `linux-binary-*`,
/// `linux-modules-*` and `linux-base-*` packages it depends on) and keeps
/// the kernel, the modules of [`MODULES`] (uncompressed) and the kernel's
/// build configuration at its package path (`boot/config-RELEASE`, or
/// `usr/lib/modules/RELEASE/config` from 7.x on).
fn unpack(apt: &PrivateApt, package: &str, dir: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: downloading {package}");
    let tmp = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let mut packages = vec![package.to_string()];
    // From 7.x on the image package is a stub: the kernel, the modules and
    // the configuration are in packages of their own.
    packages.extend(apt.depends(package)?.into_iter().filter(|d| {
        ["linux-binary-", "linux-modules-", "linux-base-"]
            .iter()
            .any(|p| d.starts_with(p))
    }));
    let root = tmp.join("root");
    apt::unpack_into(apt, &packages, &root)?;
    let (vmlinuz, release) = find_kernel(&root)?;
    fs::copy(&vmlinuz, tmp.join("vmlinuz"))?;
    let kernel_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release).join("kernel"))
        .find(|d| d.is_dir())
        .with_context(|| format!("no modules of {release} in {}", packages.join(" ")))?;
    for m in MODULES {
        let name = Path::new(m).file_name().expect("module file name");
        let plain = kernel_dir.join(m);
        let compressed = [("xz", "xz"), ("zst", "zstd")]
            .iter()
            .map(|(ext, tool)| (kernel_dir.join(format!("{m}.{ext}")), *tool))
            .find(|(p, _)| p.is_file());
        if plain.is_file() {
            fs::copy(&plain, tmp.join(name))?;
        } else if let Some((path, tool)) = compressed {
            let out = Command::new(tool).arg("-dc").arg(&path).output()?;
            if !out.status.success() {
                bail!("{tool} -d {} failed", path.display());
            }
            fs::write(tmp.join(name), out.stdout)?;
        }
    }
    let config = [
        format!("boot/config-{release}"),
        format!("usr/lib/modules/{release}/config"),
    ]
    .into_iter()
    .find(|c| root.join(c).is_file())
    .with_context(|| format!("no configuration of {release} in {}", packages.join(" ")))?;
    let kept = tmp.join(FILES).join(&config);
    fs::create_dir_all(kept.parent().expect("config path has a directory"))?;
    fs::copy(root.join(&config), &kept)?;
    fs::write(tmp.join("release"), &release)?;
    fs::write(tmp.join("modules"), modules_stamp())?;
    fs::remove_dir_all(&root)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    Ok(())
}

/// The kernel image of an unpacked package set and its release name:
/// `boot/vmlinuz-RELEASE` (up to 6.x) or `usr/lib/modules/RELEASE/vmlinuz`
/// (the 7.x `linux-binary-*` packages).
fn find_kernel(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    let in_boot = fs::read_dir(root.join("boot"))
        .into_iter()
        .flatten()
        .flatten();
    for entry in in_boot {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((entry.path(), release.to_string()));
        }
    }
    let in_modules = fs::read_dir(root.join("usr/lib/modules"))
        .into_iter()
        .flatten()
        .flatten();
    for entry in in_modules {
        let image = entry.path().join("vmlinuz");
        if image.is_file() {
            return Ok((image, entry.file_name().to_string_lossy().into_owned()));
        }
    }
    bail!("no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in the packages")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names() {
        let s = Series::parse("debian-7.3").unwrap();
        assert_eq!((s.major, s.minor, s.rt), (7, 3, false));
        assert!(Series::parse("debian-6.12-rt").unwrap().rt);
        assert_eq!(Series::parse("debian-7"), None);
        assert_eq!(Series::parse("/boot/vmlinuz"), None);
        let matches = |spec: &str, name: &str| {
            let re = Series::parse(spec).unwrap().package_regex();
            Command::new("sh")
                .args(["-c", "printf %s \"$1\" | grep -qE \"$0\"", &re, name])
                .status()
                .unwrap()
                .success()
        };
        assert!(matches("debian-5.10", "linux-image-5.10.0-46-cloud-amd64"));
        assert!(matches(
            "debian-6.12",
            "linux-image-6.12.117+deb12-cloud-amd64"
        ));
        assert!(!matches(
            "debian-6.12",
            "linux-image-6.12.57+deb13-cloud-amd64"
        ));
        assert!(matches("debian-7.3", "linux-image-7.3.4+deb13-cloud-amd64"));
        assert!(matches("debian-7.3-rt", "linux-image-7.3.4+deb13-rt-amd64"));
        assert!(!matches(
            "debian-7.3",
            "linux-image-7.3.4+deb13-cloud-amd64-dbg"
        ));
        assert!(!matches(
            "debian-6.1",
            "linux-image-6.18.5+deb13-cloud-amd64"
        ));
    }

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
