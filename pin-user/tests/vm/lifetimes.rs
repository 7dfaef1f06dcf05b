//! Hold times of folios pinned again before their earlier pins are
//! released. A release does not say which pin it ends; timing every
//! release from the folio's first pin (what pinwatch did) overstates the
//! later pins' holds by the time between the pins, so a hot, re-pinned
//! folio looked like a leak. Each folio now keeps the sum of its pins'
//! start times, and the hold times summed over its pins are exact.

use std::{thread::sleep, time::Duration};

use io_uring::IoUring;
use pinwatch::{
    snapshot::Snapshot,
    workload::{PAGE_SIZE, UserBuffer},
};

use crate::harness::{harness, pinwatch_bin};

const PAGES: u64 = 16;

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `step`, returning the clock before and after it: the kernel's
/// timestamp of what it did lies in between.
fn timed(step: impl FnOnce()) -> (u64, u64) {
    let before = monotonic_ns();
    step();
    (before, monotonic_ns())
}

#[test]
fn lifetimes_of_a_folio_pinned_twice_sum_exactly() {
    let h = harness();
    if !h.lifetimes_on() {
        // Where the kernel cannot time them, asking for them is a
        // one-line error naming what is missing, and a failure exit.
        let out = std::process::Command::new(pinwatch_bin())
            .args(["stat", "--lifetimes", "--count", "1"])
            .output()
            .expect("run pinwatch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("OBSERVED stat --lifetimes without bpf_loop: {stderr}");
        assert!(!out.status.success(), "{stderr}");
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(
            last.contains("bpf_loop") && last.contains("run without --lifetimes"),
            "{stderr}"
        );
        return;
    }
    let mut buf = UserBuffer::new(PAGES + 1).expect("buffer");
    buf.warm();
    let iov = libc::iovec {
        iov_base: buf.addr(0).cast(),
        iov_len: (PAGES * PAGE_SIZE) as usize,
    };
    let first = IoUring::new(4).expect("io_uring_setup");
    let second = IoUring::new(4).expect("io_uring_setup");
    let register = |ring: &IoUring| {
        // SAFETY: the buffer outlives both registrations, ended below.
        unsafe { ring.submitter().register_buffers(&[iov]) }.expect("register_buffers")
    };
    let unregister = |ring: &IoUring| ring.submitter().unregister_buffers().expect("unregister");

    let before = Snapshot::read(h.probes.maps()).expect("snapshot");
    // Every page pinned by the first ring, a second later by the second
    // too, then released by the first and, later, by the second.
    let pin_a = timed(|| register(&first));
    sleep(Duration::from_millis(1000));
    let pin_b = timed(|| register(&second));
    sleep(Duration::from_millis(300));
    let release_a = timed(|| unregister(&first));
    sleep(Duration::from_millis(300));
    let release_b = timed(|| unregister(&second));
    let delta = Snapshot::read(h.probes.maps())
        .expect("snapshot")
        .since(&before);

    let released: u64 = delta.callers.values().map(|c| c.pins_released).sum();
    let hold_sum: u64 = delta.callers.values().map(|c| c.hold_sum_ns).sum();
    // Each page: held from pin_a to release_a and from pin_b to
    // release_b, each timestamp within its step's bounds.
    let lowest = PAGES * ((release_a.0 - pin_a.1) + (release_b.0 - pin_b.1));
    let highest = PAGES * ((release_a.1 - pin_a.0) + (release_b.1 - pin_b.0));
    // Timed from the first pin, the second ring's pins would add the
    // second between the pins to each page's hold.
    let from_first_pin = PAGES * ((release_a.0 - pin_a.1) + (release_b.0 - pin_a.1));
    eprintln!(
        "OBSERVED kernel={} attach={:?} repinned folios: released={released} hold_sum={hold_sum} \
         exact within [{lowest}, {highest}], timed from the first pin >= {from_first_pin}",
        h.release, h.mode
    );
    assert_eq!(released, 2 * PAGES, "pins released in the window");
    assert_eq!(
        delta.health[pin_common::Health::UntrackedRelease as usize],
        0,
        "releases of untracked pins"
    );
    assert!(
        (lowest..=highest).contains(&hold_sum),
        "hold-time sum {hold_sum} outside [{lowest}, {highest}]"
    );
    drop(buf);
}
