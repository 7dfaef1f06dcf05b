//! The scenario catalogue: one memory layout and one real call path each.
//!
//! Scenarios run on the calling thread (the probes report that thread's
//! calls only), prepare their mappings, snapshot them, predict with the
//! model, make the system call and compare. A scenario that needs
//! something this host lacks (a scratch block device, transparent huge
//! pages) reports why it did not run. The O_DIRECT scenarios on the
//! scratch block device are in `direct_io`.

use std::{ops::Range, os::fd::AsRawFd as _, path::Path};

use io_uring::IoUring;

use super::{
    Ctx, Step,
    layout::{anon, map, map_at, rc},
    procsnap, step,
};
use crate::{
    model::{
        AddressSpace, PAGE_SIZE,
        paths::{self, PathPrediction},
    },
    workload::UserBuffer,
};

mod direct_io;
use direct_io::{
    device, dio_read_after_fork, dio_read_cold, dio_read_huge, dio_read_warm, dio_write_after_fork,
    dio_write_zero,
};

/// Pages most scenarios use.
const PAGES: u64 = 16;
/// Bytes of [`PAGES`].
const LEN: u64 = PAGES * PAGE_SIZE;

/// A scenario: a name, what it exercises, and how to run it.
pub struct Scenario {
    /// Catalogue name (`--scenario NAME`).
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Runs it; `Err` says why it could not run here.
    pub run: fn(&mut Ctx) -> Result<Vec<Step>, String>,
}

/// Every scenario, in the order `validate` runs them.
pub const CATALOGUE: &[Scenario] = &[
    Scenario {
        name: "readv-warm",
        about: "process_vm_readv of 16 written pages: PIN slow path, pins released after the copy",
        run: readv_warm,
    },
    Scenario {
        name: "readv-cold-zero-page",
        about: "process_vm_readv of 16 never-touched pages: read faults map the zero page, pinned but counted only before 6.5",
        run: readv_cold,
    },
    Scenario {
        name: "readv-into-hole",
        about: "process_vm_readv over 4 mapped pages then an unmapped hole: a partial count, then -EFAULT",
        run: readv_hole,
    },
    Scenario {
        name: "readv-unmapped",
        about: "process_vm_readv of the never-mappable first 32 KiB: -EFAULT, nothing pinned",
        run: readv_unmapped,
    },
    Scenario {
        name: "readv-prot-none",
        about: "process_vm_readv of a PROT_NONE mapping: -EFAULT",
        run: readv_prot_none,
    },
    Scenario {
        name: "writev-read-only",
        about: "process_vm_writev into a read-only mapping: FOLL_WRITE without FOLL_FORCE, -EFAULT",
        run: writev_read_only,
    },
    Scenario {
        name: "readv-zero-length",
        about: "process_vm_readv of 0 bytes: nr_pages = 0 never reaches GUP from userspace",
        run: readv_zero_length,
    },
    Scenario {
        name: "proc-mem-read-get",
        about: "pread /proc/self/mem over 4 pages: GET path, one get_user_pages_remote per page (FOLL_FORCE unless the kernel's proc_mem force mode says otherwise), no pins",
        run: proc_mem_read,
    },
    Scenario {
        name: "proc-mem-write-read-only",
        about: "pwrite /proc/self/mem into a read-only private page: FOLL_FORCE write fault reuses the exclusive page (unforced: -EFAULT, -EIO)",
        run: proc_mem_write_ro,
    },
    Scenario {
        name: "vmsplice-get",
        about: "vmsplice of 16 written pages: GET fast path, no pins",
        run: vmsplice_get,
    },
    Scenario {
        name: "dio-read-warm",
        about: "O_DIRECT read into 16 written pages: the fast path takes all",
        run: dio_read_warm,
    },
    Scenario {
        name: "dio-read-cold",
        about: "O_DIRECT read into 16 untouched pages: fast path falls back, slow path faults",
        run: dio_read_cold,
    },
    Scenario {
        name: "dio-write-zero-page",
        about: "O_DIRECT write from read-touched pages (the zero page): special PTEs fall back; zero-page pins uncounted",
        run: dio_write_zero,
    },
    Scenario {
        name: "dio-read-after-fork",
        about: "O_DIRECT read into pages shared with a live fork: write pins break COW",
        run: dio_read_after_fork,
    },
    Scenario {
        name: "dio-write-after-fork",
        about: "O_DIRECT write from pages shared with a live fork: R/O pins must unshare (GET needs not)",
        run: dio_write_after_fork,
    },
    Scenario {
        name: "dio-read-huge-page",
        about: "O_DIRECT read into a PMD-mapped transparent huge page: fast path, per-page pin counts",
        run: dio_read_huge,
    },
    Scenario {
        name: "uring-memfd-longterm",
        about: "io_uring buffer registration of memfd memory: LONGTERM pins held until unregistration",
        run: uring_memfd,
    },
    Scenario {
        name: "uring-file-longterm",
        about: "io_uring registration of a shared block-device mapping: LONGTERM write pin of a dirty-tracked file",
        run: uring_file,
    },
    Scenario {
        name: "populate-write",
        about: "MADV_POPULATE_WRITE of 16 untouched pages: faults without references",
        run: populate_write,
    },
];

fn snap(range: Range<u64>) -> Result<AddressSpace, String> {
    procsnap::snapshot(std::process::id() as i32, range).map_err(|e| e.to_string())
}

fn process_vm(write: bool, local: &UserBuffer, remote: u64, len: u64) -> i64 {
    let l = libc::iovec {
        iov_base: local.start() as *mut _,
        iov_len: len as usize,
    };
    let r = libc::iovec {
        iov_base: remote as *mut _,
        iov_len: len as usize,
    };
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: the local iovec lies in our mapping; the remote one is only
    // accessed by the kernel, which checks it.
    rc(unsafe {
        if write {
            libc::process_vm_writev(pid, &l, 1, &r, 1, 0)
        } else {
            libc::process_vm_readv(pid, &l, 1, &r, 1, 0)
        }
    })
}

/// A written local buffer for the process_vm scenarios, made before the
/// remote layout so that it cannot land in a hole the scenario made.
fn local_buffer() -> Result<UserBuffer, String> {
    let mut local = anon(LEN)?;
    local.warm();
    Ok(local)
}

/// The process_vm_{readv,writev} scenarios: `len` bytes at `remote`.
fn process_vm_case(
    ctx: &mut Ctx,
    local: &UserBuffer,
    remote: u64,
    len: u64,
    write: bool,
    watch: Range<u64>,
) -> Result<Vec<Step>, String> {
    let mut space = snap(watch)?;
    let predicted = paths::process_vm(&mut space, remote, len, write, &ctx.rules);
    let observed = ctx.observe(|| process_vm(write, local, remote, len));
    let what = if write {
        "process_vm_writev"
    } else {
        "process_vm_readv"
    };
    Ok(vec![step(
        ctx,
        format!("{what} {len} bytes"),
        predicted,
        observed,
    )])
}

fn readv_warm(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    let mut remote = anon(LEN)?;
    remote.warm();
    process_vm_case(ctx, &local, remote.start(), LEN, false, remote.range())
}

fn readv_cold(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    let remote = anon(LEN)?;
    process_vm_case(ctx, &local, remote.start(), LEN, false, remote.range())
}

/// Where the hole scenario maps: 1 TiB, far below where mmap places
/// anything (top-down from under the stack; bottom-up, in the legacy
/// layout, from a third of the address space up). A hole left anywhere
/// else is the first place the next small mapping goes, and musl's malloc
/// maps small buffers, such as the snapshot's reading of smaps: with the
/// static (musl) build on 5.10 the model saw a mapping in the hole and
/// predicted 8 pages where the kernel pinned 4.
const HOLE_LAYOUT_AT: u64 = 1 << 40;

fn readv_hole(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    let mut remote = map_at(
        HOLE_LAYOUT_AT,
        8 * PAGE_SIZE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    remote.warm();
    // SAFETY: unmapping the upper half of our own mapping.
    unsafe {
        libc::munmap(
            (remote.start() + 4 * PAGE_SIZE) as *mut _,
            4 * PAGE_SIZE as usize,
        )
    };
    process_vm_case(
        ctx,
        &local,
        remote.start(),
        8 * PAGE_SIZE,
        false,
        remote.range(),
    )
}

fn readv_unmapped(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    // Below vm.mmap_min_addr (64 KiB by default) nothing can ever be
    // mapped: a range that is unmapped by construction, not by luck.
    let len = 8 * PAGE_SIZE;
    process_vm_case(ctx, &local, 0, len, false, 0..len)
}

fn readv_prot_none(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    let mut remote = anon(LEN)?;
    remote.warm();
    remote.protect(libc::PROT_NONE).map_err(|e| e.to_string())?;
    process_vm_case(ctx, &local, remote.start(), LEN, false, remote.range())
}

fn writev_read_only(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    let mut remote = anon(LEN)?;
    remote.warm();
    remote.protect(libc::PROT_READ).map_err(|e| e.to_string())?;
    process_vm_case(ctx, &local, remote.start(), LEN, true, remote.range())
}

fn readv_zero_length(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let local = local_buffer()?;
    let mut remote = anon(LEN)?;
    remote.warm();
    process_vm_case(ctx, &local, remote.start(), 0, false, remote.range())
}

fn open_proc_mem() -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .map_err(|e| format!("open /proc/self/mem: {e}"))
}

/// The model's prediction for `len` bytes of `/proc/self/mem` at the start
/// of `range` (snapshotted now), forced or not as this kernel decides; an
/// error says why pinwatch cannot tell.
fn predict_proc_mem(
    ctx: &Ctx,
    range: Range<u64>,
    len: u64,
    write: bool,
) -> Result<PathPrediction, String> {
    let force = ctx
        .rules
        .proc_mem_force
        .map(|mode| mode.forces_self())
        .ok_or_else(|| {
            "FOLL_FORCE for /proc/PID/mem is a build choice on this kernel (CONFIG_PROC_MEM_*, \
         6.12 and 6.1 stable) or proc_mem.force_override=, and neither the kernel's config \
         (/boot/config-RELEASE, /usr/lib/modules/RELEASE/config) nor its command line is readable"
                .to_string()
        })?;
    let start = range.start;
    let mut space = snap(range)?;
    Ok(paths::proc_mem(
        &mut space, start, len, write, force, &ctx.rules,
    ))
}

fn proc_mem_read(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let mut buf = anon(4 * PAGE_SIZE)?;
    buf.warm();
    let mem = open_proc_mem()?;
    let mut dst = anon(4 * PAGE_SIZE)?;
    dst.warm();
    let predicted = predict_proc_mem(ctx, buf.range(), buf.len() as u64, false)?;
    let observed = ctx.observe(|| {
        // SAFETY: dst is our writable mapping of buf.len bytes.
        rc(unsafe {
            libc::pread(
                mem.as_raw_fd(),
                dst.start() as *mut _,
                buf.len(),
                buf.start() as i64,
            )
        })
    });
    Ok(vec![step(
        ctx,
        "pread /proc/self/mem 4 pages",
        predicted,
        observed,
    )])
}

fn proc_mem_write_ro(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let mut buf = anon(PAGE_SIZE)?;
    buf.warm();
    buf.protect(libc::PROT_READ).map_err(|e| e.to_string())?;
    let mem = open_proc_mem()?;
    let src = [0xa5u8; 8];
    let predicted = predict_proc_mem(ctx, buf.range(), src.len() as u64, true)?;
    let observed = ctx.observe(|| {
        // SAFETY: writes 8 bytes from our array into our own (read-only)
        // mapping through /proc/self/mem.
        rc(unsafe {
            libc::pwrite(
                mem.as_raw_fd(),
                src.as_ptr().cast(),
                src.len(),
                buf.start() as i64,
            )
        })
    });
    Ok(vec![step(
        ctx,
        "pwrite /proc/self/mem 8 bytes into PROT_READ",
        predicted,
        observed,
    )])
}

fn vmsplice_get(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let mut buf = anon(LEN)?;
    buf.warm();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let mut space = snap(buf.range())?;
    let predicted = paths::vmsplice(&mut space, buf.start(), LEN, &ctx.rules);
    let iov = libc::iovec {
        iov_base: buf.start() as *mut _,
        iov_len: LEN as usize,
    };
    // SAFETY: the iovec covers our mapping; the pipe is ours.
    let observed = ctx.observe(|| rc(unsafe { libc::vmsplice(fds[1], &iov, 1, 0) }));
    let mut sink = vec![0u8; LEN as usize];
    // SAFETY: draining and closing our pipe.
    unsafe {
        libc::read(fds[0], sink.as_mut_ptr().cast(), sink.len());
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Ok(vec![step(ctx, "vmsplice 16 pages", predicted, observed)])
}

fn register(ring: &IoUring, addr: u64, len: u64) -> i64 {
    let iov = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: len as usize,
    };
    // SAFETY: the buffer outlives the registration (unregistered before the
    // mapping is dropped, or the ring is dropped first).
    match unsafe { ring.submitter().register_buffers(&[iov]) } {
        Ok(()) => 0,
        Err(e) => -(e.raw_os_error().unwrap_or(0) as i64),
    }
}

fn unregister(ring: &IoUring) -> i64 {
    match ring.submitter().unregister_buffers() {
        Ok(()) => 0,
        Err(e) => -(e.raw_os_error().unwrap_or(0) as i64),
    }
}

/// Registers the bytes of `buf`, then unregisters if that worked.
fn uring_case(ctx: &mut Ctx, buf: Range<u64>) -> Result<Vec<Step>, String> {
    let ring = IoUring::new(4).map_err(|e| format!("io_uring_setup: {e}"))?;
    let (addr, len) = (buf.start, buf.end - buf.start);
    let mut space = snap(buf)?;
    let registered = paths::io_uring_register(&mut space, addr, len, &ctx.rules);
    let observed = ctx.observe(|| register(&ring, addr, len));
    let ok = observed.result == 0;
    let mut steps = vec![step(
        ctx,
        "IORING_REGISTER_BUFFERS 16 pages",
        registered.clone(),
        observed,
    )];
    if ok {
        let predicted = paths::io_uring_unregister(&registered);
        let observed = ctx.observe(|| unregister(&ring));
        steps.push(step(ctx, "IORING_UNREGISTER_BUFFERS", predicted, observed));
    }
    Ok(steps)
}

fn uring_memfd(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    // SAFETY: plain memfd_create with a static name.
    let fd = unsafe { libc::memfd_create(c"pinwatch-validate".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: sizing and mapping our own memfd; closed after mapping.
    let mut mapping = unsafe {
        libc::ftruncate(fd, LEN as i64);
        let m = map(
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
        );
        libc::close(fd);
        m?
    };
    mapping.warm();
    uring_case(ctx, mapping.range())
}

fn uring_file(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let dev = device(ctx, 0)?;
    let mut mapping = map(
        LEN,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        dev.as_raw_fd(),
    )?;
    mapping.warm();
    uring_case(ctx, mapping.range())
}

fn populate_write(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let buf = anon(LEN)?;
    let mut space = snap(buf.range())?;
    let predicted = paths::populate(&mut space, buf.start(), LEN, true, &ctx.rules);
    let observed = ctx.observe(|| {
        rc(if buf.advise(libc::MADV_POPULATE_WRITE).is_ok() {
            0
        } else {
            -1
        })
    });
    Ok(vec![step(
        ctx,
        "madvise(MADV_POPULATE_WRITE) 16 pages",
        predicted,
        observed,
    )])
}

/// Whether `path` is usable as the default scratch device: a brd ramdisk.
pub fn is_ramdisk(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("ram") && Path::new("/sys/block").join(n).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_large_enough_and_names_are_unique() {
        assert!(CATALOGUE.len() >= 12);
        let mut names: Vec<&str> = CATALOGUE.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
    }
}
