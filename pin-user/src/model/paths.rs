//! System-call paths: the GUP calls a syscall must make, in order, and
//! what it returns, per the kernel's callers (mm/process_vm_access.c,
//! fs/proc/base.c + mm/memory.c `access_remote_vm`, fs/splice.c,
//! block/ and iomap direct I/O, io_uring/rsrc.c, mm/madvise.c).
//!
//! Later calls see the address space the earlier ones left behind.

use serde::Serialize;

use super::{
    AddressSpace, Backing, Call, GupFlags, PAGE_SIZE, Prediction, Rules, Variant, predict,
};

const EFAULT: i64 = 14;
const EIO: i64 = 5;
const EINVAL: i64 = 22;
const EOPNOTSUPP: i64 = 95;

/// Pages `process_vm_rw_single_vec` pins per call on x86_64
/// (`PVM_MAX_KMALLOC_PAGES * PAGE_SIZE / sizeof(struct page *)`).
pub const PROCESS_VM_MAX_PAGES: u64 = 1024;

/// Pages `iter_to_pipe` (vmsplice) takes per call.
pub const VMSPLICE_BATCH: u64 = 16;

/// The predicted effect of one system call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PathPrediction {
    /// The GUP calls, in order.
    pub calls: Vec<Prediction>,
    /// The syscall's return value (bytes, 0, or -errno).
    pub result: i64,
    /// Pins released by the unpin family before the syscall returns.
    pub released: u64,
    /// Of those, counted ones (`nr_foll_pin_released`).
    pub released_counted: u64,
    /// Pins still held when the syscall returns.
    pub held: u64,
    /// Counted ones among `held`.
    pub held_counted: u64,
}

impl PathPrediction {
    /// Predicts the next GUP call of the path and records it.
    fn gup(
        &mut self,
        space: &mut AddressSpace,
        rules: &Rules,
        variant: Variant,
        start: u64,
        nr: u64,
        flags: GupFlags,
    ) -> Prediction {
        let call = Call {
            variant,
            start,
            nr_pages: nr as i64,
            flags,
        };
        let p = predict(space, &call, rules);
        self.calls.push(p.clone());
        p
    }

    /// Releases everything pinned by `p` before returning.
    fn release(&mut self, p: &Prediction) {
        self.released += p.pins_held;
        self.released_counted += p.counted_pins_held;
    }

    /// Keeps everything pinned by `p` after returning.
    fn hold(&mut self, p: &Prediction) {
        self.held += p.pins_held;
        self.held_counted += p.counted_pins_held;
    }

    /// Total faults over the calls.
    pub fn faults(&self) -> u64 {
        self.calls.iter().map(|c| c.faults).sum()
    }

    /// `nr_foll_pin_acquired` change over the syscall.
    pub fn pin_acquired(&self) -> u64 {
        self.calls.iter().map(|c| c.pin_acquired).sum()
    }

    /// `nr_foll_pin_released` change over the syscall.
    pub fn pin_released(&self) -> u64 {
        self.calls.iter().map(|c| c.pin_released).sum::<u64>() + self.released_counted
    }
}

/// Pages spanned by `len` bytes at `addr`.
pub fn pages_spanned(addr: u64, len: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    (addr + len - 1) / PAGE_SIZE - addr / PAGE_SIZE + 1
}

/// `process_vm_readv`/`writev` of `len` bytes at `addr` in the target:
/// `pin_user_pages_remote` in chunks, each released after its copy.
pub fn process_vm(
    space: &mut AddressSpace,
    addr: u64,
    len: u64,
    write: bool,
    rules: &Rules,
) -> PathPrediction {
    let mut out = PathPrediction::default();
    let flags = GupFlags::write_if(write);
    let mut remaining = pages_spanned(addr, len);
    let mut page_addr = addr & !(PAGE_SIZE - 1);
    let mut offset = addr % PAGE_SIZE;
    let mut bytes_left = len;
    let mut copied = 0u64;
    while remaining > 0 && bytes_left > 0 {
        let chunk = remaining.min(PROCESS_VM_MAX_PAGES);
        let p = out.gup(
            space,
            rules,
            Variant::PinUserPagesRemote,
            page_addr,
            chunk,
            flags,
        );
        if p.ret <= 0 {
            out.result = if copied > 0 { copied as i64 } else { -EFAULT };
            return out;
        }
        let pinned = p.ret as u64;
        let bytes = (pinned * PAGE_SIZE - offset).min(bytes_left);
        copied += bytes;
        bytes_left -= bytes;
        out.release(&p);
        remaining -= pinned;
        page_addr += pinned * PAGE_SIZE;
        offset = 0;
    }
    out.result = copied as i64;
    out
}

/// `pread`/`pwrite` of `/proc/PID/mem`: `access_remote_vm` takes one page
/// per `get_user_pages_remote` call, with FOLL_FORCE when `force` (see
/// [`super::rules::ProcMemForce`]); nothing copied is -EIO.
pub fn proc_mem(
    space: &mut AddressSpace,
    addr: u64,
    len: u64,
    write: bool,
    force: bool,
    rules: &Rules,
) -> PathPrediction {
    let mut out = PathPrediction::default();
    let flags = GupFlags {
        write,
        force,
        ..GupFlags::NONE
    };
    let mut done = 0u64;
    while done < len {
        let at = addr + done;
        let chunk = (PAGE_SIZE - at % PAGE_SIZE).min(len - done);
        let p = out.gup(
            space,
            rules,
            Variant::GetUserPagesRemote,
            at & !(PAGE_SIZE - 1),
            1,
            flags,
        );
        if p.ret <= 0 {
            break;
        }
        done += chunk;
    }
    out.result = if done > 0 { done as i64 } else { -EIO };
    out
}

/// `vmsplice` of `len` bytes at `addr` into a pipe with room for them:
/// `get_user_pages_fast` in batches of 16 pages, no FOLL_WRITE.
pub fn vmsplice(space: &mut AddressSpace, addr: u64, len: u64, rules: &Rules) -> PathPrediction {
    let mut out = PathPrediction::default();
    let mut remaining = pages_spanned(addr, len);
    let mut page_addr = addr & !(PAGE_SIZE - 1);
    let mut taken = 0u64;
    while remaining > 0 {
        let chunk = remaining.min(VMSPLICE_BATCH);
        let p = out.gup(
            space,
            rules,
            Variant::GetUserPagesFast,
            page_addr,
            chunk,
            GupFlags::NONE,
        );
        if p.ret <= 0 {
            break;
        }
        let got = p.ret as u64;
        taken += got;
        remaining -= got;
        page_addr += got * PAGE_SIZE;
        if got < chunk {
            break;
        }
    }
    let bytes = (taken * PAGE_SIZE)
        .saturating_sub(addr % PAGE_SIZE)
        .min(len);
    out.result = if bytes > 0 { bytes as i64 } else { -EFAULT };
    out
}

/// A path of one GUP call over the pages `[addr, addr + len)` spans:
/// the path so far, the call's prediction and the pages it asked for.
fn one_call(
    space: &mut AddressSpace,
    rules: &Rules,
    variant: Variant,
    addr: u64,
    len: u64,
    flags: GupFlags,
) -> (PathPrediction, Prediction, u64) {
    let mut out = PathPrediction::default();
    let nr = pages_spanned(addr, len);
    let p = out.gup(space, rules, variant, addr & !(PAGE_SIZE - 1), nr, flags);
    (out, p, nr)
}

/// O_DIRECT `pread` (`into_memory`) or `pwrite` of `len` bytes at `addr`
/// on a block device: one fast call for the whole (small) buffer; pins are
/// released when the I/O completes, before the syscall returns.
pub fn direct_io(
    space: &mut AddressSpace,
    addr: u64,
    len: u64,
    into_memory: bool,
    rules: &Rules,
) -> PathPrediction {
    let variant = if rules.dio_pins {
        Variant::PinUserPagesFast
    } else {
        Variant::GetUserPagesFast
    };
    let flags = GupFlags::write_if(into_memory);
    let (mut out, p, nr) = one_call(space, rules, variant, addr, len, flags);
    out.release(&p);
    out.result = if p.ret == nr as i64 {
        len as i64
    } else if p.ret > 0 {
        ((p.ret as u64 * PAGE_SIZE).saturating_sub(addr % PAGE_SIZE)) as i64
    } else {
        p.ret
    };
    out
}

/// `io_uring_register(IORING_REGISTER_BUFFERS)` of one buffer: a long-term
/// write pin held until unregistration. On kernels before 6.10 io_uring
/// pins with `pin_user_pages` and then refuses file-backed (non-shmem)
/// VMAs itself with -EOPNOTSUPP.
pub fn io_uring_register(
    space: &mut AddressSpace,
    addr: u64,
    len: u64,
    rules: &Rules,
) -> PathPrediction {
    let variant = if rules.io_uring_pins_fast {
        Variant::PinUserPagesFast
    } else {
        Variant::PinUserPages
    };
    let flags = GupFlags {
        write: true,
        longterm: true,
        ..GupFlags::NONE
    };
    let (mut out, p, nr) = one_call(space, rules, variant, addr, len, flags);
    if p.ret != nr as i64 {
        out.release(&p);
        out.result = if p.ret < 0 { p.ret } else { -EFAULT };
        return out;
    }
    let file_backed = !rules.io_uring_pins_fast
        && p.pages.iter().any(|&a| {
            space
                .vma(a)
                .is_some_and(|v| matches!(v.backing, Backing::File { .. }))
        });
    if file_backed {
        out.release(&p);
        out.result = -EOPNOTSUPP;
        return out;
    }
    out.hold(&p);
    out.result = 0;
    out
}

/// `IORING_UNREGISTER_BUFFERS` after [`io_uring_register`] returned
/// `registered`: releases what it held.
pub fn io_uring_unregister(registered: &PathPrediction) -> PathPrediction {
    PathPrediction {
        released: registered.held,
        released_counted: registered.held_counted,
        result: 0,
        ..PathPrediction::default()
    }
}

/// `madvise(MADV_POPULATE_READ/WRITE)`: `__get_user_pages` without a
/// page array faults the range in.
pub fn populate(
    space: &mut AddressSpace,
    addr: u64,
    len: u64,
    write: bool,
    rules: &Rules,
) -> PathPrediction {
    let mut out = PathPrediction::default();
    if !rules.madv_populate {
        out.result = -EINVAL;
        return out;
    }
    let flags = GupFlags::write_if(write);
    let nr = pages_spanned(addr, len);
    let p = out.gup(space, rules, Variant::Populate, addr, nr, flags);
    out.result = if p.ret == nr as i64 { 0 } else { -EFAULT };
    out
}
