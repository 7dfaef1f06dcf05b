//! A private apt state: packages from Debian suites other than the
//! machine's own (bullseye's 5.10, trixie-backports' and sid's newer
//! kernels, bookworm-backports' qemu), fetched through the machine's own
//! mirror with their own sources list, package lists and cache under
//! `target/vm/apt/NAME`. The machine's sources and lists stay untouched.
//! The same interface runs over the machine's own state for the suites it
//! already has (bookworm's kernels).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    sync::Once,
};

use anyhow::{Context as _, bail};

use crate::{cmd, workspace};

/// One private apt state over a fixed set of suites, or the machine's own.
pub struct PrivateApt {
    /// None: the machine's own state.
    dir: Option<PathBuf>,
    suites: &'static [&'static str],
}

/// Names of the states already updated by this xtask process.
static UPDATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl PrivateApt {
    /// The state called `name` (a directory under target/vm/apt) over
    /// `suites` of the machine's Debian mirror.
    pub fn new(name: &str, suites: &'static [&'static str]) -> Self {
        Self {
            dir: Some(workspace::root().join("target/vm/apt").join(name)),
            suites,
        }
    }

    /// The machine's own apt state (its sources, its lists).
    pub fn machine() -> Self {
        Self {
            dir: None,
            suites: &[],
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let Some(dir) = &self.dir else {
            return c;
        };
        let path = |p: &str| dir.join(p).display().to_string();
        c.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", path("sources.list")))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", path("lists")))
            .arg("-o")
            .arg(format!("Dir::Cache={}", path("cache")));
        c
    }

    /// Whether the package lists were ever downloaded.
    fn has_lists(&self) -> bool {
        let Some(dir) = &self.dir else {
            return true;
        };
        fs::read_dir(dir.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// `apt-get update` of this state, at most once per xtask run.
    pub fn update(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.dir else {
            return apt_update_once();
        };
        let key = dir.display().to_string();
        if UPDATED.lock().is_ok_and(|done| done.contains(&key)) {
            return Ok(());
        }
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        let mirror = mirror()?;
        let sources: String = self
            .suites
            .iter()
            .map(|s| format!("deb {mirror} {s} main\n"))
            .collect();
        fs::write(dir.join("sources.list"), sources)?;
        cmd::run(self.command("apt-get").args(["update", "-q"]))
            .with_context(|| format!("updating the package lists of {}", self.suites.join(", ")))?;
        if let Ok(mut done) = UPDATED.lock() {
            done.push(key);
        }
        Ok(())
    }

    /// Package names matching an anchored regex (`apt-cache search
    /// --names-only`), updating the lists first if there are none or
    /// nothing matches in them.
    pub fn search(&self, regex: &str) -> anyhow::Result<Vec<String>> {
        let search = || -> anyhow::Result<Vec<String>> {
            let out =
                cmd::output(
                    self.command("apt-cache")
                        .args(["search", "--names-only", regex]),
                )?;
            Ok(out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect())
        };
        if !self.has_lists() {
            self.update()?;
        }
        let found = search()?;
        if !found.is_empty() {
            return Ok(found);
        }
        self.update()?;
        search()
    }

    /// The packages `package` depends on (first alternative of each).
    pub fn depends(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let out = cmd::output(self.command("apt-cache").args(["depends", package]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(|d| d.trim().to_string())
            .filter(|d| !d.starts_with('<'))
            .collect())
    }

    /// Downloads `packages` into `dest` (the .deb files). A list that has
    /// gone stale (the mirror dropped the version it names) is updated and
    /// the download tried once more.
    pub fn download(&self, packages: &[String], dest: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dest)?;
        let download = || {
            cmd::run(
                self.command("apt-get")
                    .args(["download", "-q"])
                    .args(packages)
                    .current_dir(dest),
            )
        };
        if download().is_ok() {
            return Ok(());
        }
        self.update()?;
        download()
    }
}

/// Downloads `packages` and unpacks them all into `root` (`dpkg -x`).
pub fn unpack_into(apt: &PrivateApt, packages: &[String], root: &Path) -> anyhow::Result<()> {
    let debs = root.with_extension("debs");
    let _ = fs::remove_dir_all(&debs);
    apt.download(packages, &debs)?;
    let mut unpacked = 0;
    for deb in fs::read_dir(&debs)?.flatten() {
        if deb.path().extension().is_some_and(|e| e == "deb") {
            cmd::run(Command::new("dpkg").arg("-x").arg(deb.path()).arg(root))?;
            unpacked += 1;
        }
    }
    fs::remove_dir_all(&debs)?;
    if unpacked != packages.len() {
        bail!(
            "apt-get download of {} left {unpacked} .deb files",
            packages.join(" ")
        );
    }
    Ok(())
}

/// The Debian mirror the machine already uses (deb822 or one-line sources).
fn mirror() -> anyhow::Result<String> {
    let mut texts = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in entries.flatten() {
            texts.push(fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .context("no Debian mirror (a URI ending in /debian) in /etc/apt/sources*")
}

/// The first URI ending in `/debian` of a sources file, either format.
fn mirror_in(sources: &str) -> Option<String> {
    sources.lines().find_map(|l| {
        let l = l.trim();
        let uri = if let Some(rest) = l.strip_prefix("URIs:") {
            rest.split_whitespace().next()
        } else if let Some(rest) = l.strip_prefix("deb ") {
            rest.split_whitespace().find(|w| w.contains("://"))
        } else {
            None
        }?;
        uri.trim_end_matches('/')
            .ends_with("/debian")
            .then(|| uri.to_string())
    })
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs missing Debian packages with apt-get.
pub fn ensure_apt(packages: &[&str]) -> anyhow::Result<()> {
    if !cmd::have("dpkg-query") || !cmd::have("apt-get") {
        bail!(
            "this is not a Debian/Ubuntu system; install the equivalents of: {}",
            packages.join(" ")
        );
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing packages: {}; run as root or `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    apt_update_once()?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// `apt-get update`, at most once per xtask run.
pub fn apt_update_once() -> anyhow::Result<()> {
    static DONE: Once = Once::new();
    let mut result = Ok(());
    DONE.call_once(|| {
        result = cmd::run(Command::new("apt-get").args(["update", "-q"]));
    });
    result
}

#[cfg(test)]
mod tests {
    use super::mirror_in;

    #[test]
    fn mirror_from_either_sources_format() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\n\n\
                      Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line = "# comment\ndeb [arch=amd64] http://ftp.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(one_line).as_deref(),
            Some("http://ftp.example/debian/")
        );
        assert_eq!(mirror_in("deb http://ftp.example/ubuntu jammy main"), None);
    }
}
