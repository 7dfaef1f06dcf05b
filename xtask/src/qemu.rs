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

use crate::{
    apt::{self, PrivateApt},
    install, workspace,
};

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
    workspace::root().join("target/vm/qemu")
}

/// Unpacks qemu 10 once (idempotent) and returns how to run it.
pub fn ensure() -> anyhow::Result<Qemu> {
    // Debian's own qemu brings the shared libraries and seabios.
    install::ensure_vm_tools()?;
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

fn unpack(root: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: fetching qemu from {SUITE}");
    let apt = PrivateApt::new("qemu", &[SUITE]);
    let tmp = root.with_extension("partial");
    let _ = fs::remove_dir_all(&tmp);
    let packages: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    apt::unpack_into(&apt, &packages, &tmp)?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&tmp, root)?;
    Ok(())
}
