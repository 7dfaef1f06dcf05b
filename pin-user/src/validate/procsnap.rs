//! Builds the model's address space from a live process, just before a
//! call: `/proc/PID/smaps` for the VMAs (protection, sharing, backing,
//! VM_IO/VM_PFNMAP, THP advice), `/proc/PID/pagemap` for which pages are
//! present and exclusively mapped, and `/proc/kpageflags` (root) for the
//! zero page, anonymous and huge pages, and dirty page cache.
//!
//! The page tables' write bit is not exported; it is inferred: a private
//! anonymous page is writable when its VMA is and it is mapped only here
//! (after a fork it is write-protected until COW); a shared shmem page is
//! writable when its VMA is (no write notification); a shared file page
//! only while dirty (clean ones are write-protected for dirty tracking);
//! private file pages and the zero page never. The PTE dirty bit is read
//! from the soft-dirty bit, which x86 sets with it.

use std::ops::Range;

use procfs::{
    KPageFlags, PhysicalPageFlags,
    process::{MMPermissions, MMapPath, MemoryPageFlags, PageInfo, Process, VmFlags},
};

use crate::model::{AddressSpace, Backing, PAGE_SIZE, PageState, Present, Vma, VmaShape};

/// `f_type` of tmpfs (shmem-backed files).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Errors taking a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A /proc file could not be read.
    #[error("reading {what}: {source}")]
    Proc {
        /// Which file.
        what: &'static str,
        /// The error.
        source: procfs::ProcError,
    },
}

fn proc_err(what: &'static str) -> impl FnOnce(procfs::ProcError) -> SnapshotError {
    move |source| SnapshotError::Proc { what, source }
}

/// Whether THP may back faults in a VMA with these flags, given
/// `/sys/kernel/mm/transparent_hugepage/enabled`.
fn thp_eligible(flags: VmFlags, policy: &str) -> bool {
    if flags.contains(VmFlags::NH) {
        return false;
    }
    if policy.contains("[always]") {
        return true;
    }
    policy.contains("[madvise]") && flags.contains(VmFlags::HG)
}

fn backing(path: &MMapPath, flags: VmFlags, shared: bool) -> Backing {
    if flags.intersects(VmFlags::IO | VmFlags::PF) {
        return Backing::Special;
    }
    match path {
        MMapPath::Path(p) => {
            let s = p.to_string_lossy();
            if s.starts_with("/memfd:") || s.starts_with("/dev/zero") || s.starts_with("/SYSV") {
                Backing::Shmem
            } else if is_block_device(p) {
                // Block devices live on devtmpfs but map the device's page
                // cache (generic_file_vm_ops: page_mkwrite, dirty tracked).
                Backing::File {
                    dirty_tracked: true,
                }
            } else if on_tmpfs(p) {
                Backing::Shmem
            } else {
                Backing::File {
                    dirty_tracked: true,
                }
            }
        }
        MMapPath::Anonymous | MMapPath::Heap | MMapPath::Stack | MMapPath::TStack(_) => {
            if shared {
                Backing::Shmem
            } else {
                Backing::Anon
            }
        }
        MMapPath::Vsys(_) => Backing::Shmem,
        _ => Backing::Special,
    }
}

fn is_block_device(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

fn on_tmpfs(path: &std::path::Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed out-struct.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TMPFS_MAGIC }
}

/// Snapshots the VMAs of process `pid` that overlap `range` (bytes), with
/// their pages.
pub fn snapshot(pid: i32, range: Range<u64>) -> Result<AddressSpace, SnapshotError> {
    let process = Process::new(pid).map_err(proc_err("/proc/PID"))?;
    let maps = process.smaps().map_err(proc_err("/proc/PID/smaps"))?;
    let policy =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let mut pagemap = process.pagemap().map_err(proc_err("/proc/PID/pagemap"))?;
    let mut kflags = KPageFlags::new().ok();
    let mut space = AddressSpace::default();
    for map in maps.iter() {
        let (start, end) = map.address;
        if !(range.start < end && start < range.end) {
            continue;
        }
        let shared = map.perms.contains(MMPermissions::SHARED);
        let flags = map.extension.vm_flags;
        let mut vma = Vma::new(
            start,
            (end - start) / PAGE_SIZE,
            map.perms.contains(MMPermissions::READ),
            map.perms.contains(MMPermissions::WRITE),
            shared,
            backing(&map.pathname, flags, shared),
        );
        vma.thp = !shared && vma.backing == Backing::Anon && thp_eligible(flags, &policy);
        let first = (start / PAGE_SIZE) as usize;
        let last = (end / PAGE_SIZE) as usize;
        let infos = pagemap
            .get_range_info(first..last)
            .map_err(proc_err("/proc/PID/pagemap"))?;
        let shape = vma.shape();
        for (slot, info) in vma.pages.iter_mut().zip(infos) {
            let PageInfo::MemoryPage(pte) = info else {
                continue; // swapped: not present
            };
            if !pte.contains(MemoryPageFlags::PRESENT) {
                continue;
            }
            let phys = kflags
                .as_mut()
                .and_then(|k| k.get_info(pte.get_page_frame_number()).ok());
            *slot = PageState::Present(present(&shape, pte, phys));
        }
        space.map(vma);
    }
    Ok(space)
}

fn present(vma: &VmaShape, pte: MemoryPageFlags, phys: Option<PhysicalPageFlags>) -> Present {
    let phys = phys.unwrap_or(PhysicalPageFlags::empty());
    let zero = phys.contains(PhysicalPageFlags::ZERO_PAGE);
    let anon = !zero && !pte.contains(MemoryPageFlags::FILE);
    let exclusive = anon && pte.contains(MemoryPageFlags::MMAP_EXCLUSIVE);
    // x86 sets the soft-dirty bit whenever it sets the PTE dirty bit.
    let dirty = pte.contains(MemoryPageFlags::SOFT_DIRTY);
    let writable = vma.write
        && !zero
        && match (vma.shared, vma.backing) {
            (false, _) => anon && exclusive,
            (true, Backing::File { .. }) => phys.contains(PhysicalPageFlags::DIRTY),
            (true, _) => true,
        };
    Present {
        writable,
        zero,
        huge: phys.intersects(PhysicalPageFlags::THP | PhysicalPageFlags::HUGE),
        anon,
        exclusive,
        dirty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process: a written private buffer is present, writable,
    /// anonymous; an untouched one is absent; a hole is not in the space.
    #[test]
    fn snapshots_this_process() {
        let buf = crate::workload::UserBuffer::new(4).unwrap();
        let base = buf.start();
        // SAFETY: within the mapping.
        unsafe { (base as *mut u8).write_volatile(1) };
        let space = snapshot(std::process::id() as i32, buf.range()).unwrap();
        let (vma, first) = space.page(base).unwrap();
        assert!(vma.read && vma.write && !vma.shared);
        assert_eq!(vma.backing, Backing::Anon);
        assert!(matches!(first, PageState::Present(p) if p.anon));
        assert_eq!(space.page(base + PAGE_SIZE).unwrap().1, PageState::Absent);
    }
}
