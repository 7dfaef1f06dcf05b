//! The integration suite that runs inside the VM matrix (`cargo xtask
//! test`): real probes on a stock kernel, real workloads, exact counts.
//!
//! Each test starts `pinwatch workload ... --wait-stdin`, waits until the
//! workload has set up its buffers, snapshots the maps and /proc/vmstat
//! (flushed with stat_refresh), lets the workload run, waits for it to exit
//! and snapshots again. The difference must equal what the workload
//! reports it did, for the variant the kernel is expected to use, and no
//! other variant may move. FOLL_PIN pages must equal the
//! `nr_foll_pin_acquired` delta, released pages the `nr_foll_pin_released`
//! delta.
//!
//! Needs root and a kernel with kprobes or fentry; run it through
//! `cargo xtask test`, which boots such kernels. Environment:
//! `PINWATCH_ATTACH` (auto|fentry|kprobe), `PINWATCH_BIN` (default
//! `pinwatch` on PATH), `PINWATCH_BUILD` (static|glibc: which build that
//! is).

mod attribution;
mod build;
mod busy;
mod cases;
mod cgroups;
mod checks;
mod dashboard;
mod fleet;
mod harness;
mod held;
mod interrupts;
mod lifetimes;
mod limits;
mod longterm;
mod names;
mod pending;
mod processes;
mod record;
mod robustness;
mod serve;
mod setcap;
// Shared with the host tests (`tests/stopping.rs`).
#[path = "../common/signals.rs"]
mod signals;
mod soak;
mod startup;
mod strays;
mod validate;
