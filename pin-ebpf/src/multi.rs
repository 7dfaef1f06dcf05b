//! The multi-function programs: one entry and one return program for
//! every traced function, attached on one link each, as kprobe_multi
//! links (`--attach kprobe-multi`, 5.18-6.13) or as tracing multi links
//! (`--attach fentry-multi`, fentry and fexit for many functions at once,
//! Linux 7.3). The link's cookie says which function was hit
//! ([`MultiTarget`]), and the bookkeeping is the per-function programs'
//! (`account`, `release`).

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_func_arg,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::Array,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use pin_common::{
    FUNC_COUNT, GUP_FUNC_COUNT, NO_ARG,
    catalog::{MULTI_COOKIES, MultiTarget, releases_one_folio},
};

use crate::{account, frame::EntryFrame, release};

/// The addresses at which each function was hit before, by id (0: not
/// yet), learnt from the link's cookie at its first hit (see
/// [`multi_target`]). One entry: the whole table in one lookup.
#[map]
static MULTI_SEEN: Array<[u64; FUNC_COUNT]> = Array::with_max_entries(1, 0);

/// The function hit. The kernel finds the link's cookie by a binary
/// search over the link's addresses, an indirect call per step, on every
/// hit: as much as the rest of a return program under TCG. So the
/// cookie is asked for once per function: the address of the hit
/// (`bpf_get_func_ip`, which the kernel keeps in the run context) is
/// looked up among those seen before, and a function's first hit stores
/// its address at its id. A slot only ever holds 0 or its own function's
/// address (an aligned 8-byte store), so no race can mislabel a hit.
#[inline(always)]
fn multi_target(ctx: &impl EbpfContext) -> MultiTarget {
    // SAFETY: the helpers take the program's own context.
    let ip = unsafe { aya_ebpf::helpers::generated::bpf_get_func_ip(ctx.as_ptr()) };
    // A hit always has an address; 0 would match every empty slot.
    let seen = MULTI_SEEN.get_ptr_mut(0).filter(|_| ip != 0);
    if let Some(seen) = seen {
        // Unrolled: each step a load at a constant offset and a constant
        // cookie.
        for (id, cookie) in MULTI_COOKIES.iter().enumerate() {
            // SAFETY: within the map's value; read as the kernel wrote it.
            let addr = unsafe { core::ptr::read_volatile(&(*seen)[id]) };
            if addr == ip {
                return MultiTarget::from_cookie(*cookie);
            }
        }
    }
    // SAFETY: as above.
    let cookie = unsafe { aya_ebpf::helpers::generated::bpf_get_attach_cookie(ctx.as_ptr()) };
    let target = MultiTarget::from_cookie(cookie);
    if let Some(seen) = seen
        && (target.id as usize) < FUNC_COUNT
    {
        // SAFETY: within the map's value.
        unsafe { core::ptr::write_volatile(&mut (*seen)[target.id as usize], ip) };
    }
    target
}

/// The six register arguments (x86-64) of a kprobe's function.
/// Each is read at its own constant offset, volatile: a position known
/// only at run time would otherwise become one load at a computed
/// offset into the context, which the verifier refuses.
#[inline(always)]
fn register_args(ctx: &ProbeContext) -> [u64; 6] {
    // SAFETY: the context's saved registers, read in place.
    unsafe {
        let regs = &*ctx.regs;
        [
            core::ptr::read_volatile(&regs.rdi),
            core::ptr::read_volatile(&regs.rsi),
            core::ptr::read_volatile(&regs.rdx),
            core::ptr::read_volatile(&regs.rcx),
            core::ptr::read_volatile(&regs.r8),
            core::ptr::read_volatile(&regs.r9),
        ]
    }
}

/// Argument `n` of `args`, or 0 where the function has none there.
#[inline(always)]
fn probe_arg(args: &[u64; 6], n: u8) -> u64 {
    match n {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        5 => args[5],
        _ => 0,
    }
}

/// An entry on a multi link, once `target` says which function was hit:
/// the get/pin or release bookkeeping the per-function programs do.
/// `arg` reads the argument at a position (0 where the function has none
/// there), `frame` and `return_slot` are as for [`release::entry`].
#[inline(always)]
fn multi_entry<C: EntryFrame>(
    ctx: &C,
    target: MultiTarget,
    arg: impl Fn(u8) -> u64,
    frame: impl FnOnce() -> u64,
    return_slot: impl FnOnce(u64) -> [u64; 2],
) {
    let id = target.id;
    if (id as usize) < GUP_FUNC_COUNT {
        let args = account::GupArgs {
            nr: arg(target.nr_arg),
            addr: arg(target.start_arg),
            flags: arg(target.flags_arg),
            pages: arg(target.pages_arg),
        };
        account::gup_entry(ctx, id, args);
    } else if (id as usize) < FUNC_COUNT {
        let pages = if target.nr_arg == NO_ARG {
            1
        } else {
            arg(target.nr_arg)
        };
        let folio = if releases_one_folio(id) { arg(0) } else { 0 };
        release::entry(id, pages, folio, frame, return_slot);
    }
}

/// The entry program of every function on a kprobe_multi link (one
/// attachment for all of them, which is what makes attaching fast):
/// the link's cookie says which function was hit and where its
/// arguments are ([`MultiTarget`]); the bookkeeping is the kprobes'.
#[kprobe]
fn multi_kprobe(ctx: ProbeContext) -> u32 {
    let target = multi_target(&ctx);
    let regs = register_args(&ctx);
    // SAFETY: the context's saved registers.
    multi_entry(
        &ctx,
        target,
        |n| probe_arg(&regs, n),
        || unsafe { (*ctx.regs).rsp },
        crate::frame::kprobe_return,
    );
    0
}

/// The return program of the functions on the kprobe_multi return
/// link (those `catalog::has_exit_probe` names), told apart as at
/// entry.
#[kretprobe]
fn multi_kretprobe(ctx: RetProbeContext) -> u32 {
    let id = multi_target(&ctx).id;
    if (id as usize) < GUP_FUNC_COUNT {
        account::gup_exit(id, ctx.ret::<u64>());
    } else if (id as usize) < FUNC_COUNT {
        release::exit();
    }
    0
}

/// Argument `n` of the function a tracing multi program was hit in, or 0
/// where it has none there (`NO_ARG`). A multi program is verified
/// against no function's prototype, so the verifier refuses every direct
/// read of its context; the helper (inlined by the verifier) checks `n`
/// against the count the trampoline saved.
#[inline(always)]
fn trampoline_arg(ctx: &FEntryContext, n: u8) -> u64 {
    if n == NO_ARG {
        return 0;
    }
    let mut value = 0u64;
    // SAFETY: the helper writes one u64 into `value`.
    let _ = unsafe { bpf_get_func_arg(ctx.as_ptr(), u32::from(n), &mut value) };
    value
}

/// The function a tracing multi program was hit in: the link's cookie,
/// which the trampoline keeps in the run context, so the kernel answers
/// in one read (unlike kprobe_multi's search, [`multi_target`]). Asking
/// for it costs less than looking the address up: the lookup, made
/// first, scanned past every get/pin function to find a release (the
/// table's last ids), and put a 256-page O_DIRECT read at 1.84x
/// per-function fentry's in-kernel cost under TCG on 7.3.
#[inline(always)]
fn tracing_target(ctx: &impl EbpfContext) -> MultiTarget {
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { aya_ebpf::helpers::generated::bpf_get_attach_cookie(ctx.as_ptr()) };
    MultiTarget::from_cookie(cookie)
}

/// The entry program of every function on a tracing multi link
/// (`BPF_TRACE_FENTRY_MULTI`): one program verified once and one link
/// whose trampolines the kernel installs in one batch, where per-function
/// fentry verifies a program and updates a trampoline per function. Told
/// apart by the link's cookie ([`tracing_target`]); the frame is read as
/// at a per-function fentry (the trampolines are the same).
#[fentry]
fn multi_fentry(ctx: FEntryContext) -> u32 {
    let target = tracing_target(&ctx);
    multi_entry(
        &ctx,
        target,
        |n| trampoline_arg(&ctx, n),
        || crate::frame::context_address(&ctx),
        |at| crate::frame::fentry_return(&ctx, target.id, at),
    );
    0
}

/// The return program of the functions on the tracing multi return link
/// (`BPF_TRACE_FEXIT_MULTI`; those `catalog::has_exit_probe` names).
#[fexit]
fn multi_fexit(ctx: FExitContext) -> u32 {
    let id = tracing_target(&ctx).id;
    if (id as usize) < GUP_FUNC_COUNT {
        account::gup_exit(id, ctx.ret::<u64>().unwrap_or(0));
    } else if (id as usize) < FUNC_COUNT {
        release::exit();
    }
    0
}
