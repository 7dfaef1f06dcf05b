//! A minimal initramfs: busybox, the binaries under test with the shared
//! libraries `ldd` lists, kernel modules, an /init that mounts what pinwatch
//! needs, runs one command and powers off.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Printed by /init with the command's exit status.
pub const EXIT_MARKER: &str = "PINWATCH_VM_EXIT=";

/// Printed by /init once the guest's userspace runs (before the command).
pub const BOOT_MARKER: &str = "pinwatch-vm: kernel ";

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
# The unified cgroup hierarchy, where systemd hosts and container runtimes
# have it (the per-cgroup tests make their slices and scopes there).
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
for m in /lib/modules/*.ko; do
  [ -f "$m" ] || continue
  case "$m" in
    */brd.ko) insmod "$m" rd_nr=1 rd_size=65536 ;;
    */null_blk.ko) insmod "$m" nr_devices=1 gb=1 irqmode=2 completion_nsec=50000 ;;
    *) insmod "$m" ;;
  esac
done
echo "pinwatch-vm: kernel $(uname -r), $(nproc) cpus"
cd /tmp
sh /cmd
echo "PINWATCH_VM_EXIT=$?"
poweroff -f
"#;

/// Host directories copied to the same path in the image, when present:
/// terminal descriptions and the C.UTF-8 locale, which tmux needs (the
/// dashboard test).
const HOST_FILES: &[&str] = &["/lib/terminfo", "/usr/lib/locale/C.utf8"];

/// Builds `out` (an uncompressed newc cpio) holding `binaries` in /bin,
/// `modules` in /lib/modules, the tree `files` at the root and `/cmd` =
/// `command`. Uncompressed because the guest inflates under emulation: a
/// 6.12 boot to its first command took 18.6 s from a `gzip -1` image that
/// carried the VM suite with its debug info, 12.7 s from the same files
/// uncompressed (10.7 s and 8.2 s with the suite stripped).
pub fn build(
    out: &Path,
    binaries: &[PathBuf],
    modules: &[PathBuf],
    files: Option<&Path>,
    command: &str,
) -> anyhow::Result<()> {
    let root = out.with_extension("root");
    let _ = fs::remove_dir_all(&root);
    for dir in ["bin", "lib/modules", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let busybox = which("busybox")?;
    install(&busybox, &root.join("bin/busybox"))?;
    for bin in binaries {
        let name = bin.file_name().context("binary without a name")?;
        install(bin, &root.join("bin").join(name))?;
        for lib in shared_libs(bin)? {
            let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
            if !dest.exists() {
                fs::create_dir_all(dest.parent().expect("library has a directory"))?;
                install(&lib, &dest)?;
            }
        }
    }
    for host in HOST_FILES.iter().map(Path::new).filter(|p| p.exists()) {
        copy_tree(host, &root.join(host.strip_prefix("/").expect("absolute")))?;
    }
    if let Some(files) = files {
        copy_tree(files, &root)?;
    }
    for module in modules {
        fs::copy(
            module,
            root.join("lib/modules")
                .join(module.file_name().context("module name")?),
        )?;
    }
    write_exec(&root.join("init"), INIT)?;
    fs::write(root.join("cmd"), format!("{command}\n"))?;
    let script = format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet > '{}'",
        root.display(),
        out.display()
    );
    cmd::run(Command::new("sh").args(["-c", &script]))?;
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// Copies a file or directory tree, following symlinks.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if from.is_dir() {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if from.is_file() {
        fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    }
    Ok(())
}

/// A program's path on this host, or an error that says how to get it.
pub fn which(program: &str) -> anyhow::Result<PathBuf> {
    let out = cmd::output(Command::new("sh").args(["-c", &format!("command -v {program}")]))
        .with_context(|| format!("{program} not found: run `cargo xtask setup`"))?;
    Ok(PathBuf::from(out.trim()))
}

fn install(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to).with_context(|| format!("copy {} -> {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn write_exec(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Shared libraries (and the loader) a dynamic binary needs, per `ldd`.
fn shared_libs(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed", bin.display());
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VM runner tells a boot death from a test failure by these
    /// lines; /init must print both.
    #[test]
    fn init_prints_the_markers_the_runner_reads() {
        assert!(INIT.contains(&format!("echo \"{BOOT_MARKER}")));
        assert!(INIT.contains(EXIT_MARKER));
    }
}
