//! The prediction: what one GUP call must do to a model address space.
//!
//! The fast path (`*_fast`) walks the page tables without locks and takes
//! only pages already present with sufficient permission; at the first page
//! it cannot take it stops and, unless the variant is `_fast_only`, the
//! slow path handles the rest: it checks the VMA, faults pages in, breaks
//! COW or unshares where the pin rules demand, and takes the page. The
//! return value follows the contract: the number of pages taken, possibly
//! fewer than asked, -errno only when none was taken.

use serde::Serialize;

use super::{
    AddressSpace, Backing, Call, Deviation, HUGE_PAGE_PAGES, PAGE_SIZE, PageState, Present, Rules,
    VmaShape,
};

/// Highest user address + 1 on x86_64 with 4-level page tables, minus the
/// guard page (`TASK_SIZE_MAX`).
const TASK_SIZE_MAX: u64 = (1 << 47) - PAGE_SIZE;

const EFAULT: i64 = 14;
const EINVAL: i64 = 22;
const EOVERFLOW: i64 = 75;

/// What the model says one call does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prediction {
    /// The call.
    pub call: Call,
    /// Return value: pages taken, or -errno.
    pub ret: i64,
    /// Addresses of the pages taken, in order (`ret` of them).
    pub pages: Vec<u64>,
    /// How many of those are the shared zero page.
    pub zero_pages: u64,
    /// Pages the fast path took.
    pub fast_pages: u64,
    /// Pages the slow path took.
    pub slow_pages: u64,
    /// The fast path stopped short and the slow path ran.
    pub fell_back: bool,
    /// Page faults the call takes on the caller's behalf.
    pub faults: u64,
    /// Of those, copy-on-write breaks and unshares (a new anonymous page
    /// replaced a shared or read-only one).
    pub cow_breaks: u64,
    /// Expected change of `/proc/vmstat` `nr_foll_pin_acquired` during the
    /// call (pins counted, plus fast-path grabs rolled back).
    pub pin_acquired: u64,
    /// Expected change of `nr_foll_pin_released` during the call (the
    /// rolled-back fast-path grabs).
    pub pin_released: u64,
    /// FOLL_PIN pins the caller holds afterwards and must release
    /// (including uncounted zero-page ones, which unpin as no-ops).
    pub pins_held: u64,
    /// Counted pins among `pins_held` (what releasing them adds to
    /// `nr_foll_pin_released`).
    pub counted_pins_held: u64,
    /// Folio reference-count increase the call leaves behind: +1 per
    /// FOLL_GET page, +1024 (`GUP_PIN_COUNTING_BIAS`) per pin of a small
    /// folio, +1 per pin of a large one (whose `_pincount` counts the pin).
    pub refcount_delta: u64,
    /// `_pincount` increase of large folios (PMD-mapped pages).
    pub pincount_delta: u64,
    /// The named deviation that decided the result, if any.
    pub deviation: Option<Deviation>,
    /// Why the call took fewer pages than asked.
    pub stop: Option<String>,
}

impl Prediction {
    fn new(call: Call) -> Self {
        Self {
            call,
            ret: 0,
            pages: Vec::new(),
            zero_pages: 0,
            fast_pages: 0,
            slow_pages: 0,
            fell_back: false,
            faults: 0,
            cow_breaks: 0,
            pin_acquired: 0,
            pin_released: 0,
            pins_held: 0,
            counted_pins_held: 0,
            refcount_delta: 0,
            pincount_delta: 0,
            deviation: None,
            stop: None,
        }
    }

    fn fail(mut self, errno: i64, why: impl Into<String>) -> Self {
        self.ret = -errno;
        self.stop = Some(why.into());
        self
    }
}

/// Predicts `call` against `space`, updating `space` as the kernel would
/// (faulted pages become present, COW breaks make pages exclusive).
pub fn predict(space: &mut AddressSpace, call: &Call, rules: &Rules) -> Prediction {
    let p = Prediction::new(*call);
    let v = call.variant;
    let f = call.flags;

    // Invalid argument combinations (callers may not pass FOLL_PIN; FOLL_GET
    // and FOLL_PIN exclude each other; LONGTERM needs PIN).
    let invalid = f.pin || (v.pins() && f.get) || (!v.pins() && f.longterm && v.takes_pages());
    if invalid {
        if v.pins() && !v.fast() && rules.pin_invalid_args_return_zero {
            let mut p = p.fail(0, "invalid gup_flags");
            p.ret = 0;
            p.deviation = Some(Deviation::PinInvalidArgsReturnZero);
            return p;
        }
        return p.fail(EINVAL, "invalid gup_flags");
    }

    if call.nr_pages == 0 {
        return p;
    }
    if call.nr_pages < 0 {
        return negative_nr(space, p, rules);
    }
    let nr = call.nr_pages as u64;
    let start = call.start & !(PAGE_SIZE - 1);
    run(space, p, start, nr, rules)
}

/// `nr_pages < 0`: documented as "returns 0". The fast variants take an
/// `int` and sign-extend it into their range check; the others take an
/// `unsigned long` and see a huge count.
fn negative_nr(space: &mut AddressSpace, mut p: Prediction, rules: &Rules) -> Prediction {
    let start = p.call.start & !(PAGE_SIZE - 1);
    let wide = p.call.nr_pages as u64;
    if p.call.variant.int_nr() {
        let len = wide.wrapping_shl(12);
        match start.checked_add(len) {
            None if !rules.fast_negative_nr_overflow => {
                p.stop = Some("range overflows: 0 (as documented)".into());
                p
            }
            None => {
                p.deviation = Some(Deviation::FastNegativeNr);
                p.fail(EOVERFLOW, "start + nr_pages * PAGE_SIZE overflows")
            }
            Some(end) if end > TASK_SIZE_MAX => {
                p.deviation = Some(Deviation::FastNegativeNr);
                p.fail(EFAULT, "range beyond TASK_SIZE")
            }
            Some(_) => {
                p.deviation = Some(Deviation::FastNegativeNr);
                run(space, p, start, wide >> 12, rules)
            }
        }
    } else {
        // An unsigned long count: the walk goes on until a page fails. The
        // model's address space is finite, so this terminates.
        p.deviation = Some(Deviation::NegativeNrUnsigned);
        let span = space.vmas.iter().map(|v| v.pages.len() as u64).sum::<u64>() + 1;
        run(space, p, start, span, rules)
    }
}

fn run(
    space: &mut AddressSpace,
    mut p: Prediction,
    start: u64,
    nr: u64,
    rules: &Rules,
) -> Prediction {
    let v = p.call.variant;
    let mut taken = 0u64;
    if v.fast() {
        if start
            .checked_add(nr * PAGE_SIZE)
            .is_none_or(|end| end > TASK_SIZE_MAX)
        {
            return p.fail(EFAULT, "range beyond TASK_SIZE");
        }
        while taken < nr {
            let addr = start + taken * PAGE_SIZE;
            match fast_take(space, &p.call, addr, rules) {
                FastStep::Take(page) => {
                    record_page(&mut p, addr, page, rules);
                    taken += 1;
                }
                FastStep::Stop { rolled_back } => {
                    if rolled_back {
                        p.pin_acquired += 1;
                        p.pin_released += 1;
                    }
                    break;
                }
            }
        }
        p.fast_pages = taken;
        if taken == nr || v.fast_only() {
            p.ret = taken as i64;
            if taken < nr {
                p.stop = Some(format!("fast-only: page {taken} not takeable locklessly"));
            }
            return p;
        }
        p.fell_back = true;
    }
    let slow_start = taken;
    while taken < nr {
        let addr = start + taken * PAGE_SIZE;
        match slow_take(space, &mut p, addr, rules) {
            Ok(page) => {
                record_page(&mut p, addr, page, rules);
                taken += 1;
            }
            Err((errno, why)) => {
                p.stop = Some(format!("page {taken} at {addr:#x}: {why}"));
                if taken == 0 {
                    p.ret = -errno;
                    return p;
                }
                break;
            }
        }
    }
    p.slow_pages = taken - slow_start;
    p.ret = taken as i64;
    p
}

fn record_page(p: &mut Prediction, addr: u64, page: Present, rules: &Rules) {
    if !p.call.variant.takes_pages() {
        return;
    }
    p.pages.push(addr);
    if page.zero {
        p.zero_pages += 1;
    }
    if p.call.variant.pins() {
        p.pins_held += 1;
        if !page.zero || rules.zero_page_pins_counted {
            p.pin_acquired += 1;
            p.counted_pins_held += 1;
            if page.huge {
                p.refcount_delta += 1;
                p.pincount_delta += 1;
            } else {
                p.refcount_delta += GUP_PIN_COUNTING_BIAS;
            }
        }
    } else {
        p.refcount_delta += 1;
    }
}

/// What a FOLL_PIN adds to a small folio's refcount (include/linux/mm.h).
pub const GUP_PIN_COUNTING_BIAS: u64 = 1024;

enum FastStep {
    Take(Present),
    /// The fast path stops here; `rolled_back` when it had grabbed (and
    /// counted) the page before a later check refused it.
    Stop {
        rolled_back: bool,
    },
}

/// One page of the lockless walk (`gup_fast_pte_range`).
fn fast_take(space: &AddressSpace, call: &Call, addr: u64, rules: &Rules) -> FastStep {
    let stop = FastStep::Stop { rolled_back: false };
    let Some((vma, PageState::Present(page))) = space.page(addr) else {
        return stop;
    };
    let pin = call.variant.pins();
    let f = call.flags;
    // PROT_NONE PTEs, permission, special PTEs (the zero page, VM_IO/PFNMAP).
    if !vma.read || (f.write && !page.writable) || page.zero || vma.backing == Backing::Special {
        return stop;
    }
    // Checks made after the grab: a pin is counted, then dropped again.
    let rollback = FastStep::Stop { rolled_back: pin };
    if pin
        && f.longterm
        && f.write
        && rules.longterm_write_file_refused
        && matches!(vma.backing, Backing::File { .. })
    {
        // gup_fast_folio_allowed refuses any non-shmem file folio.
        return rollback;
    }
    if pin && !f.write && !page.writable && must_unshare(&vma, &page, call, rules, true) {
        return rollback;
    }
    FastStep::Take(page)
}

/// Whether a R/O pin must unshare the page first (`gup_must_unshare`);
/// `fast` when asked by the lockless walk, which cannot see the VMA.
fn must_unshare(vma: &VmaShape, page: &Present, call: &Call, rules: &Rules, fast: bool) -> bool {
    if !call.variant.pins() || call.flags.write {
        return false;
    }
    if !page.anon {
        return call.flags.longterm
            && rules.ro_longterm_unshares_non_anon
            && (fast || vma.is_cow());
    }
    !page.exclusive
}

/// One page of the slow path (`__get_user_pages`): VMA checks, faults,
/// then the page.
fn slow_take(
    space: &mut AddressSpace,
    p: &mut Prediction,
    addr: u64,
    rules: &Rules,
) -> Result<Present, (i64, String)> {
    let call = p.call;
    let f = call.flags;
    let Some((vma, state)) = space.page(addr) else {
        return Err((EFAULT, "no VMA".into()));
    };
    check_vma(&vma, &call, rules)?;
    let mut page = match state {
        PageState::Present(page) => page,
        PageState::Absent => {
            p.faults += 1;
            fault_in(space, vma, addr, f.write)
        }
    };
    let force_follows = rules.force_write_follows_exclusive
        && f.force
        && !vma.write
        && vma.is_cow()
        && page.anon
        && page.exclusive
        && page.dirty;
    if f.write && !page.writable && !force_follows {
        // A write fault: reuse an exclusive anonymous page, make a shared
        // mapping's page writable, or copy (COW). FOLL_FORCE writes to a
        // read-only private mapping follow a dirty PTE of an exclusive
        // anonymous page without one (`can_follow_write_pte`).
        p.faults += 1;
        if vma.shared {
            page.writable = true;
        } else {
            if !(page.anon && page.exclusive) {
                p.cow_breaks += 1;
            }
            page = Present {
                writable: vma.write,
                zero: false,
                huge: false,
                anon: true,
                exclusive: true,
                dirty: true,
            };
        }
        space.set_page(addr, PageState::Present(page));
    } else if must_unshare(&vma, &page, &call, rules, false) {
        p.faults += 1;
        p.cow_breaks += 1;
        page = Present {
            writable: false,
            zero: false,
            huge: false,
            anon: true,
            exclusive: true,
            dirty: false,
        };
        space.set_page(addr, PageState::Present(page));
    }
    Ok(page)
}

/// The slow path's refusals before any fault (`check_vma_flags`, and
/// the long-term pin of a dirty-tracked shared file mapping).
fn check_vma(vma: &VmaShape, call: &Call, rules: &Rules) -> Result<(), (i64, String)> {
    let f = call.flags;
    if vma.backing == Backing::Special {
        return Err((EFAULT, "VM_IO/VM_PFNMAP mapping".into()));
    }
    if f.write && !vma.write {
        if !f.force {
            return Err((EFAULT, "write to a read-only mapping".into()));
        }
        if !vma.is_cow() {
            return Err((EFAULT, "forced write to a shared read-only mapping".into()));
        }
    }
    if !f.write && !vma.read && !f.force {
        return Err((EFAULT, "PROT_NONE mapping".into()));
    }
    if call.variant.pins()
        && f.longterm
        && f.write
        && rules.longterm_write_file_refused
        && matches!(
            vma.backing,
            Backing::File {
                dirty_tracked: true
            }
        )
        && vma.shared
    {
        return Err((
            EFAULT,
            "long-term write pin of a dirty-tracked file mapping".into(),
        ));
    }
    Ok(())
}

/// Maps a page for a fault at `addr`; THP-eligible anonymous write faults
/// map the whole aligned huge page.
fn fault_in(space: &mut AddressSpace, vma: VmaShape, addr: u64, write: bool) -> Present {
    let page = match (vma.backing, vma.shared, write) {
        (Backing::Anon, false, false) => Present {
            zero: true,
            ..Present::default()
        },
        (Backing::Anon, false, true) => Present {
            writable: vma.write,
            anon: true,
            exclusive: true,
            dirty: true,
            ..Present::default()
        },
        // Private file pages are mapped read-only until written (COW).
        (_, false, _) => Present::default(),
        // Shared: page cache; writable at once unless writes are tracked.
        (backing, true, write) => Present {
            writable: vma.write
                && (write
                    || !matches!(
                        backing,
                        Backing::File {
                            dirty_tracked: true
                        }
                    )),
            ..Present::default()
        },
    };
    let huge_bytes = HUGE_PAGE_PAGES * PAGE_SIZE;
    let block = addr & !(huge_bytes - 1);
    if vma.thp && page.anon && block >= vma.start && block + huge_bytes <= vma.end {
        let huge = Present { huge: true, ..page };
        for i in 0..HUGE_PAGE_PAGES {
            space.set_page(block + i * PAGE_SIZE, PageState::Present(huge));
        }
        return huge;
    }
    space.set_page(addr, PageState::Present(page));
    page
}
