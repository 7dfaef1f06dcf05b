//! Rendered-frame snapshots (ratatui's TestBackend + insta) of the
//! dashboard fed synthetic frames, at 80x24 and 160x48.

use std::collections::BTreeMap;

use pin_common::{FUNCS, GUP_FUNC_COUNT, GupStats, ReleaseStats};
use ratatui::{Terminal, backend::TestBackend};

use super::{
    app::{App, Filter, Frame, HeaderInfo},
    keys::handle_key,
    render::draw,
};
use crate::{
    snapshot::{Delta, ProcTotals},
    vmstat::PinCounters,
};

fn id(name: &str) -> usize {
    FUNCS.iter().position(|f| f.name == name).unwrap()
}

/// A frame whose numbers scale with `step`, so trends have a shape.
fn frame(step: u64) -> Frame {
    let mut gup = vec![GupStats::ZERO; GUP_FUNC_COUNT];
    let fast = &mut gup[id("pin_user_pages_fast")];
    fast.calls = 100 + step * 10;
    fast.pages_requested = fast.calls * 16;
    fast.pages_returned = fast.pages_requested - 16;
    fast.partial = 1;
    fast.fallbacks = step * 3;
    fast.slow_pages = step * 3 * 16;
    fast.fast_pages = fast.pages_returned - fast.slow_pages;
    fast.latency_log2[9] = fast.calls - 5;
    fast.latency_log2[14] = 5;
    let remote = &mut gup[id("pin_user_pages_remote")];
    remote.calls = 50;
    remote.pages_requested = 50 * 65;
    remote.pages_returned = 50 * 65 - 2;
    remote.errors = 2;
    remote.errno[14] = 2;
    remote.latency_log2[16] = 50;
    let get = &mut gup[id("get_user_pages_fast")];
    get.calls = 40;
    get.pages_requested = 40;
    get.pages_returned = 40;
    get.fast_pages = 40;
    get.latency_log2[8] = 40;
    let mut release = vec![ReleaseStats::default(); FUNCS.len() - GUP_FUNC_COUNT];
    release[id("unpin_user_folio") - GUP_FUNC_COUNT] = ReleaseStats {
        calls: 300,
        pages: 300,
    };
    release[id("unpin_user_pages_dirty_lock") - GUP_FUNC_COUNT] = ReleaseStats {
        calls: 50,
        pages: 3000,
    };
    // What the kernel's PIN_BALANCE would hold for these counters.
    let balance = pin_common::PinBalance {
        pinned: (0..GUP_FUNC_COUNT)
            .filter(|&i| FUNCS[i].is_pin)
            .map(|i| gup[i].pages_returned)
            .sum(),
        released: release.iter().map(|r| r.pages).sum(),
        gup_released: 0,
        irq_released: 0,
    };
    let procs = processes();
    let (cgroup_names, cgroups) = cgroups();
    Frame {
        delta: Delta {
            seconds: 1.0,
            sites: crate::attribution::sample_callers().1,
            cgroup_names,
            counts: crate::snapshot::CounterSet {
                gup,
                release,
                procs,
                cgroups,
                health: [0; pin_common::HEALTH_COUNT],
                misses: Default::default(),
                callers: crate::attribution::sample_callers().0,
                failures: Default::default(),
                denials: Default::default(),
                evicted: Default::default(),
                balance,
                vmstat: Some(PinCounters {
                    nr_foll_pin_acquired: 4848,
                    nr_foll_pin_released: 4448,
                }),
            },
        },
        memlock: BTreeMap::from([(
            4242,
            crate::limits::MemlockState {
                limit: Some(64 << 20),
                limit_hard: Some(64 << 20),
                locked: 0,
                pinned: 1600 << 10,
            },
        )]),
        uptime_s: 93784.0,
    }
}

/// fio holding pins, qemu balanced, sh with unpinned references.
fn processes() -> crate::snapshot::ProcTable {
    let mut procs = crate::snapshot::ProcTable::new();
    procs.insert(
        4242,
        ProcTotals {
            comm: "fio".into(),
            calls: 100,
            pages: 1600,
            pinned: 1600,
            released: 1200,
            first_ns: 0,
        },
    );
    procs.insert(
        777,
        ProcTotals {
            comm: "qemu-system-x86".into(),
            calls: 50,
            pages: 3248,
            pinned: 3248,
            released: 3248,
            first_ns: 0,
        },
    );
    procs.insert(
        31,
        ProcTotals {
            comm: "sh".into(),
            calls: 40,
            pages: 40,
            pinned: 0,
            released: 0,
            first_ns: 0,
        },
    );
    procs
}

/// A docker container and a systemd service, each interval.
#[allow(clippy::type_complexity)]
fn cgroups() -> (
    BTreeMap<u64, crate::cgroups::CgroupIdentity>,
    BTreeMap<u64, crate::snapshot::CgroupTotals>,
) {
    let docker = "/system.slice/docker-5f0c6e1d2b3a49587a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f.scope";
    let cgroup = |calls, pages, released| crate::snapshot::CgroupTotals {
        calls,
        pages,
        pinned: pages,
        released,
        ..Default::default()
    };
    let names = BTreeMap::from([
        (5001, crate::cgroups::CgroupIdentity::of_path(docker)),
        (
            5002,
            crate::cgroups::CgroupIdentity::of_path("/system.slice/qemu.service"),
        ),
    ]);
    let totals = BTreeMap::from([
        (5001, cgroup(100, 1600, 1200)),
        (5002, cgroup(50, 3248, 3248)),
    ]);
    (names, totals)
}

fn app() -> App {
    let mut app = App::new(
        HeaderInfo {
            kernel: "6.12.117+deb12-cloud-amd64".into(),
            probes: "19 fentry, 0 kprobe, 1 absent".into(),
            interval_s: 1.0,
            untraced: vec!["get_user_pages_unlocked"],
        },
        None,
    );
    for step in 0..12 {
        app.ingest(frame(step));
    }
    app
}

fn render(app: &App, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    format!("{}", terminal.backend())
}

#[test]
fn dashboard_80x24() {
    insta::assert_snapshot!(render(&app(), 80, 24));
}

#[test]
fn dashboard_160x48() {
    insta::assert_snapshot!(render(&app(), 160, 48));
}

#[test]
fn help_overlay_80x24() {
    let mut app = app();
    handle_key(
        &mut app,
        ratatui::crossterm::event::KeyEvent::from(ratatui::crossterm::event::KeyCode::Char('?')),
    );
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn details_and_filter_160x48() {
    let mut app = app();
    app.filter = Filter::parse("fio");
    app.show_details = true;
    insta::assert_snapshot!(render(&app, 160, 48));
}

#[test]
fn cgroups_table_and_details_80x24() {
    let mut app = app();
    handle_key(
        &mut app,
        ratatui::crossterm::event::KeyEvent::from(ratatui::crossterm::event::KeyCode::Char('c')),
    );
    let table = render(&app, 80, 24);
    assert!(table.contains("docker 5f0c6e1d2b3a"), "{table}");
    assert!(table.contains("qemu.service"), "{table}");
    insta::assert_snapshot!(table);
    app.focus = super::app::Panel::Processes;
    app.process_sel = 1;
    app.show_details = true;
    let details = render(&app, 80, 24);
    assert!(details.contains("still pinned 4800"), "{details}");
    insta::assert_snapshot!(details);
}

#[test]
fn empty_dashboard_renders() {
    let app = App::new(
        HeaderInfo {
            kernel: "k".into(),
            probes: "p".into(),
            interval_s: 1.0,
            untraced: Vec::new(),
        },
        None,
    );
    let screen = render(&app, 80, 24);
    assert!(screen.contains("no GUP calls yet"), "{screen}");
    // Tiny terminals must not panic either.
    render(&app, 20, 5);
}

#[test]
fn ingest_accumulates_and_tracks_outstanding() {
    let app = app();
    let fast = &app.totals[id("pin_user_pages_fast")];
    assert_eq!(fast.calls, (0..12).map(|s| 100 + s * 10).sum::<u64>());
    assert_eq!(app.history.len(), 12);
    let fio = app.procs.get(&4242).unwrap();
    assert_eq!(fio.outstanding(), 12 * 400);
    assert_eq!(fio.memlock.map(|m| m.pinned), Some(1600 << 10));
    assert_eq!(app.process_rows()[0].pid, 777, "most pins/s first");
}

#[test]
fn interrupt_releases_make_per_process_held_unknown() {
    let mut app = app();
    let before = render(&app, 160, 48);
    assert!(before.contains("4800"), "fio holds 12 x 400: {before}");
    let mut f = frame(12);
    f.delta.procs.insert(
        pin_common::IRQ_TGID,
        ProcTotals {
            comm: "[irq]".into(),
            released: 64,
            ..Default::default()
        },
    );
    app.ingest(f);
    let screen = render(&app, 160, 48);
    let irq_row = screen
        .lines()
        .find(|l| l.contains("[irq]"))
        .unwrap_or_else(|| panic!("no [irq] row: {screen}"));
    assert!(irq_row.contains(" - "), "pid shown as -: {irq_row}");
    let fio_row = screen.lines().find(|l| l.contains(" fio ")).unwrap();
    assert!(
        fio_row.contains('?') && !fio_row.contains("5200"),
        "fio's taken-minus-released is no longer what it holds: {fio_row}"
    );
}

/// A frame of counters far beyond any column (10^15 and up).
fn huge_frame() -> Frame {
    const HUGE: u64 = 1_234_567_890_123_456;
    let mut f = frame(3);
    for g in f.delta.gup.iter_mut().filter(|g| g.calls > 0) {
        g.calls = HUGE;
        g.pages_requested = HUGE * 16;
        g.pages_returned = HUGE * 16;
        g.fast_pages = HUGE * 8;
        g.slow_pages = HUGE * 8;
        g.fallbacks = HUGE / 3;
        g.errors = HUGE / 7;
        g.errno[14] = HUGE / 7;
        g.latency_log2[9] = HUGE;
    }
    for r in f.delta.release.iter_mut().filter(|r| r.calls > 0) {
        r.calls = HUGE;
        r.pages = HUGE * 15;
    }
    for (_, p) in f.delta.procs.iter_mut() {
        p.calls = HUGE;
        p.pages = HUGE * 16;
        p.pinned = HUGE * 16;
        p.released = HUGE;
    }
    for c in f.delta.callers.values_mut() {
        c.calls = HUGE;
        c.pages = HUGE * 16;
    }
    f.delta.balance = pin_common::PinBalance {
        pinned: HUGE * 32,
        released: HUGE * 30,
        gup_released: HUGE,
        irq_released: 0,
    };
    f.memlock = BTreeMap::from([(
        4242,
        crate::limits::MemlockState {
            limit: Some(HUGE << 10),
            limit_hard: None,
            locked: HUGE << 10,
            pinned: HUGE << 10,
        },
    )]);
    f
}

/// Longest run of decimal digits on the screen.
fn longest_digit_run(screen: &str) -> usize {
    screen
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[test]
fn huge_counters_fit_every_column_at_every_width() {
    let mut app = app();
    for _ in 0..3 {
        app.ingest(huge_frame());
    }
    for height in [24, 48] {
        for width in 80..=220 {
            let screen = render(&app, width, height);
            // Every figure is >= 10^15 here: shown exactly it would be a run
            // of 16+ digits, and a column cutting it would leave a run as
            // wide as the column (5..=10). Scaled ones have at most 4.
            assert!(
                longest_digit_run(&screen) <= 4,
                "a number longer than its column at {width}x{height}:\n{screen}"
            );
            assert!(screen.contains("E ") || screen.contains("P ") || screen.contains("T "));
        }
    }
    // At the narrowest width the processes table keeps every column at
    // its width (its last title is whole).
    assert!(render(&app, 80, 24).contains("VmPin kB"));
    insta::assert_snapshot!(render(&app, 80, 24));
}

/// A dashboard beside short-lived processes keeps as many rows as the
/// kernel keeps entries: those active most recently, the ones it let go
/// counted and said on screen.
#[test]
fn process_rows_stay_within_their_limit() {
    let mut app = app().with_row_limits(super::app::RowLimits {
        procs: 6,
        cgroups: 8,
    });
    // The sample frames' processes (4242, 777, ...) are active in every
    // frame; each frame below adds one more, short-lived, process.
    // Interrupts released pins once, long ago: their row is kept however
    // idle, since it is what marks every process's "held" as unknown.
    let mut f = frame(12);
    f.delta.procs.insert(
        pin_common::IRQ_TGID,
        ProcTotals {
            comm: "[irq]".into(),
            released: 64,
            ..Default::default()
        },
    );
    app.ingest(f);
    let regulars = app.procs.len();
    assert!(regulars < 6, "{regulars} rows before the limit matters");
    for pid in 10_000..10_050 {
        let mut f = frame(12);
        f.delta.procs.insert(
            pid,
            ProcTotals {
                comm: "short".into(),
                calls: 1,
                pages: 1,
                pinned: 1,
                released: 1,
                ..Default::default()
            },
        );
        app.ingest(f);
        assert!(app.procs.len() <= 6, "{} rows", app.procs.len());
    }
    // The regulars and the newest short-lived ones are what is left.
    let kept: Vec<u32> = app.procs.keys().copied().collect();
    for pid in frame(12).delta.procs.keys() {
        assert!(kept.contains(pid), "regular {pid} dropped: {kept:?}");
    }
    assert!(kept.contains(&10_049), "{kept:?}");
    assert!(kept.contains(&pin_common::IRQ_TGID), "{kept:?}");
    assert_eq!(app.rows_dropped, 50 - (6 - regulars) as u64);
    assert!(render(&app, 160, 48).contains(&format!("DROPPED {} idle rows", app.rows_dropped)));
}

/// Beside thousands of processes only the rows on screen are built, and
/// the table scrolls as ratatui scrolls it: from the top until the
/// selected row would leave the screen, then with the selected row last.
#[test]
fn a_long_process_table_shows_the_window_around_the_selection() {
    let mut app = app();
    let mut f = frame(12);
    for pid in 20_000..22_000 {
        f.delta.procs.insert(
            pid,
            ProcTotals {
                comm: format!("p{pid}").as_str().into(),
                calls: 1,
                pages: 1,
                pinned: 1,
                ..Default::default()
            },
        );
    }
    app.ingest(f);
    app.process_sort = super::app::ProcessSort::Pid;
    app.focus = super::app::Panel::Processes;
    let order: Vec<u32> = app.process_rows().iter().map(|r| r.pid).collect();
    let screen = render(&app, 160, 48);
    assert!(screen.contains(&format!("│{} ", order[0])), "{screen}");
    let lines = |screen: &str, pid: u32| {
        screen
            .lines()
            .filter(|l| l.contains(&format!("p{pid} ")))
            .count()
    };
    // The first of the added processes, whose rows name them "p<pid>".
    let k = order.iter().position(|&pid| pid >= 20_000).unwrap();
    assert_eq!(lines(&screen, order[k]), 1, "{screen}");
    app.process_sel = 1500;
    let screen = render(&app, 160, 48);
    assert_eq!(
        lines(&screen, order[1500]),
        1,
        "selected row shown: {screen}"
    );
    assert_eq!(lines(&screen, order[1501]), 0, "nothing below it: {screen}");
    assert_eq!(lines(&screen, order[k]), 0, "top scrolled away: {screen}");
    // The rows above it fill the table up to the selected one.
    let first_shown = (k..1500).find(|&i| lines(&screen, order[i]) == 1).unwrap();
    assert!(1500 - first_shown >= 5, "{first_shown}: {screen}");
    assert!((first_shown..=1500).all(|i| lines(&screen, order[i]) == 1));
}

/// The header counts each mechanism; kprobe_multi only where it attached.
#[test]
fn probes_summary_counts_each_mechanism() {
    use crate::probes::{Mechanism, ProbeStatus};
    let status = |attached| ProbeStatus {
        id: 0,
        function: "f",
        role: "variant",
        symbol: Some("f".into()),
        attached,
        notes: Vec::new(),
        not_needed: false,
    };
    let fentry = [status(Some(Mechanism::Fentry)), status(None)];
    assert_eq!(
        super::probes_summary(&fentry),
        "1 fentry, 0 kprobe, 1 absent"
    );
    let multi = [
        status(Some(Mechanism::KprobeMulti)),
        status(Some(Mechanism::KprobeMulti)),
    ];
    assert_eq!(
        super::probes_summary(&multi),
        "2 kprobe_multi, 0 fentry, 0 kprobe, 0 absent"
    );
}
