//! The cgroup `--cgroup` names, opened and checked for the kernel filter.

use std::{
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Component, Path, PathBuf},
};

/// `statfs().f_type` of a cgroup2 filesystem (`CGROUP2_SUPER_MAGIC`,
/// include/uapi/linux/magic.h). Our own constant because libc's is typed
/// `c_long` or `c_uint` depending on the target.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// Errors opening a cgroup for the kernel filter.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The path climbs out of the hierarchy with "..".
    #[error("cgroup path {path} may not contain \"..\" (give a path under {})", root.display())]
    Escapes {
        /// The path as given.
        path: String,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// Nothing is at the path.
    #[error(
        "cgroup {} does not exist (see {} for the hierarchy, or systemd-cgls)",
        path.display(),
        root.display()
    )]
    NotFound {
        /// The directory looked for.
        path: PathBuf,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// The path is a file, e.g. a cgroup's control file.
    #[error(
        "{} is not a cgroup (a cgroup is a directory under {})",
        path.display(),
        root.display()
    )]
    NotADirectory {
        /// The path opened.
        path: PathBuf,
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// The directory is not on a cgroup2 filesystem.
    #[error(
        "{} is not a cgroup v2 directory (pinwatch needs the unified hierarchy mounted at {})",
        path.display(),
        root.display()
    )]
    NotCgroup2 {
        /// The directory opened.
        path: PathBuf,
        /// Where pinwatch expected the cgroup2 mount.
        root: PathBuf,
    },
    /// Opening or examining the directory failed otherwise (permissions).
    #[error("cannot open cgroup {}: {source}", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A cgroup chosen on the command line (`--cgroup PATH`), opened for the
/// kernel filter.
#[derive(Debug)]
pub struct CgroupFilter {
    /// The directory, open (its fd goes into the kernel's cgroup array).
    pub dir: File,
    /// Its id (the directory's inode number).
    pub id: u64,
    /// Its path relative to the cgroup2 root.
    pub path: String,
}

impl CgroupFilter {
    /// Opens `path`: as given if it lies under `root`, the cgroup2 mount;
    /// otherwise relative to `root`, with or without a leading '/' (so
    /// "/system.slice" and "system.slice" both mean the same cgroup, the
    /// form `/proc/PID/cgroup` prints). Checks that it is a directory on a
    /// cgroup2 filesystem: an id from any other directory would silently
    /// match nothing in the kernel.
    pub fn open(path: &str, root: &Path) -> Result<CgroupFilter, CgroupError> {
        if Path::new(path)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return Err(CgroupError::Escapes {
                path: path.to_string(),
                root: root.to_path_buf(),
            });
        }
        let full = if Path::new(path).starts_with(root) {
            PathBuf::from(path)
        } else {
            root.join(path.trim_start_matches('/'))
        };
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => CgroupError::NotFound {
                    path: full.clone(),
                    root: root.to_path_buf(),
                },
                io::ErrorKind::NotADirectory => CgroupError::NotADirectory {
                    path: full.clone(),
                    root: root.to_path_buf(),
                },
                _ => CgroupError::Open {
                    path: full.clone(),
                    source: e,
                },
            })?;
        let open_error = |source| CgroupError::Open {
            path: full.clone(),
            source,
        };
        if !is_cgroup2(&dir).map_err(open_error)? {
            return Err(CgroupError::NotCgroup2 {
                path: full,
                root: root.to_path_buf(),
            });
        }
        let id = dir.metadata().map_err(open_error)?.ino();
        let rel = full.strip_prefix(root).unwrap_or(&full);
        let path = format!("/{}", rel.to_string_lossy().trim_matches('/'));
        Ok(CgroupFilter { dir, id, path })
    }
}

/// Whether the open file is on a cgroup2 filesystem.
pub(super) fn is_cgroup2(file: &File) -> io::Result<bool> {
    // SAFETY: `statfs` is a plain C struct, valid all-zero; fstatfs
    // only writes into it, and `file` keeps the descriptor open.
    let (rc, st) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::fstatfs(file.as_raw_fd(), &mut st), st)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(st.f_type).is_ok_and(|t| t == CGROUP2_SUPER_MAGIC))
}
