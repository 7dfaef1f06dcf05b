//! Unit and property tests of the model; no kernel involved.

use proptest::prelude::*;

use super::paths::{self, pages_spanned};
use super::*;

const BASE: u64 = 0x7f00_0000_0000;
const V6_1: KernelVersion = KernelVersion::with_patch(6, 1, 119);
const V6_1_DEBIAN: KernelVersion = KernelVersion::with_patch(6, 1, 192);
const V6_12: KernelVersion = KernelVersion::new(6, 12);

fn warm() -> Present {
    Present {
        writable: true,
        anon: true,
        exclusive: true,
        ..Present::default()
    }
}

fn anon(pages: u64, state: PageState) -> AddressSpace {
    let mut vma = Vma::new(BASE, pages, true, true, false, Backing::Anon);
    vma.pages.fill(state);
    AddressSpace { vmas: vec![vma] }
}

fn call(variant: Variant, start: u64, nr: i64, flags: GupFlags) -> Call {
    Call {
        variant,
        start,
        nr_pages: nr,
        flags,
    }
}

fn rules(v: KernelVersion) -> Rules {
    Rules::for_version(v)
}

/// `predict` of one call at `BASE` under 6.12's rules.
fn on_6_12(space: &mut AddressSpace, variant: Variant, nr: i64, flags: GupFlags) -> Prediction {
    predict(space, &call(variant, BASE, nr, flags), &rules(V6_12))
}

#[test]
fn warm_fast_pin_takes_everything_locklessly() {
    let mut space = anon(8, PageState::Present(warm()));
    let p = on_6_12(&mut space, Variant::PinUserPagesFast, 8, GupFlags::WRITE);
    assert_eq!(
        (p.ret, p.fast_pages, p.slow_pages, p.fell_back),
        (8, 8, 0, false)
    );
    assert_eq!((p.faults, p.pin_acquired, p.pins_held), (0, 8, 8));
    assert_eq!((p.refcount_delta, p.pincount_delta), (8 * 1024, 0));
    let g = on_6_12(&mut space, Variant::GetUserPagesFast, 8, GupFlags::NONE);
    assert_eq!((g.refcount_delta, g.pin_acquired), (8, 0));
}

#[test]
fn cold_fast_pin_falls_back_and_faults() {
    let mut space = anon(8, PageState::Absent);
    let p = on_6_12(&mut space, Variant::PinUserPagesFast, 8, GupFlags::WRITE);
    assert_eq!(
        (p.ret, p.fast_pages, p.slow_pages, p.fell_back),
        (8, 0, 8, true)
    );
    assert_eq!((p.faults, p.cow_breaks, p.pin_acquired), (8, 0, 8));
    // The same call again finds everything present.
    let again = on_6_12(&mut space, Variant::PinUserPagesFast, 8, GupFlags::WRITE);
    assert_eq!((again.fast_pages, again.faults), (8, 0));
}

#[test]
fn read_of_untouched_memory_pins_the_zero_page_counted_only_on_old_kernels() {
    for (v, counted) in [(V6_1, 8), (V6_1_DEBIAN, 0), (V6_12, 0)] {
        let mut space = anon(8, PageState::Absent);
        let p = predict(
            &mut space,
            &call(Variant::PinUserPagesRemote, BASE, 8, GupFlags::NONE),
            &rules(v),
        );
        assert_eq!((p.ret, p.zero_pages, p.faults), (8, 8, 8), "{v}");
        assert_eq!((p.pin_acquired, p.pins_held), (counted, 8), "{v}");
    }
}

#[test]
fn a_hole_gives_a_partial_count_then_efault() {
    let mut space = anon(4, PageState::Present(warm()));
    let p = on_6_12(&mut space, Variant::PinUserPagesRemote, 8, GupFlags::NONE);
    assert_eq!(p.ret, 4);
    assert!(p.stop.as_deref().unwrap().contains("no VMA"));
    let p = predict(
        &mut space,
        &call(
            Variant::PinUserPagesRemote,
            BASE + 4 * PAGE_SIZE,
            4,
            GupFlags::NONE,
        ),
        &rules(V6_12),
    );
    assert_eq!((p.ret, p.pins_held), (-14, 0));
}

#[test]
fn permissions_decide_between_efault_and_forced_cow() {
    let mut ro = anon(
        2,
        PageState::Present(Present {
            writable: false,
            ..warm()
        }),
    );
    ro.vmas[0].write = false;
    let plain = predict(
        &mut ro.clone(),
        &call(Variant::PinUserPagesRemote, BASE, 2, GupFlags::WRITE),
        &rules(V6_12),
    );
    assert_eq!(plain.ret, -14);
    let force = GupFlags {
        write: true,
        force: true,
        ..GupFlags::NONE
    };
    let forced = predict(
        &mut ro,
        &call(Variant::GetUserPagesRemote, BASE, 1, force),
        &rules(V6_12),
    );
    // An exclusive anonymous page is reused: a fault, no copy.
    assert_eq!((forced.ret, forced.faults, forced.cow_breaks), (1, 1, 0));
    let mut none = anon(1, PageState::Present(warm()));
    none.vmas[0].read = false;
    none.vmas[0].write = false;
    let p = predict(
        &mut none,
        &call(Variant::PinUserPagesFast, BASE, 1, GupFlags::NONE),
        &rules(V6_12),
    );
    assert_eq!((p.ret, p.fell_back), (-14, true));
}

#[test]
fn read_only_pins_unshare_pages_shared_with_a_fork() {
    let shared = Present {
        writable: false,
        exclusive: false,
        ..warm()
    };
    let mut space = anon(4, PageState::Present(shared));
    let p = on_6_12(&mut space, Variant::PinUserPagesFast, 4, GupFlags::NONE);
    // The lockless walk grabs, sees it must unshare, rolls back, falls back.
    assert_eq!(
        (p.fast_pages, p.fell_back, p.cow_breaks, p.faults),
        (0, true, 4, 4)
    );
    assert_eq!((p.pin_acquired, p.pin_released), (5, 1));
    // A FOLL_GET reference needs no unsharing.
    let mut space = anon(4, PageState::Present(shared));
    let g = on_6_12(&mut space, Variant::GetUserPagesFast, 4, GupFlags::NONE);
    assert_eq!((g.fast_pages, g.faults, g.pin_acquired), (4, 0, 0));
}

#[test]
fn longterm_write_pins_of_dirty_tracked_files_are_refused_since_6_5() {
    let mut vma = Vma::new(
        BASE,
        2,
        true,
        true,
        true,
        Backing::File {
            dirty_tracked: true,
        },
    );
    vma.pages.fill(PageState::Present(Present {
        writable: true,
        ..Present::default()
    }));
    let space = AddressSpace { vmas: vec![vma] };
    let lt = GupFlags {
        write: true,
        longterm: true,
        ..GupFlags::NONE
    };
    let new = predict(
        &mut space.clone(),
        &call(Variant::PinUserPagesFast, BASE, 2, lt),
        &rules(V6_12),
    );
    assert_eq!(
        (new.ret, new.fell_back, new.pin_acquired, new.pin_released),
        (-14, true, 1, 1)
    );
    let old = predict(
        &mut space.clone(),
        &call(Variant::PinUserPages, BASE, 2, lt),
        &rules(V6_1),
    );
    assert_eq!((old.ret, old.pin_acquired), (2, 2));
    // io_uring on 6.1 then refuses the file-backed buffer itself.
    let path = paths::io_uring_register(&mut space.clone(), BASE, 2 * PAGE_SIZE, &rules(V6_1));
    assert_eq!((path.result, path.released, path.held), (-95, 2, 0));
}

#[test]
fn named_deviations_on_bad_arguments() {
    let mut space = anon(1, PageState::Present(warm()));
    let neg = |v| {
        predict(
            &mut space.clone(),
            &call(Variant::PinUserPagesFast, BASE, -1, GupFlags::NONE),
            &rules(v),
        )
    };
    assert_eq!((neg(V6_1).ret, neg(V6_1).deviation), (0, None));
    assert_eq!(
        (neg(V6_12).ret, neg(V6_12).deviation),
        (-75, Some(Deviation::FastNegativeNr))
    );
    let bad = GupFlags {
        get: true,
        ..GupFlags::NONE
    };
    let p = predict(
        &mut space,
        &call(Variant::PinUserPages, BASE, 1, bad),
        &rules(V6_12),
    );
    assert_eq!(
        (p.ret, p.deviation),
        (0, Some(Deviation::PinInvalidArgsReturnZero))
    );
    let p = predict(
        &mut space,
        &call(Variant::PinUserPages, BASE, 1, bad),
        &rules(V6_1),
    );
    assert_eq!((p.ret, p.deviation), (-22, None));
    assert_eq!(
        on_6_12(&mut space, Variant::GetUserPages, 0, GupFlags::NONE).ret,
        0
    );
}

#[test]
fn thp_write_fault_maps_a_whole_huge_page() {
    let base = 0x7f00_0020_0000;
    let mut vma = Vma::new(base, 1024, true, true, false, Backing::Anon);
    vma.thp = true;
    let mut space = AddressSpace { vmas: vec![vma] };
    let p = predict(
        &mut space,
        &call(Variant::PinUserPagesFast, base, 16, GupFlags::WRITE),
        &rules(V6_12),
    );
    assert_eq!((p.ret, p.faults), (16, 1));
    // Pins of a large folio go to _pincount, one reference each.
    assert_eq!((p.refcount_delta, p.pincount_delta), (16, 16));
    assert!(matches!(
        space.page(base + 511 * PAGE_SIZE),
        Some((_, PageState::Present(Present { huge: true, .. })))
    ));
}

#[test]
fn process_vm_paths_split_at_holes() {
    let mut space = anon(4, PageState::Present(warm()));
    let path = paths::process_vm(&mut space, BASE, 8 * PAGE_SIZE, false, &rules(V6_12));
    let rets: Vec<i64> = path.calls.iter().map(|c| c.ret).collect();
    assert_eq!(rets, [4, -14]);
    assert_eq!((path.result, path.released), (4 * PAGE_SIZE as i64, 4));
    assert_eq!(pages_spanned(BASE + 100, 64 * PAGE_SIZE), 65);
    assert!(
        paths::process_vm(&mut space, BASE, 0, false, &rules(V6_12))
            .calls
            .is_empty()
    );
}

#[test]
fn ledger_catches_double_release() {
    let mut ledger = PinLedger::default();
    ledger.pin(&[1, 2]);
    ledger.unpin(&[1]).unwrap();
    assert_eq!(ledger.outstanding(), 1);
    assert_eq!(ledger.unpin(&[1]), Err(LedgerError::NotPinned(1)));
}

fn any_present() -> impl Strategy<Value = PageState> {
    prop_oneof![
        Just(PageState::Absent),
        any::<(bool, bool, bool, bool)>().prop_map(|(writable, zero, exclusive, dirty)| {
            PageState::Present(Present {
                writable: writable && !zero,
                zero,
                huge: false,
                anon: !zero,
                exclusive: exclusive && !zero,
                dirty: dirty && !zero,
            })
        }),
    ]
}

fn any_space() -> impl Strategy<Value = AddressSpace> {
    prop::collection::vec(
        (
            1u64..6,
            0u64..3,
            any::<(bool, bool, bool)>(),
            0u8..4,
            prop::collection::vec(any_present(), 6),
        ),
        1..4,
    )
    .prop_map(|specs| {
        let mut space = AddressSpace::default();
        let mut at = BASE;
        for (pages, gap, (read, write, shared), backing, states) in specs {
            let backing = match backing {
                0 => Backing::Anon,
                1 => Backing::Shmem,
                2 => Backing::File {
                    dirty_tracked: true,
                },
                _ => Backing::Special,
            };
            let mut vma = Vma::new(at, pages, read, write, shared, backing);
            for (page, state) in vma.pages.iter_mut().zip(states) {
                *page = state;
            }
            at = vma.end + gap * PAGE_SIZE;
            space.map(vma);
        }
        space
    })
}

fn any_call() -> impl Strategy<Value = Call> {
    (
        prop::sample::select(Variant::ALL.to_vec()),
        0u64..20,
        -3i64..20,
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(variant, page, nr, (write, force, longterm))| Call {
            variant,
            start: BASE + page * PAGE_SIZE,
            nr_pages: nr,
            flags: GupFlags {
                write,
                force,
                longterm: longterm && variant.pins(),
                ..GupFlags::NONE
            },
        })
}

proptest! {
    /// The contract's invariants hold for any space, call and kernel.
    #[test]
    fn contract_invariants(mut space in any_space(), c in any_call(), new in any::<bool>()) {
        let r = rules(if new { V6_12 } else { V6_1 });
        let p = predict(&mut space, &c, &r);
        if p.deviation.is_none() {
            prop_assert!(p.ret <= c.nr_pages.max(0), "ret {} > nr {}", p.ret, c.nr_pages);
        }
        if c.nr_pages > 0 || p.deviation.is_none() {
            prop_assert!(p.ret >= 0 || p.pages.is_empty(), "error with pages taken");
        }
        if p.ret >= 0 {
            prop_assert_eq!(p.fast_pages + p.slow_pages, p.ret as u64);
            if c.variant.takes_pages() {
                prop_assert_eq!(p.pages.len() as u64, p.ret as u64);
            }
        } else {
            prop_assert_eq!(p.pins_held, 0);
        }
        prop_assert!(p.pin_released <= p.pin_acquired);
        prop_assert!(p.cow_breaks <= p.faults);
        if !c.variant.pins() {
            prop_assert_eq!(p.pin_acquired, 0);
        }
    }

    /// Every pin is released exactly once after unpinning what was returned.
    #[test]
    fn pins_balance(mut space in any_space(), calls in prop::collection::vec(any_call(), 1..6)) {
        let r = rules(V6_12);
        let mut ledger = PinLedger::default();
        let mut taken = Vec::new();
        for c in &calls {
            let p = predict(&mut space, c, &r);
            if c.variant.pins() && p.ret > 0 {
                ledger.pin(&p.pages);
                taken.push(p.pages.clone());
            }
        }
        for pages in taken.iter().rev() {
            prop_assert!(ledger.unpin(pages).is_ok());
        }
        prop_assert!(ledger.balanced());
        for pages in taken.iter().take(1) {
            if let Some(first) = pages.first() {
                prop_assert!(ledger.unpin(&[*first]).is_err());
            }
        }
    }
}

#[test]
fn versions_come_from_the_upstream_release() {
    let debian = "Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)";
    assert_eq!(
        KernelVersion::from_proc_version(debian, "6.1.0-56-cloud-amd64"),
        Some(KernelVersion::with_patch(6, 1, 192))
    );
    assert_eq!(
        KernelVersion::from_proc_version("Linux version 6.18.44", "6.18.44-fc"),
        Some(KernelVersion::with_patch(6, 18, 44))
    );
    assert_eq!(KernelVersion::parse("garbage"), None);
}

const V5_10: KernelVersion = KernelVersion::with_patch(5, 10, 223);

#[test]
fn force_write_to_read_only_page_faults_once_before_6_0() {
    // A warm, dirty, exclusive anonymous page behind PROT_READ.
    let read_only = |v| {
        let mut vma = Vma::new(BASE, 1, true, false, false, Backing::Anon);
        vma.pages.fill(PageState::Present(Present {
            writable: false,
            dirty: true,
            ..warm()
        }));
        let mut space = AddressSpace { vmas: vec![vma] };
        paths::proc_mem(&mut space, BASE, 8, true, true, &rules(v))
    };
    let new = read_only(V6_12);
    assert_eq!((new.result, new.faults()), (8, 0));
    // 5.10 follows the PTE only with FOLL_COW, set by a first write fault
    // that reuses the exclusive page (no copy).
    let old = read_only(V5_10);
    assert_eq!((old.result, old.faults()), (8, 1));
    assert_eq!(old.calls[0].cow_breaks, 0);
}

#[test]
fn unforced_proc_mem_write_to_read_only_page_is_eio() {
    // CONFIG_PROC_MEM_FORCE_PTRACE (Debian's 7.x) for one's own memory: a
    // plain FOLL_WRITE on a read-only VMA, refused before any fault.
    let mut vma = Vma::new(BASE, 1, true, false, false, Backing::Anon);
    vma.pages.fill(PageState::Present(warm()));
    let mut space = AddressSpace { vmas: vec![vma] };
    let p = paths::proc_mem(&mut space, BASE, 8, true, false, &rules(V6_12));
    assert_eq!((p.result, p.faults(), p.calls.len()), (-5, 0, 1));
    assert_eq!(p.calls[0].ret, -14);
    assert!(!p.calls[0].call.flags.force);
}

#[test]
fn proc_mem_force_is_a_choice_from_6_1() {
    use crate::model::rules::ProcMemForce;
    assert_eq!(
        rules(V5_10).proc_mem_force,
        Some(ProcMemForce::Always),
        "always forced before the option existed"
    );
    assert_eq!(rules(V6_1).proc_mem_force, None);
    assert_eq!(rules(V6_12).proc_mem_force, None);
    let ptrace = rules(V6_12).with_proc_mem_force(ProcMemForce::from_param("ptrace"));
    assert_eq!(ptrace.proc_mem_force, Some(ProcMemForce::Ptrace));
    assert!(!ProcMemForce::Ptrace.forces_self());
    assert!(ProcMemForce::Always.forces_self());
    // An unreadable setting keeps what the version says.
    assert_eq!(rules(V5_10).with_proc_mem_force(None), rules(V5_10));
}

#[test]
fn madv_populate_is_einval_before_5_14() {
    let mut space = anon(4, PageState::Absent);
    let old = paths::populate(&mut space, BASE, 4 * PAGE_SIZE, true, &rules(V5_10));
    assert_eq!((old.result, old.calls.len()), (-22, 0));
    let new = paths::populate(&mut space, BASE, 4 * PAGE_SIZE, true, &rules(V6_12));
    assert_eq!((new.result, new.faults()), (0, 4));
}
