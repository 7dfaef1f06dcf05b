//! One test per workload: the observed counts must equal the workload's
//! exact expectation on the running kernel.

use crate::harness::{Expect, case, harness, io_uring_variant, odirect_variant, pinwatch_bin};

#[test]
fn process_vm_readv_unaligned() {
    // 64 pages starting 100 bytes into a page span 65 pages.
    case(
        &[
            "process-vm-readv",
            "--calls",
            "50",
            "--pages",
            "64",
            "--offset",
            "100",
        ],
        |_, r| {
            assert_eq!(r.pages_per_call, 65);
            Expect::new("pin_user_pages_remote", 50, 50 * 65)
        },
    );
}

#[test]
fn process_vm_writev() {
    case(
        &["process-vm-writev", "--calls", "20", "--pages", "16"],
        |_, _| Expect::new("pin_user_pages_remote", 20, 320),
    );
}

#[test]
fn odirect_read_warm_takes_the_fast_path() {
    case(
        &[
            "odirect-read",
            "--file",
            "/dev/ram0",
            "--calls",
            "20",
            "--pages",
            "16",
        ],
        |h, _| Expect::new(odirect_variant(h), 20, 320).fallbacks(0),
    );
}

#[test]
fn odirect_read_cold_falls_back() {
    let args = [
        "odirect-read",
        "--file",
        "/dev/ram0",
        "--calls",
        "20",
        "--pages",
        "16",
        "--cold",
    ];
    case(&args, |h, _| {
        Expect::new(odirect_variant(h), 20, 320).fallbacks(20)
    });
}

#[test]
fn odirect_write_warm() {
    case(
        &[
            "odirect-write",
            "--file",
            "/dev/ram0",
            "--calls",
            "20",
            "--pages",
            "8",
        ],
        |h, _| Expect::new(odirect_variant(h), 20, 160).fallbacks(0),
    );
}

#[test]
fn odirect_write_cold_pins_the_zero_page() {
    let args = [
        "odirect-write",
        "--file",
        "/dev/ram0",
        "--calls",
        "20",
        "--pages",
        "8",
        "--cold",
    ];
    case(&args, |h, r| {
        assert!(r.zero_page);
        Expect::new(odirect_variant(h), 20, 160).fallbacks(20)
    });
}

#[test]
fn io_uring_register_pins_longterm() {
    case(
        &["io-uring-register", "--calls", "20", "--pages", "16"],
        |h, _| {
            let (variant, fast) = io_uring_variant(h);
            Expect::new(variant, 20, 320).fallbacks_if(fast, 0)
        },
    );
}

/// Falls back where io_uring uses the fast path (6.10+).
#[test]
fn io_uring_register_cold() {
    case(
        &[
            "io-uring-register",
            "--calls",
            "10",
            "--pages",
            "16",
            "--cold",
        ],
        |h, _| {
            let (variant, fast) = io_uring_variant(h);
            Expect::new(variant, 10, 160).fallbacks_if(fast, 10)
        },
    );
}

#[test]
fn vmsplice_gets_in_16_page_batches() {
    // iter_to_pipe takes at most 16 pages per iov_iter_get_pages2 call.
    case(&["vmsplice", "--calls", "20", "--pages", "32"], |_, r| {
        let per_call = r.pages_per_call.div_ceil(16);
        Expect::new("get_user_pages_fast", 20 * per_call, 20 * 32).fallbacks(0)
    });
}

#[test]
fn proc_mem_read_gets_one_page_per_call() {
    // access_remote_vm takes one page per get_user_pages_remote call.
    case(
        &["proc-mem-read", "--calls", "10", "--pages", "8"],
        |_, _| Expect::new("get_user_pages_remote", 80, 80),
    );
}

#[test]
fn shared_futex_wake() {
    case(&["futex-wake", "--calls", "50"], |_, _| {
        Expect::new("get_user_pages_fast", 50, 50).fallbacks(0)
    });
}

/// udmabuf pins its memfd's folios with one memfd_pin_folios call per
/// UDMABUF_CREATE (6.11+; before, it took shmem pages without GUP) and
/// closing the dma-buf releases them, one unpin_folio per folio. Debian's
/// cloud kernels build udmabuf in from 6.12 (not in 6.1's).
#[test]
fn udmabuf_pins_with_memfd_pin_folios() {
    let args = ["udmabuf", "--calls", "10", "--pages", "16"];
    let h = harness();
    let memfd = h
        .probes
        .status
        .iter()
        .find(|s| s.function == "memfd_pin_folios")
        .expect("memfd_pin_folios is catalogued");
    eprintln!(
        "OBSERVED memfd_pin_folios on {}: attached {:?}, notes {:?}",
        h.release, memfd.attached, memfd.notes
    );
    if h.version < (6, 11) {
        assert!(memfd.attached.is_none(), "{memfd:?}");
        assert!(
            memfd.notes.iter().any(|n| n.contains("not in this kernel")),
            "{memfd:?}"
        );
        return;
    }
    assert!(memfd.attached.is_some(), "{memfd:?}");
    drop(h);
    // 16 order-0 shmem folios per call (shmem THP is off by default):
    // folios pinned = pages.
    case(&args, |_, _| Expect::new("memfd_pin_folios", 10, 160));
}

#[test]
fn madv_populate_write() {
    let args = ["populate", "--calls", "10", "--pages", "16", "--cold"];
    if harness().version < (5, 14) {
        // MADV_POPULATE_WRITE came in 5.14: older kernels refuse the
        // advice, and the workload says so rather than counting nothing.
        let out = std::process::Command::new(pinwatch_bin())
            .arg("workload")
            .args(args)
            .output()
            .expect("run the workload");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("OBSERVED populate before 5.14: {stderr}");
        assert!(!out.status.success());
        assert!(stderr.contains("MADV_POPULATE_WRITE"), "{stderr}");
        return;
    }
    case(&args, |_, _| Expect::new("__get_user_pages", 10, 160));
}

#[test]
fn mlock_populates() {
    case(&["mlock", "--calls", "10", "--pages", "16"], |_, _| {
        Expect::new("__get_user_pages", 10, 160)
    });
}
