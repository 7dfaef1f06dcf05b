//! The scenarios on the scratch block device: O_DIRECT reads into and
//! writes from memory in its different states (warm, never touched, the
//! zero page, shared with a fork, a transparent huge page), and the device
//! itself, which the file-mapping scenario maps too.

use std::{ops::Range, os::fd::AsRawFd as _};

use super::{LEN, snap};
use crate::{
    model::{PageState, Present, paths},
    validate::{
        Ctx, Step,
        layout::{LiveFork, anon, map, rc},
        step,
    },
};

/// Bytes of a PMD-mapped huge page.
const HUGE: u64 = 2 << 20;

/// The scratch block device (or file), opened with `flags`.
pub(super) fn device(ctx: &Ctx, flags: i32) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = ctx.device.as_deref().ok_or_else(|| {
        "no scratch block device: load brd (modprobe brd rd_nr=1 rd_size=65536) or pass --device PATH (its first 64 KiB are overwritten)".to_string()
    })?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// O_DIRECT read into (`into_memory`) or write from the bytes of `buf`.
fn dio_case(
    ctx: &mut Ctx,
    buf: Range<u64>,
    into_memory: bool,
    what: &str,
) -> Result<Vec<Step>, String> {
    let dev = device(ctx, libc::O_DIRECT)?;
    let (buf_addr, len) = (buf.start, buf.end - buf.start);
    let mut space = snap(buf)?;
    let predicted = paths::direct_io(&mut space, buf_addr, len, into_memory, &ctx.rules);
    let fd = dev.as_raw_fd();
    let observed = ctx.observe(|| {
        // SAFETY: the buffer is our mapping of `len` bytes.
        rc(unsafe {
            if into_memory {
                libc::pread(fd, buf_addr as *mut _, len as usize, 0)
            } else {
                libc::pwrite(fd, buf_addr as *const _, len as usize, 0)
            }
        })
    });
    Ok(vec![step(ctx, what.to_string(), predicted, observed)])
}

pub(super) fn dio_read_warm(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let mut buf = anon(LEN)?;
    buf.warm();
    dio_case(ctx, buf.range(), true, "O_DIRECT pread 16 pages")
}

pub(super) fn dio_read_cold(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let buf = anon(LEN)?;
    dio_case(ctx, buf.range(), true, "O_DIRECT pread 16 pages")
}

pub(super) fn dio_write_zero(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    let buf = anon(LEN)?;
    buf.touch_read();
    dio_case(ctx, buf.range(), false, "O_DIRECT pwrite 16 zero pages")
}

pub(super) fn dio_read_after_fork(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    dio_after_fork(ctx, true, "O_DIRECT pread 16 pages shared with a fork")
}

pub(super) fn dio_write_after_fork(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    dio_after_fork(ctx, false, "O_DIRECT pwrite 16 pages shared with a fork")
}

/// O_DIRECT I/O on a warm buffer a live fork shares.
fn dio_after_fork(ctx: &mut Ctx, into_memory: bool, what: &str) -> Result<Vec<Step>, String> {
    let mut buf = anon(LEN)?;
    buf.warm();
    let _child = LiveFork::start()?;
    dio_case(ctx, buf.range(), into_memory, what)
}

pub(super) fn dio_read_huge(ctx: &mut Ctx) -> Result<Vec<Step>, String> {
    device(ctx, libc::O_DIRECT)?;
    let area = map(
        2 * HUGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    )?;
    let aligned = (area.start() + HUGE - 1) & !(HUGE - 1);
    // SAFETY: advising part of our own mapping.
    unsafe { libc::madvise(aligned as *mut _, HUGE as usize, libc::MADV_HUGEPAGE) };
    // SAFETY: inside the mapping.
    unsafe { (aligned as *mut u8).write_volatile(1) };
    let space = snap(aligned..aligned + LEN)?;
    if !matches!(
        space.page(aligned),
        Some((_, PageState::Present(Present { huge: true, .. })))
    ) {
        return Err(
            "the kernel mapped no transparent huge page (THP disabled or no free 2 MiB block)"
                .into(),
        );
    }
    dio_case(
        ctx,
        aligned..aligned + LEN,
        true,
        "O_DIRECT pread 16 pages of a huge page",
    )
}
