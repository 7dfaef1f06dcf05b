//! The running kernel's build configuration and boot parameters, read
//! where the reference model's predictions depend on them (whether
//! `/proc/PID/mem` passes FOLL_FORCE) and where the VM tests ask what a
//! kernel was built with.

use std::path::PathBuf;

use procfs::{ConfigSetting, FromRead as _, KernelConfig};

use crate::model::ProcMemForce;

/// Where distributions install the configuration of kernel `release`:
/// `/boot/config-RELEASE` (Debian up to 6.x, most others) and the
/// module directory (Debian's 7.x `linux-base-*` packages).
fn config_paths(release: &str) -> [PathBuf; 3] {
    [
        PathBuf::from(format!("/boot/config-{release}")),
        PathBuf::from(format!("/usr/lib/modules/{release}/config")),
        PathBuf::from(format!("/lib/modules/{release}/config")),
    ]
}

/// The kernel's `/proc/PID/mem` force mode: `proc_mem.force_override=` on
/// the command line wins (an unknown value keeps the build's choice, as in
/// fs/proc/base.c), else the `CONFIG_PROC_MEM_*` choice of the first
/// configuration file found (none set: always, the kernel's default).
/// `None` when neither says (no readable configuration, no override).
pub fn proc_mem_force(release: &str) -> Option<ProcMemForce> {
    let cmdline = procfs::cmdline().unwrap_or_default();
    let built = config_paths(release)
        .iter()
        .find_map(|path| KernelConfig::from_file(path).ok())
        .map(|config| built_proc_mem_force(&config));
    resolve(&cmdline, built)
}

/// Whether kernel `release` was built with `option` (`=y`), from the first
/// configuration file found; `None` when none can be read.
pub fn built_with(release: &str, option: &str) -> Option<bool> {
    config_paths(release)
        .iter()
        .find_map(|path| KernelConfig::from_file(path).ok())
        .map(|config| config.0.get(option) == Some(&ConfigSetting::Yes))
}

/// The command-line override applied over the build's choice.
fn resolve(cmdline: &[String], built: Option<ProcMemForce>) -> Option<ProcMemForce> {
    let overridden = cmdline
        .iter()
        .filter_map(|arg| arg.strip_prefix("proc_mem.force_override="))
        .filter_map(ProcMemForce::from_param)
        .next_back();
    overridden.or(built)
}

/// The build's choice, in the kernel's order of precedence.
fn built_proc_mem_force(config: &KernelConfig) -> ProcMemForce {
    let set = |name: &str| config.0.get(name) == Some(&ConfigSetting::Yes);
    if set("CONFIG_PROC_MEM_NO_FORCE") {
        ProcMemForce::Never
    } else if set("CONFIG_PROC_MEM_FORCE_PTRACE") {
        ProcMemForce::Ptrace
    } else {
        ProcMemForce::Always
    }
}

#[cfg(test)]
mod tests {
    use procfs::FromBufRead as _;

    use super::*;

    fn config(text: &str) -> KernelConfig {
        KernelConfig::from_buf_read(text.as_bytes()).expect("config text")
    }

    #[test]
    fn build_choice_follows_the_kernel_precedence() {
        let debian_7 = config(
            "# CONFIG_PROC_MEM_ALWAYS_FORCE is not set\nCONFIG_PROC_MEM_FORCE_PTRACE=y\n\
             # CONFIG_PROC_MEM_NO_FORCE is not set\n",
        );
        assert_eq!(built_proc_mem_force(&debian_7), ProcMemForce::Ptrace);
        let never = config("CONFIG_PROC_MEM_NO_FORCE=y\n");
        assert_eq!(built_proc_mem_force(&never), ProcMemForce::Never);
        // A 6.1 configuration has no such option: always forced.
        let old = config("CONFIG_MMU=y\n");
        assert_eq!(built_proc_mem_force(&old), ProcMemForce::Always);
    }

    #[test]
    fn command_line_overrides_unless_unknown() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let built = Some(ProcMemForce::Ptrace);
        assert_eq!(
            resolve(&args("ro proc_mem.force_override=always"), built),
            Some(ProcMemForce::Always)
        );
        assert_eq!(
            resolve(&args("proc_mem.force_override=bogus"), built),
            built
        );
        assert_eq!(
            resolve(&args("proc_mem.force_override=never"), None),
            Some(ProcMemForce::Never)
        );
        assert_eq!(resolve(&args("quiet"), None), None);
    }
}
