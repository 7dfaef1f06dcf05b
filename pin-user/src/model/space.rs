//! The model address space: VMAs with their protection and backing, and
//! per page what the page tables hold.

use serde::{Deserialize, Serialize};

/// Bytes per page (x86_64).
pub const PAGE_SIZE: u64 = 4096;

/// Small pages per PMD-mapped huge page (2 MiB).
pub const HUGE_PAGE_PAGES: u64 = 512;

/// What backs a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backing {
    /// Anonymous memory.
    Anon,
    /// shmem: memfd, MAP_SHARED|MAP_ANONYMOUS, tmpfs (no dirty tracking).
    Shmem,
    /// A regular file or block device in the page cache.
    File {
        /// Whether writes through a shared mapping are tracked (the
        /// filesystem has `page_mkwrite` or dirty accounting), which
        /// refuses long-term write pins on 6.5+ kernels.
        dirty_tracked: bool,
    },
    /// VM_IO / VM_PFNMAP: no struct pages GUP may take.
    Special,
}

/// A present page-table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    /// The PTE permits writes.
    pub writable: bool,
    /// It maps the shared zero page.
    pub zero: bool,
    /// It is part of a PMD-mapped huge page.
    pub huge: bool,
    /// The page is anonymous (not page cache, not the zero page).
    pub anon: bool,
    /// The anonymous page is exclusive to this mm (not shared with a
    /// fork's copy), so R/O pins need not unshare it.
    pub exclusive: bool,
    /// The PTE is dirty (written through this mapping): lets FOLL_FORCE
    /// write through a read-only PTE of an exclusive anonymous page
    /// without a fault (`can_follow_write_pte`).
    pub dirty: bool,
}

/// One page of a VMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum PageState {
    /// Nothing mapped: an access faults.
    Absent,
    /// Mapped.
    Present(Present),
}

/// One mapping: its shape and its pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    /// Bounds and attributes (also reached through `Deref`).
    #[serde(flatten)]
    pub shape: VmaShape,
    /// Per page, from `start`.
    pub pages: Vec<PageState>,
}

impl std::ops::Deref for Vma {
    type Target = VmaShape;
    fn deref(&self) -> &VmaShape {
        &self.shape
    }
}

impl std::ops::DerefMut for Vma {
    fn deref_mut(&mut self) -> &mut VmaShape {
        &mut self.shape
    }
}

impl Vma {
    /// A mapping of `pages` pages at `start`, none present.
    pub fn new(
        start: u64,
        pages: u64,
        read: bool,
        write: bool,
        shared: bool,
        backing: Backing,
    ) -> Self {
        Self {
            shape: VmaShape {
                start,
                end: start + pages * PAGE_SIZE,
                read,
                write,
                shared,
                backing,
                thp: false,
            },
            pages: vec![PageState::Absent; pages as usize],
        }
    }

    /// The mapping without its pages.
    pub fn shape(&self) -> VmaShape {
        self.shape
    }

    fn index(&self, addr: u64) -> usize {
        ((addr - self.start) / PAGE_SIZE) as usize
    }
}

/// A mapping's bounds and attributes, without its pages: what the
/// prediction consults while it changes the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmaShape {
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned).
    pub end: u64,
    /// PROT_READ.
    pub read: bool,
    /// PROT_WRITE.
    pub write: bool,
    /// MAP_SHARED (else private copy-on-write).
    pub shared: bool,
    /// What backs it.
    pub backing: Backing,
    /// Whether faults may map huge pages here (THP enabled for the VMA).
    pub thp: bool,
}

impl VmaShape {
    /// Whether writes to private pages copy them (a COW mapping).
    pub fn is_cow(&self) -> bool {
        !self.shared
    }
}

/// The mappings of one process, sorted by address, not overlapping.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpace {
    /// The mappings.
    pub vmas: Vec<Vma>,
}

impl AddressSpace {
    /// Adds a mapping, keeping the list sorted.
    pub fn map(&mut self, vma: Vma) {
        let at = self.vmas.partition_point(|v| v.start < vma.start);
        self.vmas.insert(at, vma);
    }

    /// The mapping containing `addr`.
    pub fn vma(&self, addr: u64) -> Option<&Vma> {
        self.vmas.iter().find(|v| v.start <= addr && addr < v.end)
    }

    /// The page at `addr`, with its mapping's shape.
    pub fn page(&self, addr: u64) -> Option<(VmaShape, PageState)> {
        let vma = self.vma(addr)?;
        Some((vma.shape(), vma.pages[vma.index(addr)]))
    }

    /// Replaces the page at `addr` (which must be mapped).
    pub fn set_page(&mut self, addr: u64, state: PageState) {
        if let Some(vma) = self
            .vmas
            .iter_mut()
            .find(|v| v.start <= addr && addr < v.end)
        {
            let i = vma.index(addr);
            vma.pages[i] = state;
        }
    }
}
