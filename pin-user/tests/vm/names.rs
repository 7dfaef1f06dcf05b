//! Process names: a process's row shows its name (its leader's comm)
//! through exec and renames, kept by the `task_rename` hook rather than
//! read on every get/pin return. (Threads with names of their own: the
//! stalled-readv test in `busy`.)

use crate::harness::{harness, measure};

/// The workload: a few one-page futex wakes, enough to make a row.
const WORKLOAD: [&str; 5] = ["futex-wake", "--calls", "10", "--pages", "1"];

#[test]
fn a_process_row_has_the_name_exec_gave_it() {
    let h = harness();
    // exec's own copies of the arguments (get_user_pages_remote) made the
    // row under the forking parent's name, before exec renamed the task.
    let (report, delta) = measure(&h, &WORKLOAD);
    let row = delta.procs.get(&report.pid).expect("the workload's row");
    assert_eq!(row.comm.to_string(), "pinwatch");
    assert_eq!(row.calls, report.calls);
}

#[test]
fn a_process_row_follows_a_rename_after_its_last_call() {
    let h = harness();
    // The workload renames itself after its calls, from a second thread
    // through /proc/self/comm: a rename of another task (the leader),
    // which the hook finds through BTF offsets, after which no call of
    // the process could have refreshed the row's name.
    let mut args = WORKLOAD.to_vec();
    args.extend(["--rename-after", "renamed-after"]);
    let (report, delta) = measure(&h, &args);
    let row = delta.procs.get(&report.pid).expect("the workload's row");
    assert_eq!(row.comm.to_string(), "renamed-after");
    // Not `report.calls`: the renaming thread's exit and its join wait on
    // the thread id's futex, which the kernel keys as a shared one (GUP).
    assert!(row.calls >= report.calls, "{} calls", row.calls);
}
