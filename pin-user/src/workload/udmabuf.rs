//! udmabuf: a dma-buf made of a memfd's pages. `UDMABUF_CREATE` pins them
//! with one `memfd_pin_folios` call (6.11+, FOLL_PIN|FOLL_LONGTERM); closing
//! the dma-buf releases them, one `unpin_folio` per folio.

use std::{
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{PAGE_SIZE, Prepared, WorkloadError, WorkloadOptions};

/// `struct udmabuf_create` (include/uapi/linux/udmabuf.h).
#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// `UDMABUF_FLAGS_CLOEXEC`.
const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// `_IOW('u', 0x42, struct udmabuf_create)` (as `libc::Ioctl`: an unsigned
/// long on glibc, an int on musl; the bits are what the kernel reads).
const UDMABUF_CREATE: libc::Ioctl = ((1_u32 << 30)
    | ((std::mem::size_of::<UdmabufCreate>() as u32) << 16)
    | ((b'u' as u32) << 8)
    | 0x42) as libc::Ioctl;

pub struct Udmabuf {
    device: File,
    memfd: OwnedFd,
}

impl Udmabuf {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        if opts.offset != 0 || opts.cold {
            return Err(WorkloadError::Usage(
                "udmabuf takes whole pages of a memfd: no --offset, no --cold".into(),
            ));
        }
        let device = File::options()
            .read(true)
            .write(true)
            .open("/dev/udmabuf")
            .map_err(WorkloadError::sys(
                "open /dev/udmabuf (a kernel with CONFIG_UDMABUF)",
            ))?;
        // SAFETY: memfd_create with a static name; the descriptor is owned
        // below.
        let fd = unsafe {
            libc::memfd_create(
                c"pinwatch-udmabuf".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(WorkloadError::last_os("memfd_create"));
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = (opts.pages * PAGE_SIZE) as libc::off_t;
        // SAFETY: sizing and sealing our own memfd. udmabuf wants it sealed
        // against shrinking (and not against writes).
        unsafe {
            if libc::ftruncate(memfd.as_raw_fd(), len) != 0 {
                return Err(WorkloadError::last_os("ftruncate(memfd)"));
            }
            if libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) != 0 {
                return Err(WorkloadError::last_os("fcntl(F_ADD_SEALS, F_SEAL_SHRINK)"));
            }
        }
        Ok(Self { device, memfd })
    }
}

impl Prepared for Udmabuf {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        let create = UdmabufCreate {
            memfd: self.memfd.as_raw_fd() as u32,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: 0,
            size: opts.pages * PAGE_SIZE,
        };
        // SAFETY: UDMABUF_CREATE reads the struct, which outlives the call.
        let fd = unsafe { libc::ioctl(self.device.as_raw_fd(), UDMABUF_CREATE, &create) };
        if fd < 0 {
            return Err(WorkloadError::last_os("ioctl(UDMABUF_CREATE)"));
        }
        // SAFETY: the new dma-buf descriptor is ours; dropping it closes
        // the dma-buf, which unpins the folios.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }
}
