//! Where a probe's traced function sits on the kernel stack: its frame
//! (position, a word that stays put while the call runs, the return
//! address into its caller), read straight from the trampoline's or the
//! kprobe's registers without walking the stack, and the context pointer
//! as a plain number for the reads that need one.

#[cfg(not(feature = "baseline"))]
use aya_ebpf::helpers::generated::{bpf_get_func_arg_cnt, bpf_get_func_ip, bpf_loop};
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    programs::{FEntryContext, ProbeContext},
};
#[cfg(not(feature = "baseline"))]
use core::ffi::c_void;
use pin_common::FuncId;

use crate::settings::{return_instance_layout, return_trampoline};

/// How far past the traced function's address its own frame may point:
/// the return address into it from the trampoline call (fentry) or the
/// probed instruction pointer (kprobe), after an optional `endbr64`.
pub(crate) const ENTRY_WINDOW: u64 = 32;

/// Lowest address of the kernel's text mapping (x86-64: the top 2 GiB,
/// modules included): a return address read from a frame must lie above.
pub(crate) const KERNEL_TEXT: u64 = 0xffff_ffff_8000_0000;

/// Start of the x86-64 module area (`MODULES_VADDR`), where BPF programs
/// and trampolines are JIT-compiled; the core kernel's text lies below.
pub(crate) const JIT_AREA: u64 = 0xffff_ffff_c000_0000;

/// Largest distance between two frames of one task's kernel stack
/// (x86-64 `THREAD_SIZE` is 16 KiB, 32 KiB with KASAN): an entry farther
/// away runs on another stack (an interrupt's), so its position says
/// nothing about the task's state; a saved frame pointer farther above the
/// trampoline's context is not one of this stack's.
pub(crate) const STACK_SPAN: u64 = 32 * 1024;

/// How many of the current task's pending return-probe instances are
/// looked at, newest first: one per call a kretprobe (any tracer's) is
/// watching on this task's stack right now, a handful at most in GUP.
const RETURN_INSTANCES_SEEN: usize = 16;

/// The return address in the stack word at `slot` holding `word`: `word`
/// itself, unless it is the return-probe trampoline, which a kretprobe
/// writes there while the call runs; then the address the newest of the
/// current task's return-probe instances for that slot replaced (several
/// tracers' kretprobes on one call chain: the others replaced the
/// trampoline itself). The trampoline when no instance tells (unknown
/// layout, 5.10), so that the caller keeps its old, cautious verdict.
///
/// Why: whether a call has returned is told by this word, and another
/// tracer's kretprobe (or a stopped pinwatch's) puts the same trampoline
/// over the return addresses of later calls at the same slot.
#[inline(always)]
pub(crate) fn return_address(slot: u64, word: u64) -> u64 {
    let trampoline = return_trampoline();
    if trampoline == 0 || word != trampoline {
        return word;
    }
    replaced_return_address_once(slot, word, trampoline)
}

/// [`replaced_return_address`], which the verifier checks once per
/// program: a global BPF function in the full object (see the crate's
/// doc), inline in the baseline one.
#[inline(always)]
fn replaced_return_address_once(slot: u64, word: u64, trampoline: u64) -> u64 {
    #[cfg(not(feature = "baseline"))]
    {
        // The global function reads the trampoline itself: it takes
        // nothing the verifier would have to check twice.
        let _ = trampoline;
        pinwatch_replaced_return_address(slot, word)
    }
    #[cfg(feature = "baseline")]
    replaced_return_address(slot, word, trampoline)
}

/// [`replaced_return_address`] as a global BPF function.
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pinwatch_replaced_return_address(slot: u64, word: u64) -> u64 {
    replaced_return_address(slot, word, return_trampoline())
}

/// The address the newest return-probe instance for `slot` replaced:
/// [`return_address`]'s walk, once `word` is the `trampoline`.
#[inline(always)]
fn replaced_return_address(slot: u64, word: u64, trampoline: u64) -> u64 {
    let [list, link, ret, at] = return_instance_layout();
    if list == 0 {
        return word;
    }
    let task = unsafe { bpf_get_current_task() };
    let mut walk = InstanceWalk {
        // The list head's first link: the newest instance comes first
        // (`llist_add`).
        node: read_u64(task + list - 1),
        slot,
        link,
        ret,
        at,
        trampoline,
        found: word,
    };
    walk.run();
    walk.found
}

/// Reads a `u64` of kernel memory at `addr` (0 when it cannot).
#[inline(always)]
pub(crate) fn read_u64(addr: u64) -> u64 {
    // SAFETY: the helper checks the address.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

/// Where a walk over the task's return-probe instances stands: the next
/// list link, what is looked for (the replaced word's stack slot) and
/// the layout, and the return address found (the trampoline until one
/// is). On the caller's stack, where a `bpf_loop` body can reach it. The
/// layout and the trampoline are copies of read-only globals: read from
/// the globals in the body instead, the verifier walked 2-3 % more
/// (fentry's programs 118 743 instructions against 115 528, 6.12).
#[repr(C)]
struct InstanceWalk {
    node: u64,
    slot: u64,
    link: u64,
    ret: u64,
    at: u64,
    trampoline: u64,
    found: u64,
}

impl InstanceWalk {
    /// Looks at the instance at the current link and moves to the next:
    /// false once the list ends or the slot's return address is found.
    #[inline(always)]
    fn step(&mut self) -> bool {
        if self.node == 0 {
            return false;
        }
        let instance = self.node.wrapping_sub(self.link);
        if read_u64(instance + self.at) == self.slot {
            let replaced = read_u64(instance + self.ret);
            // The trampoline itself: an older tracer's instance, whose
            // own replaced word comes further down the list.
            if replaced != self.trampoline {
                self.found = replaced;
                return false;
            }
        }
        self.node = read_u64(self.node);
        true
    }

    /// Walks up to [`RETURN_INSTANCES_SEEN`] instances with `bpf_loop`
    /// (5.17+, which the full object needs anyway): the verifier checks
    /// the body once instead of once per unrolled step, which was most of
    /// what it walked in an entry program (34 744 instructions for the
    /// kprobe-multi entry with the loop unrolled).
    #[cfg(not(feature = "baseline"))]
    #[inline(always)]
    fn run(&mut self) {
        // SAFETY: bpf_loop calls `walk_instance` with the walk on our stack.
        unsafe {
            bpf_loop(
                RETURN_INSTANCES_SEEN as u32,
                walk_instance as *mut c_void,
                self as *mut InstanceWalk as *mut c_void,
                0,
            )
        };
    }

    /// The baseline object (no `bpf_loop`) walks the instances unrolled.
    #[cfg(feature = "baseline")]
    #[inline(always)]
    fn run(&mut self) {
        for _ in 0..RETURN_INSTANCES_SEEN {
            if !self.step() {
                break;
            }
        }
    }
}

/// `bpf_loop` body: one step of an [`InstanceWalk`]; 1 stops the loop.
#[cfg(not(feature = "baseline"))]
#[inline(never)]
extern "C" fn walk_instance(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `InstanceWalk::run` passes its own walk.
    let walk = unsafe { &mut *(ctx as *mut InstanceWalk) };
    if walk.step() { 0 } else { 1 }
}

/// What an entry program learns from the traced function's frame.
#[derive(Clone, Copy, Default)]
pub struct Frame {
    /// Address of a word of the frame that stays put while the call runs
    /// (0: unknown). Deeper frames have lower addresses.
    pub addr: u64,
    /// The word at `addr` at entry (0: do not check it later).
    pub mark: u64,
    /// The return address into the caller (0: not in the frame).
    pub caller: u64,
    /// The stack slot holding that return address (0: unknown).
    pub caller_slot: u64,
    /// Whether a return probe's trampoline already stood in the frame's
    /// return-address slot at entry. pinwatch's entry program runs before
    /// its own return probe arms (that one is attached first, and the
    /// kernel runs the newer of two probes on one address first), so at a
    /// fresh call the slot holds the real return address; the trampoline
    /// there means a call that already runs under a return probe owns
    /// the slot: the caller jumped here (a tail call, e.g. Linux 6.1's
    /// `pin_user_pages` into `__gup_longterm_locked`), or another tracer's
    /// newer kretprobe armed first. Never set at fentry, where the frame
    /// is the trampoline's own.
    pub rethooked: bool,
}

/// A program context that can read the traced function's frame: where it
/// is on the kernel stack and the return address into the caller, without
/// walking the stack.
pub trait EntryFrame: EbpfContext {
    /// The frame of traced function `id`; `scratch` is a word of map
    /// memory the reading may use (see [`context_number`]).
    fn entry_frame(&self, id: FuncId, scratch: &mut u64) -> Frame;
}

/// The traced function's address: from the kernel where it tells
/// (`bpf_get_func_ip`, 5.15+), from the agent's kallsyms read in the
/// baseline object (0 when kallsyms hides addresses).
#[inline(always)]
pub(crate) fn func_ip(ctx: &impl EbpfContext, id: FuncId) -> u64 {
    #[cfg(not(feature = "baseline"))]
    {
        let _ = id;
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_func_ip(ctx.as_ptr()) }
    }
    #[cfg(feature = "baseline")]
    {
        let _ = ctx;
        crate::settings::config(id).map_or(0, |c| c.addr)
    }
}

/// How many arguments the fentry trampoline saved: from the kernel where
/// it tells (`bpf_get_func_arg_cnt`, 5.17+), from the function's BTF
/// prototype (the agent) in the baseline object.
#[inline(always)]
fn saved_args(ctx: &FEntryContext, id: FuncId) -> u64 {
    #[cfg(not(feature = "baseline"))]
    {
        let _ = id;
        // SAFETY: the helper takes the program's own context.
        unsafe { bpf_get_func_arg_cnt(ctx.as_ptr()) as u64 }
    }
    #[cfg(feature = "baseline")]
    {
        let _ = ctx;
        crate::settings::config(id).map_or(u64::MAX, |c| u64::from(c.arg_count))
    }
}

/// A kernel text address, or 0.
#[inline(always)]
fn text_or_zero(addr: u64) -> u64 {
    if addr >= KERNEL_TEXT { addr } else { 0 }
}

impl EntryFrame for FEntryContext {
    /// The BPF trampoline saves the traced function's register arguments
    /// at the context pointer, then (when it also calls the function for
    /// fexit) a return-value slot, then its saved frame pointer, the
    /// return address into the traced function (just past its fentry
    /// call) and, above that, the traced function's own return address.
    /// The return address into the traced function identifies which of
    /// the two layouts this trampoline has; its slot is the frame's mark:
    /// it holds that value for as long as the call runs. The caller is
    /// resolved through return-probe instances, as at a kprobe.
    fn entry_frame(&self, id: FuncId, scratch: &mut u64) -> Frame {
        let ctx_addr = context_number(self, scratch);
        fentry_frame(ctx_addr, saved_args(self, id), func_ip(self, id))
    }
}

/// The frame of the function an fentry trampoline traces, from the
/// trampoline's context pointer `ctx_addr` (as a number), the number of
/// arguments it saved and the traced function's address (see
/// [`EntryFrame::entry_frame`] for the layouts).
#[inline(always)]
fn fentry_frame(ctx_addr: u64, args: u64, func_ip: u64) -> Frame {
    // x86-64 passes at most 6 arguments in registers and the
    // trampoline saves at most 12.
    if args > 12 || ctx_addr == 0 {
        return Frame::default();
    }
    let above_args = ctx_addr + args * 8;
    // SAFETY: reads kernel memory through the checked helper.
    let Ok(words) = (unsafe { bpf_probe_read_kernel(above_args as *const [u64; 4]) }) else {
        return Frame::default();
    };
    let into_traced = |w: u64| func_ip != 0 && w.wrapping_sub(func_ip) < ENTRY_WINDOW;
    // A saved frame pointer: an address on this stack, above us.
    let on_stack = |w: u64| w > ctx_addr && w - ctx_addr < STACK_SPAN;
    // Which word is the frame's mark, and which is the return address
    // into the caller (its stack slot and value).
    let (addr, mark, caller_slot, caller_word) = if into_traced(words[1]) {
        (above_args + 8, words[1], above_args + 16, words[2])
    } else if into_traced(words[2]) {
        (above_args + 16, words[2], above_args + 24, words[3])
    } else if on_stack(words[0]) && text_or_zero(words[1]) != 0 {
        // Entered by a jump from the traced function's entry (Linux
        // 7.x): no return address into it; the saved frame pointer is
        // followed by the traced function's own return address, which
        // stays put while the call runs and is the mark. Without a
        // return slot...
        (above_args + 8, 0, above_args + 8, words[1])
    } else if on_stack(words[1]) && text_or_zero(words[2]) != 0 {
        // ...and with one (fexit attached too).
        (above_args + 16, 0, above_args + 16, words[2])
    } else {
        return Frame {
            addr: ctx_addr,
            ..Frame::default()
        };
    };
    // Another tracer's kretprobe on the traced function (its ftrace
    // handler runs before the trampoline is called) has already put
    // the return-probe trampoline over the return address into the
    // caller: the caller is the address that trampoline replaced.
    let caller = return_address(caller_slot, caller_word);
    Frame {
        addr,
        caller_slot,
        rethooked: false,
        // The return address into the traced function, which no
        // kretprobe touches; where there is none, the caller's, read
        // the way the missed-return check reads it again.
        mark: if mark != 0 { mark } else { caller },
        caller: text_or_zero(caller),
    }
}

impl EntryFrame for ProbeContext {
    /// At a function-entry kprobe the stack pointer points at the
    /// function's return address. A kretprobe on the same function swaps
    /// that word for its trampoline's address while the call runs (another
    /// tracer's, registered later and so run first, already has), so the word is a mark
    /// only where the agent told us that address, and the mark is the
    /// return address behind the trampoline where the kernel tells it.
    fn entry_frame(&self, _id: FuncId, _scratch: &mut u64) -> Frame {
        // SAFETY: the context's registers, then kernel memory through the
        // checked helper.
        let (sp, word) = unsafe {
            let sp = (*self.regs).rsp;
            (sp, bpf_probe_read_kernel(sp as *const u64).unwrap_or(0))
        };
        let trampoline = return_trampoline();
        let resolved = return_address(sp, word);
        Frame {
            addr: sp,
            caller_slot: sp,
            mark: if trampoline != 0 { resolved } else { 0 },
            caller: text_or_zero(resolved),
            rethooked: trampoline != 0 && word == trampoline,
        }
    }
}

/// The stack slot of the traced function's return address into its
/// caller and that address (through a kretprobe's trampoline), at an
/// fentry program whose context pointer is `ctx_addr` (a number): what a
/// release counted at its entry and the release hook it jumps to both
/// see, so it marks the one for the other
/// ([`pin_common::release_hook::ReleaseAtHook`]).
/// Zeros when the trampoline's frame has none of the known layouts.
#[inline(always)]
pub(crate) fn fentry_return(ctx: &FEntryContext, id: FuncId, ctx_addr: u64) -> [u64; 2] {
    let frame = fentry_frame(ctx_addr, saved_args(ctx, id), func_ip(ctx, id));
    [frame.caller_slot, frame.caller]
}

/// [`fentry_return`] at a function-entry kprobe whose stack pointer is
/// `sp`: the return address sits right there.
#[inline(always)]
pub(crate) fn kprobe_return(sp: u64) -> [u64; 2] {
    [sp, text_or_zero(return_address(sp, read_u64(sp)))]
}

/// [`context_address`] without a helper call, for an fentry program's
/// frame on every counted entry: the pointer is stored in map memory
/// (`scratch`, a word of the task's state) and read back, and the
/// verifier does not follow a value through map memory, so what comes
/// back is a plain number. The verifier lets a program store a pointer
/// in a map only when it is loaded with CAP_PERFMON (which pinwatch needs
/// anyway for its tracing programs). Volatile, so that the compiler keeps
/// the round trip. The helper read it replaces was most of the frame's
/// cost: the entry program on the one-page futex wake went from 717 to
/// 566 ns (BENCHMARKS.md, "In-kernel cost, part by part").
#[inline(always)]
pub fn context_number(ctx: &impl EbpfContext, scratch: &mut u64) -> u64 {
    // SAFETY: a word of live map memory, written then read.
    unsafe {
        core::ptr::write_volatile(scratch, ctx.as_ptr() as u64);
        core::ptr::read_volatile(scratch)
    }
}

/// The context pointer as a plain number, for reads at offsets the
/// verifier cannot bound (a tracepoint record's field) and for an fentry
/// program's frame: the trampoline saves the traced function's arguments
/// at the context pointer, in its frame just below that function's return
/// address.
#[inline(always)]
pub fn context_address(ctx: &impl EbpfContext) -> u64 {
    let ctx_addr = ctx.as_ptr() as u64;
    // The verifier keeps the context pointer typed as such and refuses
    // arithmetic on it with unbounded numbers; read back through the
    // helper, our copy of its value is a plain number.
    // SAFETY: reads 8 bytes of our own stack.
    unsafe { bpf_probe_read_kernel(&ctx_addr as *const u64) }.unwrap_or(0)
}
