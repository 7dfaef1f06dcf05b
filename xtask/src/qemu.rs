//! The emulator the VMs run in: bookworm-backports' qemu 10, unpacked into
//! the cache and run with the shared libraries of Debian's own qemu 7.2.
//!
//! Why not Debian's 7.2: its multi-threaded TCG mishandles cross-modifying
//! code. Attaching or detaching probes (live patching of kernel text) while
//! another vCPU runs the patched function panics the guest with
//! "Oops: int3" in 2 of 3 boots (measured; see the environment notes), and a
//! fresh-clone matrix run lost a VM that way mid-test. qemu 10 ran the same
//! scenarios clean, keeps both vCPUs on their own host threads (unlike
//! `-accel tcg,thread=single`) and is fetched with a private apt state, so
//! the machine's sources stay untouched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup, workspace_root};

/// The suite qemu comes from.
const SUITE: &str = "bookworm-backports";
/// The packages unpacked: the emulator and its option ROMs / keymaps.
const PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-data"];
/// Where Debian's seabios package puts the BIOS images qemu-system-data lacks.
const SEABIOS_DIR: &str = "/usr/share/seabios";

/// An unpacked emulator.
pub struct Qemu {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// Firmware search path, in order (`-L` each).
    pub data_dirs: Vec<PathBuf>,
}

fn cache_dir() -> PathBuf {
    workspace_root().join("target/vm/qemu")
}

/// Unpacks qemu 10 once (idempotent) and returns how to run it.
pub fn ensure() -> anyhow::Result<Qemu> {
    // Debian's own qemu brings the shared libraries and seabios.
    setup::ensure_vm_tools()?;
    let root = cache_dir().join("root");
    let qemu = Qemu {
        binary: root.join("usr/bin/qemu-system-x86_64"),
        data_dirs: vec![root.join("usr/share/qemu"), PathBuf::from(SEABIOS_DIR)],
    };
    if runs(&qemu.binary) {
        return Ok(qemu);
    }
    unpack(&root).with_context(|| format!("fetching qemu from {SUITE}"))?;
    if !runs(&qemu.binary) {
        bail!(
            "{} from {SUITE} does not run here (`ldd` it for missing libraries)",
            qemu.binary.display()
        );
    }
    Ok(qemu)
}

fn runs(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
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

fn unpack(root: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: fetching qemu from {SUITE}");
    let state = cache_dir().join("apt");
    fs::create_dir_all(state.join("lists/partial"))?;
    fs::create_dir_all(state.join("cache/archives/partial"))?;
    let sources = state.join("sources.list");
    fs::write(&sources, format!("deb {} {SUITE} main\n", mirror()?))?;
    // A private apt state: the machine's sources and lists stay as they are.
    let private = |c: &mut Command| {
        c.arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", sources.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                state.join("lists").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Cache={}", state.join("cache").display()));
    };
    let mut update = Command::new("apt-get");
    private(&mut update);
    cmd::run(update.args(["update", "-q"]))?;
    let debs = state.join("debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    let mut download = Command::new("apt-get");
    private(&mut download);
    cmd::run(
        download
            .args(["download", "-q"])
            .args(PACKAGES)
            .current_dir(&debs),
    )?;
    let tmp = root.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    for deb in fs::read_dir(&debs)?.flatten() {
        cmd::run(Command::new("dpkg").arg("-x").arg(deb.path()).arg(&tmp))?;
    }
    fs::remove_dir_all(&debs)?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&tmp, root)?;
    Ok(())
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
