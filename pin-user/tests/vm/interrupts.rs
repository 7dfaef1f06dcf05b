//! Releases made by interrupts. An O_DIRECT write larger than one bio
//! (BIO_MAX_VECS = 256 pages) goes through the block layer's multi-bio
//! path, whose completion handler releases the pages (6.3+:
//! `bio_release_pages` -> `unpin_user_folio`) wherever the device completes
//! the request. null_blk with `irqmode=2` completes each request from an
//! hrtimer, in hard interrupt context, on top of whatever task runs then
//! (often the idle task, or this test). Those releases belong to no
//! interrupted task: they go to the `[irq]` row, and the totals keep them.
//! (PREEMPT_RT runs the timer callbacks in threads instead.)

use pin_common::{GUP_FUNC_COUNT, IRQ_TGID};
use pinwatch::{attribution::name_sites, figures::caller_views};

use crate::harness::{harness, id_of, measure, odirect_variant};

/// Pages in a full bio (the kernel's `BIO_MAX_VECS`).
const BIO_MAX_VECS: u64 = 256;
/// Two full bios per write.
const PAGES: u64 = 2 * BIO_MAX_VECS;
const CALLS: u64 = 10;

#[test]
fn odirect_completions_in_interrupt_context_are_the_irq_rows() {
    let h = harness();
    let (report, delta) = measure(
        &h,
        &[
            "odirect-write",
            "--file",
            "/dev/nullb0",
            "--calls",
            &CALLS.to_string(),
            "--pages",
            &PAGES.to_string(),
        ],
    );
    assert_eq!(report.calls, CALLS);
    let variant = odirect_variant(&h);
    let taken = delta.gup[id_of(variant)].pages_returned;
    let released: u64 = delta.release.iter().map(|r| r.pages).sum();
    let by_row: Vec<(u32, String, u64)> = delta
        .procs
        .iter()
        .filter(|(_, p)| p.released > 0)
        .map(|(pid, p)| (*pid, p.comm.to_string(), p.released))
        .collect();
    let vm = delta.vmstat.expect("vmstat pin counters");
    eprintln!(
        "\nFAULT|{}|{}|O_DIRECT writes of {PAGES} pages to null_blk (irqmode=2: completions in a timer interrupt), {CALLS} calls|\
         {variant} took {taken} pages; released {released} (vmstat +{} -{}); releasing rows {by_row:?}",
        h.release,
        h.attach_arg(),
        vm.nr_foll_pin_acquired,
        vm.nr_foll_pin_released,
    );
    assert_eq!(taken, CALLS * PAGES);
    if h.version < (6, 3) {
        // FOLL_GET: the block layer drops its references with put_page,
        // which is no pin release; nothing may show one.
        assert_eq!(variant, "get_user_pages_fast");
        assert_eq!(released, 0, "{by_row:?}");
        return;
    }
    assert_eq!(released, CALLS * PAGES, "every pinned page released");
    assert_eq!(vm.nr_foll_pin_released, CALLS * PAGES);
    // All by the block layer's release function: unpin_user_folio from
    // 6.11 (counted at the release hook where its code only jumps there),
    // unpin_user_page before.
    let releaser = if h.version >= (6, 11) {
        "unpin_user_folio"
    } else {
        "unpin_user_page"
    };
    let at_hook = &h.probes.release_at_hook;
    eprintln!(
        "OBSERVED kernel={} attach={} release functions {:?}; counted at the hook: {at_hook:?}",
        h.release,
        h.attach_arg(),
        delta.release
    );
    assert_eq!(
        delta.release[id_of(releaser) - GUP_FUNC_COUNT].pages,
        CALLS * PAGES,
        "{releaser}"
    );
    // Debian's 6.12 builds compile unpin_user_folio as a jump to
    // gup_put_folio (objdump of its vmlinux), so the hook counts it, with
    // every mechanism; 6.18 and 7.3 inline gup_put_folio into it instead
    // (one probe a page either way).
    let expected = h.version == (6, 12);
    assert_eq!(
        at_hook.as_deref().ok(),
        expected.then_some("unpin_user_folio"),
        "{at_hook:?}"
    );
    if h.release.contains("-rt-") {
        // PREEMPT_RT runs timer callbacks in the per-CPU `ktimers` threads,
        // in task context: the thread that completes the I/O releases.
        assert!(
            by_row
                .iter()
                .all(|(_, comm, _)| comm.starts_with("ktimers/")),
            "releasing rows {by_row:?}"
        );
        return;
    }
    // All of them by the completion interrupt, none charged to a task.
    assert_eq!(
        by_row,
        vec![(IRQ_TGID, "[irq]".to_string(), CALLS * PAGES)],
        "releasing rows"
    );
    assert_eq!(
        delta.health[pin_common::Health::IrqReleaseNotFollowed as usize],
        0
    );
    // Lifetimes know the owner (the pin's call site) and close every pin,
    // whoever the interrupt interrupted.
    let views = caller_views(&delta.callers, &name_sites(&delta.callers));
    let site = views
        .iter()
        .find(|v| v.variant == variant)
        .unwrap_or_else(|| panic!("no caller of {variant}: {views:#?}"));
    if h.lifetimes_on() {
        let untracked = delta.health[pin_common::Health::UntrackedRelease as usize];
        eprintln!(
            "OBSERVED kernel={} attach={} lifetimes: tracked {} released {} untracked releases {untracked}",
            h.release,
            h.attach_arg(),
            site.pins_tracked,
            site.pins_released,
        );
        assert_eq!(site.pins_tracked, CALLS * PAGES, "{site:#?}");
        // Every tracked pin's release is timed, or counted as a release of
        // an untracked pin: the one race the lifetime table admits (see
        // `folio_released`), a pin of a folio between its last release's
        // decrement and the removal of its record, loses that record. It
        // happens here because the block layer wakes the writer before it
        // releases the last bio's pages (`blkdev_bio_end_io`), so the next
        // call can pin the buffer while the interrupt still unpins it.
        // Only those pages can race: at most one bio (BIO_MAX_VECS = 256
        // pages) for each call after the first.
        assert_eq!(
            site.pins_released + untracked,
            CALLS * PAGES,
            "every tracked pin's release timed or counted: {site:#?}"
        );
        assert!(
            untracked <= (CALLS - 1) * BIO_MAX_VECS,
            "{untracked} untracked releases: more than the pages that can race"
        );
    }
}
