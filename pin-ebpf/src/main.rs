//! pinwatch's kernel side.
//!
//! For every function in `pin_common::FUNCS` this object carries four
//! programs: fentry and fexit (preferred: cheapest, exact return values) and
//! kprobe and kretprobe (fallback where tracing programs are refused or do
//! not attach). The agent loads, per function, whichever pair attaches; the
//! rest stay unloaded. Program names are `{gup,rel}_{fentry,fexit,kprobe,
//! kretprobe}_NN` with NN the function id, so the agent can find them.
//! Two more, in `multi`, serve every function at once through kprobe_multi
//! links (`--attach kprobe-multi`), told apart by the link's cookie. The
//! programs on a task's life (fork, exit, rename) are in `task_programs`.
//!
//! The programs only read arguments and return values; the bookkeeping is
//! in the modules below, each of which uses only modules listed after it:
//! `release` (releases), `account` (get/pin calls and per-process rows),
//! `pending` (per-thread pending counts and their fold), `variant` (a
//! variant's own counters, for calls not deferred),
//! `names` (process names), `attribution` (call sites, pin lifetimes),
//! `failures` (failed and short calls), `follow` (the followed process
//! tree), `cgroup` (per-cgroup rows, the `--cgroup` filter), `limits` (the
//! kernel's memlock verdicts), `events` (per-call events), `frame` (the
//! traced function's frame), `outcome` (what a call came to),
//! `task_storage` (per-thread state), `counters` (atomic adds, health
//! counts), `settings` (what the agent told the probes) and `maps` (the
//! maps the agent reads).
//!
//! Shared steps (the return accounting and its steps, the walk over
//! return-probe instances) are global BPF functions in the full object,
//! `pinwatch_*` beside the step each runs, called through a `*_once`
//! function (inline in the baseline object: 5.10's verifier takes no
//! pointer arguments to global functions). The verifier checks a global
//! function once per program, a static one again on every path to its
//! call (fentry's 38 programs on 6.12: 115 528 instructions walked static,
//! 51 873 global; BENCHMARKS.md, "Start-up, fifth pass"); the price is a
//! BPF-to-BPF call per step run. `build.rs` exports them from bpf-linker.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The atomic add of `counters::add_to` (see there).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod account;
#[cfg(target_arch = "bpf")]
mod attribution;
#[cfg(target_arch = "bpf")]
mod cgroup;
#[cfg(target_arch = "bpf")]
mod comm;
#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod failures;
#[cfg(target_arch = "bpf")]
mod follow;
#[cfg(target_arch = "bpf")]
mod frame;
#[cfg(target_arch = "bpf")]
mod limits;
#[cfg(target_arch = "bpf")]
mod maps;
// Not in the baseline object: kprobe_multi (5.18) postdates the kernels
// it serves, and the agent refuses the mode there.
#[cfg(all(target_arch = "bpf", not(feature = "baseline")))]
mod multi;
#[cfg(target_arch = "bpf")]
mod names;
#[cfg(target_arch = "bpf")]
mod outcome;
// Not in the baseline object: per-thread pending counts need task
// storage and the task iterator that folds them (see there).
#[cfg(all(target_arch = "bpf", not(feature = "baseline")))]
mod pending;
#[cfg(target_arch = "bpf")]
mod release;
#[cfg(target_arch = "bpf")]
mod settings;
#[cfg(target_arch = "bpf")]
mod task_programs;
#[cfg(target_arch = "bpf")]
mod task_storage;
#[cfg(target_arch = "bpf")]
mod variant;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{fentry, fexit, kprobe, kretprobe},
        programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    };
    use pin_common::{FUNC_COUNT, FUNCS, FuncId, NO_ARG, catalog::releases_one_folio};

    use aya_ebpf::helpers::bpf_get_current_task;
    use pin_common::limits::{
        SHAPE_CTX_NR, SHAPE_MLOCK, SHAPE_MM_TASK, SHAPE_USER_MM_NR, SHAPE_USER_NR,
    };

    use crate::{account, frame, limits, release};

    /// Argument `n` of a traced function through `bpf_get_func_arg`,
    /// which takes any argument type (0 when it fails).
    /// The baseline object has no such helper (5.17+): 0, which only pin
    /// lifetimes would use.
    #[cfg(feature = "baseline")]
    #[inline(always)]
    fn func_arg(_ctx: &FEntryContext, _n: u32) -> u64 {
        0
    }

    #[cfg(not(feature = "baseline"))]
    #[inline(always)]
    fn func_arg(ctx: &FEntryContext, n: u32) -> u64 {
        let mut value = 0u64;
        // SAFETY: the helper writes one u64 into `value`.
        let _ = unsafe {
            aya_ebpf::helpers::generated::bpf_get_func_arg(
                aya_ebpf::EbpfContext::as_ptr(ctx),
                n,
                &mut value,
            )
        };
        value
    }

    /// The traced function's return value, through `bpf_get_func_ret`.
    #[cfg(not(feature = "baseline"))]
    #[inline(always)]
    fn fexit_ret(ctx: &FExitContext, _id: u32) -> u64 {
        ctx.ret::<u64>().unwrap_or(0)
    }

    /// The baseline object has no `bpf_get_func_ret` (5.17+): the
    /// trampoline keeps the return value right after the arguments, whose
    /// count the agent took from BTF. The context cannot be indexed by a
    /// number the verifier does not know, so it is read through the helper.
    #[cfg(feature = "baseline")]
    #[inline(always)]
    fn fexit_ret(ctx: &FExitContext, id: u32) -> u64 {
        let Some(config) = crate::settings::config(id) else {
            return 0;
        };
        let base = frame::context_address(ctx);
        if base == 0 {
            return 0;
        }
        let slot = base + 8 * u64::from(config.arg_count);
        // SAFETY: reads kernel memory through the checked helper.
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(slot as *const u64) }.unwrap_or(0)
    }

    /// Four programs for get/pin function `$id`.
    macro_rules! gup_programs {
        ($id:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
            #[fentry]
            fn $fentry(ctx: FEntryContext) -> u32 {
                const NR: usize = FUNCS[$id].nr_arg as usize;
                const START: usize = FUNCS[$id].start_arg as usize;
                const FLAGS: usize = FUNCS[$id].flags_arg as usize;
                const PAGES: u8 = FUNCS[$id].pages_arg;
                // Positions the function lacks (NO_ARG) are never read:
                // the constant test removes the context load.
                let args = account::GupArgs {
                    nr: ctx.arg::<u64>(NR),
                    addr: if START == NO_ARG as usize {
                        0
                    } else {
                        ctx.arg::<u64>(START)
                    },
                    flags: if FLAGS == NO_ARG as usize {
                        0
                    } else {
                        ctx.arg::<u64>(FLAGS)
                    },
                    // `struct page **` is not a pointer to a struct, so
                    // the verifier refuses a direct context load of it.
                    pages: if PAGES == NO_ARG {
                        0
                    } else {
                        func_arg(&ctx, PAGES as u32)
                    },
                };
                account::gup_entry(&ctx, $id, args);
                0
            }

            #[fexit]
            fn $fexit(ctx: FExitContext) -> u32 {
                account::gup_exit($id, fexit_ret(&ctx, $id));
                0
            }

            #[kprobe]
            fn $kprobe(ctx: ProbeContext) -> u32 {
                const NR: usize = FUNCS[$id].nr_arg as usize;
                const START: usize = FUNCS[$id].start_arg as usize;
                const FLAGS: usize = FUNCS[$id].flags_arg as usize;
                const PAGES: u8 = FUNCS[$id].pages_arg;
                let args = account::GupArgs {
                    nr: ctx.arg::<u64>(NR).unwrap_or(0),
                    addr: if START == NO_ARG as usize {
                        0
                    } else {
                        ctx.arg::<u64>(START).unwrap_or(0)
                    },
                    flags: if FLAGS == NO_ARG as usize {
                        0
                    } else {
                        ctx.arg::<u64>(FLAGS).unwrap_or(0)
                    },
                    pages: if PAGES == NO_ARG {
                        0
                    } else {
                        ctx.arg::<u64>(PAGES as usize).unwrap_or(0)
                    },
                };
                account::gup_entry(&ctx, $id, args);
                0
            }

            #[kretprobe]
            fn $kretprobe(ctx: RetProbeContext) -> u32 {
                account::gup_exit($id, ctx.ret::<u64>());
                0
            }
        };
    }

    /// Four programs for release function `$id`; the agent attaches the
    /// return pair only where `catalog::has_exit_probe` says so.
    macro_rules! release_programs {
        ($id:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
            #[fentry]
            fn $fentry(ctx: FEntryContext) -> u32 {
                const NR: u8 = FUNCS[$id].nr_arg;
                let pages = if NR == NO_ARG {
                    1
                } else {
                    ctx.arg::<u64>(NR as usize)
                };
                let folio = if releases_one_folio($id) {
                    ctx.arg::<u64>(0)
                } else {
                    0
                };
                release::entry(
                    $id,
                    pages,
                    folio,
                    || frame::context_address(&ctx),
                    |at| frame::fentry_return(&ctx, $id, at),
                );
                0
            }

            #[fexit]
            fn $fexit(_ctx: FExitContext) -> u32 {
                release::exit();
                0
            }

            #[kprobe]
            fn $kprobe(ctx: ProbeContext) -> u32 {
                const NR: u8 = FUNCS[$id].nr_arg;
                let pages = if NR == NO_ARG {
                    1
                } else {
                    ctx.arg::<u64>(NR as usize).unwrap_or(0)
                };
                let folio = if releases_one_folio($id) {
                    ctx.arg::<u64>(0).unwrap_or(0)
                } else {
                    0
                };
                // SAFETY: the context's saved registers.
                release::entry(
                    $id,
                    pages,
                    folio,
                    || unsafe { (*ctx.regs).rsp },
                    frame::kprobe_return,
                );
                0
            }

            #[kretprobe]
            fn $kretprobe(_ctx: RetProbeContext) -> u32 {
                release::exit();
                0
            }
        };
    }

    /// `gup_put_folio(folio, refs, flags)`, where FOLL_PIN releases end:
    /// counts GUP's own releases and times pin lifetimes (`--lifetimes`).
    #[fentry]
    fn put_fentry(ctx: FEntryContext) -> u32 {
        let refs = ctx.arg::<u64>(1) as u32 as i32 as i64;
        let flags = ctx.arg::<u64>(2) as u32 as u64;
        release::folio_put(
            ctx.arg::<u64>(0),
            refs,
            flags,
            || frame::context_address(&ctx),
            |at| frame::fentry_return(&ctx, FUNC_COUNT as FuncId, at),
        );
        0
    }

    /// kprobe twin of `put_fentry`.
    #[kprobe]
    fn put_kprobe(ctx: ProbeContext) -> u32 {
        let refs = ctx.arg::<u64>(1).unwrap_or(0) as u32 as i32 as i64;
        let flags = ctx.arg::<u64>(2).unwrap_or(0) as u32 as u64;
        // SAFETY: the context's saved registers.
        release::folio_put(
            ctx.arg::<u64>(0).unwrap_or(0),
            refs,
            flags,
            || unsafe { (*ctx.regs).rsp },
            frame::kprobe_return,
        );
        0
    }

    /// fexit and kprobe programs for a memlock check function of shape
    /// `$shape` (`pin_common::limits::SHAPE_*`): `$object` is the position
    /// of the charged object (user, ctx or mm), `$pages` of the page
    /// count, `$task` of the task whose limit applies (`None`: the
    /// current task, as `rlimit()` reads it), `$ret` of the return value
    /// in the fexit context (right after the arguments).
    macro_rules! check_programs {
        ($fexit:ident, $kprobe:ident, $shape:expr, $object:literal, $pages:literal,
         $task:expr, $ret:literal) => {
            #[fexit]
            fn $fexit(ctx: FExitContext) -> u32 {
                let task = match $task {
                    Some(n) => ctx.arg::<u64>(n),
                    None => unsafe { bpf_get_current_task() },
                };
                if let Some(args) = limits::args(
                    $shape,
                    ctx.arg::<u64>($object),
                    ctx.arg::<u64>($pages),
                    task,
                ) {
                    limits::returned(&args, ctx.arg::<u64>($ret) as i32 as i64);
                }
                0
            }

            #[kprobe]
            fn $kprobe(ctx: ProbeContext) -> u32 {
                let task = match $task {
                    Some(n) => ctx.arg::<u64>(n).unwrap_or(0),
                    None => unsafe { bpf_get_current_task() },
                };
                let object = ctx.arg::<u64>($object).unwrap_or(0);
                let pages = ctx.arg::<u64>($pages).unwrap_or(0);
                if let Some(args) = limits::args($shape, object, pages, task) {
                    limits::stash(&args);
                }
                0
            }
        };
    }

    // `int __io_account_mem(struct user_struct *user, unsigned long nr_pages)` (6.1+).
    check_programs!(
        io_account_fexit,
        io_account_kprobe,
        SHAPE_USER_NR,
        0,
        1,
        None::<usize>,
        2
    );
    // `int io_account_mem(struct user_struct *user, struct mm_struct
    // *mm_account, unsigned long nr_pages)` (6.19+).
    check_programs!(
        io_account3_fexit,
        io_account3_kprobe,
        SHAPE_USER_MM_NR,
        0,
        2,
        None::<usize>,
        3
    );
    // `int io_account_mem(struct io_ring_ctx *ctx, unsigned long nr_pages)` (6.18).
    check_programs!(
        io_account_ctx_fexit,
        io_account_ctx_kprobe,
        SHAPE_CTX_NR,
        0,
        1,
        None::<usize>,
        2
    );
    // `int __account_locked_vm(struct mm_struct *mm, unsigned long pages,
    // bool inc, struct task_struct *task, bool bypass_rlim)`.
    check_programs!(
        locked_vm_fexit,
        locked_vm_kprobe,
        SHAPE_MM_TASK,
        0,
        1,
        Some(3usize),
        5
    );

    // `int do_mlock(unsigned long start, size_t len, vm_flags_t flags)`
    // (mlock, mlock2; the limit applies to the current task).
    check_programs!(
        mlock_fexit,
        mlock_kprobe,
        SHAPE_MLOCK,
        0,
        1,
        None::<usize>,
        3
    );

    /// The return of any kprobe'd memlock check: the kprobe stashed what
    /// it was asked.
    #[kretprobe]
    fn check_kretprobe(ctx: RetProbeContext) -> u32 {
        if let Some(args) = limits::take_stashed() {
            limits::returned(&args, ctx.ret::<u64>() as i32 as i64);
        }
        0
    }

    gup_programs!(
        0,
        gup_fentry_00,
        gup_fexit_00,
        gup_kprobe_00,
        gup_kretprobe_00
    );
    gup_programs!(
        1,
        gup_fentry_01,
        gup_fexit_01,
        gup_kprobe_01,
        gup_kretprobe_01
    );
    gup_programs!(
        2,
        gup_fentry_02,
        gup_fexit_02,
        gup_kprobe_02,
        gup_kretprobe_02
    );
    gup_programs!(
        3,
        gup_fentry_03,
        gup_fexit_03,
        gup_kprobe_03,
        gup_kretprobe_03
    );
    gup_programs!(
        4,
        gup_fentry_04,
        gup_fexit_04,
        gup_kprobe_04,
        gup_kretprobe_04
    );
    gup_programs!(
        5,
        gup_fentry_05,
        gup_fexit_05,
        gup_kprobe_05,
        gup_kretprobe_05
    );
    gup_programs!(
        6,
        gup_fentry_06,
        gup_fexit_06,
        gup_kprobe_06,
        gup_kretprobe_06
    );
    gup_programs!(
        7,
        gup_fentry_07,
        gup_fexit_07,
        gup_kprobe_07,
        gup_kretprobe_07
    );
    gup_programs!(
        8,
        gup_fentry_08,
        gup_fexit_08,
        gup_kprobe_08,
        gup_kretprobe_08
    );
    gup_programs!(
        9,
        gup_fentry_09,
        gup_fexit_09,
        gup_kprobe_09,
        gup_kretprobe_09
    );
    gup_programs!(
        10,
        gup_fentry_10,
        gup_fexit_10,
        gup_kprobe_10,
        gup_kretprobe_10
    );
    gup_programs!(
        11,
        gup_fentry_11,
        gup_fexit_11,
        gup_kprobe_11,
        gup_kretprobe_11
    );
    gup_programs!(
        12,
        gup_fentry_12,
        gup_fexit_12,
        gup_kprobe_12,
        gup_kretprobe_12
    );
    gup_programs!(
        13,
        gup_fentry_13,
        gup_fexit_13,
        gup_kprobe_13,
        gup_kretprobe_13
    );

    release_programs!(
        14,
        rel_fentry_14,
        rel_fexit_14,
        rel_kprobe_14,
        rel_kretprobe_14
    );
    release_programs!(
        15,
        rel_fentry_15,
        rel_fexit_15,
        rel_kprobe_15,
        rel_kretprobe_15
    );
    release_programs!(
        16,
        rel_fentry_16,
        rel_fexit_16,
        rel_kprobe_16,
        rel_kretprobe_16
    );
    release_programs!(
        17,
        rel_fentry_17,
        rel_fexit_17,
        rel_kprobe_17,
        rel_kretprobe_17
    );
    release_programs!(
        18,
        rel_fentry_18,
        rel_fexit_18,
        rel_kprobe_18,
        rel_kretprobe_18
    );
    release_programs!(
        19,
        rel_fentry_19,
        rel_fexit_19,
        rel_kprobe_19,
        rel_kretprobe_19
    );
    release_programs!(
        20,
        rel_fentry_20,
        rel_fexit_20,
        rel_kprobe_20,
        rel_kretprobe_20
    );
}

/// The kernel requires a GPL-compatible license for fentry/fexit programs.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// On the host this crate builds to nothing, so workspace-wide `cargo
/// clippy` and `cargo test` work; the real object is built by pin-user's
/// build script for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
