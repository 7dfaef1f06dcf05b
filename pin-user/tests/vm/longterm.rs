//! FOLL_LONGTERM pins of pages in ZONE_MOVABLE: GUP migrates them first,
//! releasing the pins it took itself (6.1 `__gup_longterm_locked`, 6.12
//! `migrate_longterm_unpinnable_folios`) through an unpin call the
//! compiler inlined, so no unpin probe sees it: only `gup_put_folio` does.
//! Measured before it was hooked (6.12, io_uring registering 3 x 16 pages
//! with `movablecore=50%`): vmstat acquired and released 64 pages each,
//! pinwatch saw 48 released.
//!
//! The matrix boots with `movablecore=50%` for this module (where user
//! pages come from ZONE_MOVABLE first); other boots have no movable zone,
//! and there GUP must release nothing itself.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::harness::{Expect, check, harness, io_uring_variant, measure, pinwatch_bin};
use crate::processes::{start_pinwatch, wait_within};

/// Whether this boot put memory in ZONE_MOVABLE.
fn movable_zone() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .expect("/proc/cmdline")
        .contains("movablecore=")
}

fn pgmigrate_success() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .expect("/proc/vmstat")
        .lines()
        .find_map(|l| l.strip_prefix("pgmigrate_success "))
        .map(|n| n.trim().parse().expect("pgmigrate_success value"))
        .unwrap_or(0)
}

const CALLS: u64 = 3;
const PAGES: u64 = 16;

/// Whether a long-term pin moves pages out of ZONE_MOVABLE here: with
/// `movablecore` set, from 5.13 ("mm/gup: migrate pinned pages out of
/// movable zone"); 5.10 migrates only CMA pages and pins movable ones
/// where they are, so GUP releases nothing itself there.
fn migrates(h: &crate::harness::Harness) -> bool {
    movable_zone() && h.version >= (5, 13)
}

#[test]
fn longterm_pins_count_the_releases_gup_makes_itself() {
    let h = harness();
    let args = [
        "io-uring-register",
        "--calls",
        &CALLS.to_string(),
        "--pages",
        &PAGES.to_string(),
    ];
    let migrated_before = pgmigrate_success();
    let (report, delta) = measure(&h, &args);
    let migrated = pgmigrate_success() - migrated_before;
    let internal = delta.balance.gup_released;
    eprintln!(
        "OBSERVED kernel={} attach={:?} movable={} gup_released={internal} pgmigrate_success={migrated}",
        h.release,
        h.mode,
        movable_zone()
    );
    // Calls, pages, every variant, per process, health, and vmstat:
    // acquired = pages returned + GUP's own, released = callers' + GUP's
    // own, exactly.
    let (variant, _) = io_uring_variant(&h);
    check(
        &h,
        &args.join(" "),
        &report,
        &delta,
        Expect::new(variant, CALLS, CALLS * PAGES),
    );
    if migrates(&h) {
        // The buffer's pages start in ZONE_MOVABLE, so the first
        // registration migrates them (at most all of every call's pages);
        // each page GUP released itself was migrated.
        assert!(
            (1..=CALLS * PAGES).contains(&internal),
            "GUP's own releases: {internal}"
        );
        assert!(
            migrated >= internal,
            "pgmigrate_success {migrated} < GUP's own releases {internal}"
        );
    } else {
        assert_eq!(
            internal, 0,
            "GUP released pins itself without migrating out of ZONE_MOVABLE"
        );
    }
}

/// `stat` shows GUP's own releases without `--lifetimes` too: the hook on
/// gup_put_folio is always attached.
#[test]
fn longterm_stat_reports_gup_own_releases() {
    let h = harness();
    let attach = h.attach_arg();
    let mut stat = start_pinwatch(
        &[
            "stat",
            "--json",
            "--interval",
            "6s",
            "--count",
            "1",
            "--attach",
            &attach,
        ],
        "attached",
    );
    let status = Command::new(pinwatch_bin())
        .args([
            "workload",
            "io-uring-register",
            "--calls",
            "3",
            "--pages",
            "16",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("workload");
    assert!(status.success(), "workload: {status}");
    wait_within(&mut stat, Duration::from_secs(60), "stat");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stat.stdout.take().expect("stdout"), &mut out)
        .expect("stat output");
    let view: serde_json::Value = serde_json::from_str(out.trim()).expect("stat JSON");
    let internal = view["gup_internal_pages"].as_u64().unwrap_or(0);
    if migrates(&h) {
        assert!(
            (1..=CALLS * PAGES).contains(&internal),
            "stat's gup_internal_pages {internal}:\n{out}"
        );
    } else {
        assert_eq!(internal, 0, "stat's gup_internal_pages:\n{out}");
    }
}
