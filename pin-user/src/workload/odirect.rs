//! O_DIRECT read/write: the block layer takes the user buffer's pages
//! (6.3+: iov_iter_extract_pages -> pin_user_pages_fast; older kernels a
//! FOLL_GET path through get_user_pages_fast).

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _},
    path::PathBuf,
};

use super::{PAGE_SIZE, Prepared, UserBuffer, WorkloadError, WorkloadOptions, expect_len};

/// Logical block alignment O_DIRECT needs for buffer addresses.
const DIO_ALIGN: u64 = 512;

pub struct Odirect {
    buf: UserBuffer,
    file: File,
    path: PathBuf,
    write: bool,
}

impl Odirect {
    pub fn new(opts: &WorkloadOptions, write: bool) -> Result<Self, WorkloadError> {
        let path = opts.file.clone().ok_or_else(|| {
            WorkloadError::Usage(
                "--file PATH is required: a file on a filesystem with O_DIRECT support \
                 (ext4, xfs, btrfs) or a block device such as /dev/ram0"
                    .into(),
            )
        })?;
        if !opts.offset.is_multiple_of(DIO_ALIGN) {
            return Err(WorkloadError::Usage(format!(
                "O_DIRECT needs --offset to be a multiple of {DIO_ALIGN}, got {}",
                opts.offset
            )));
        }
        let bytes = opts.pages * PAGE_SIZE;
        let is_block = std::fs::metadata(&path)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        if !is_block {
            // Reads of holes are served by zeroing the buffer, not by I/O
            // (no GUP): give the file real blocks first.
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(WorkloadError::sys(format!("open {}", path.display())))?;
            let have = f.metadata().map(|m| m.len()).unwrap_or(0);
            if have < bytes {
                f.write_all(&vec![0x5a; (bytes - have) as usize])
                    .and_then(|()| f.sync_all())
                    .map_err(WorkloadError::sys(format!("fill {}", path.display())))?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => WorkloadError::Usage(format!(
                    "{}: the filesystem refuses O_DIRECT (tmpfs does); use ext4/xfs or a block device",
                    path.display()
                )),
                _ => WorkloadError::Sys { call: format!("open {} O_DIRECT", path.display()), error: e },
            })?;
        let mut buf = UserBuffer::new(opts.pages + 1)?;
        if !opts.cold {
            buf.warm();
        }
        Ok(Self {
            buf,
            file,
            path,
            write,
        })
    }
}

impl Prepared for Odirect {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.buf.drop_pages()?;
        }
        let len = (opts.pages * PAGE_SIZE) as usize;
        // SAFETY: the slice lies inside our live mapping (pages + 1 pages).
        let slice = unsafe { std::slice::from_raw_parts_mut(self.buf.addr(opts.offset), len) };
        let (call, got) = if self.write {
            ("O_DIRECT pwrite", self.file.write_at(slice, 0))
        } else {
            ("O_DIRECT pread", self.file.read_at(slice, 0))
        };
        let got = got.map_err(WorkloadError::sys(call))?;
        expect_len(call, got as isize, len)
    }

    fn zero_page(&self, opts: &WorkloadOptions) -> bool {
        // A write's source pages are only read: never-written ones are the
        // zero page.
        opts.cold && self.write
    }

    fn file(&self) -> Option<String> {
        Some(self.path.display().to_string())
    }
}
