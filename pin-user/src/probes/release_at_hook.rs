//! Whether the release hook (`gup_put_folio`) counts `unpin_user_folio`'s
//! releases, so that each page an O_DIRECT completion releases runs one
//! probe program instead of two (one BPF trampoline, or under
//! `--attach kprobe-multi` one kprobe): only where the kernel's own code
//! shows `unpin_user_folio` to be nothing but a jump (or a call) to the
//! hook, read from `/proc/kcore`. What the hook needs to tell those releases
//! from the others that reach it goes into `RELEASE_AT_HOOK`
//! ([`pin_common::release_hook::ReleaseAtHook`]).

use std::{
    fs::File,
    sync::{Mutex, OnceLock},
};

use object::{
    LittleEndian, ReadCache, ReadRef as _,
    elf::{FileHeader64, PT_LOAD},
    read::elf::{FileHeader as _, ProgramHeader as _},
};
use pin_common::{
    FUNCS, FuncId, FuncKind, catalog::RELEASE_AT_HOOK_CANDIDATE, release_hook::ReleaseAtHook,
};

use aya::Ebpf;

use super::{AttachError, KernelMapsMut, Mechanism, ProbeStatus};
use crate::kernel::{Kallsyms, KernelFacts, features::Object, kallsyms};

/// The most bytes of `unpin_user_folio` read: an `endbr64`, the 5-byte
/// ftrace site, two `mov`s of an immediate and the jump fit in 25.
const CODE_READ: usize = 32;

/// A read of the addresses and code ranges of the release functions and
/// the hook, where the hook could count `unpin_user_folio` (the full
/// object, and BTF has it), by a reader of its own: `KernelFacts`'s read
/// of `/proc/kallsyms` stops long before mm/gup.c. Started as `attach`
/// begins and waited for only by [`Verdict`]: beside the load alone, the
/// load waited up to 97 ms for it (median 50) on Debian 6.12 under TCG
/// once aya's loader no longer parsed the kernel BTF, and 100 ms on 6.18
/// (BENCHMARKS.md, "Start-up, twelfth look").
pub(super) struct RangesReader(kallsyms::Reader);

impl RangesReader {
    /// Starts the read; `None` where it is not needed or no thread could
    /// be had (then [`plan`] finds nothing read and says so).
    pub(super) fn start(facts: &KernelFacts) -> Option<Self> {
        let candidate = FUNCS[RELEASE_AT_HOOK_CANDIDATE as usize].name;
        let btf = facts.btf.as_ref().ok()?;
        if facts.features.object() != Object::Full || !btf.has_func(candidate) {
            return None;
        }
        let wanted: Vec<&'static str> = FUNCS
            .iter()
            .filter(|f| f.kind == FuncKind::Release)
            .flat_map(|f| f.symbols.iter().copied())
            .chain(pin_common::catalog::RELEASE_HOOKS)
            .collect();
        // Stop once every one this kernel has is found, and ended.
        let present: Vec<Vec<&'static str>> = wanted
            .iter()
            .filter(|name| btf.has_func(name))
            .map(|name| vec![*name])
            .collect();
        let reader = kallsyms::Reader::start("release-ranges", wanted)?;
        reader.enough(present);
        Some(Self(reader))
    }

    /// What was read, once it has been (`None` if /proc/kallsyms could
    /// not be opened).
    pub(super) fn join(self) -> Option<Kallsyms> {
        self.0.join()
    }
}

/// Whether the hook counts `unpin_user_folio` ([`plan`]), worked out
/// once, by whichever asks first: the function's own job in the attach
/// pool (`programs::attach_functions`), which so waits for the read of the
/// kernel's symbols and code while every other function attaches, or,
/// before a kprobe_multi link that takes every function at once, the
/// caller.
pub(super) struct Verdict<'a> {
    facts: &'a KernelFacts,
    hook: &'a str,
    status: Vec<ProbeStatus>,
    configured: Vec<FuncId>,
    reader: Mutex<Option<RangesReader>>,
    plan: OnceLock<Result<ReleaseAtHook, String>>,
}

impl<'a> Verdict<'a> {
    /// The question for `status` (the functions' discovery) and
    /// `configured` (those set up for probes), with the symbols `reader`
    /// reads.
    pub(super) fn new(
        facts: &'a KernelFacts,
        hook: &'a str,
        status: &[ProbeStatus],
        configured: &[FuncId],
        reader: Option<RangesReader>,
    ) -> Self {
        Self {
            facts,
            hook,
            status: status.to_vec(),
            configured: configured.to_vec(),
            reader: Mutex::new(reader),
            plan: OnceLock::new(),
        }
    }

    /// The plan, or why there is none (worked out on the first call;
    /// later calls wait for it).
    fn plan(&self) -> &Result<ReleaseAtHook, String> {
        self.plan.get_or_init(|| {
            let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
            let symbols = reader.and_then(RangesReader::join);
            plan(
                self.facts,
                self.hook,
                &self.status,
                &self.configured,
                symbols.as_ref(),
            )
        })
    }

    /// Whether function `id` gets no probe of its own: `unpin_user_folio`,
    /// where the hook counts it.
    pub(super) fn leaves_out(&self, id: FuncId) -> bool {
        id == RELEASE_AT_HOOK_CANDIDATE && self.plan().is_ok()
    }

    /// The plan once the functions are attached, written to the hook's
    /// settings (`RELEASE_AT_HOOK`), which only the hook reads; where they
    /// cannot be written, the function left out gets its probe now
    /// (`attach`), as where the hook fails ([`settle`]).
    pub(super) fn apply(
        self,
        ebpf: &mut Ebpf,
        attach: impl FnOnce(&mut Ebpf, FuncId) -> Result<(), AttachError>,
    ) -> Result<Result<ReleaseAtHook, String>, AttachError> {
        let plan = self.plan().clone();
        let written = plan.and_then(|plan| {
            KernelMapsMut::new(ebpf)
                .set_release_at_hook(plan)
                .map(|()| plan)
                .map_err(|e| e.to_string())
        });
        if written.is_err() && self.leaves_out(RELEASE_AT_HOOK_CANDIDATE) {
            attach(ebpf, RELEASE_AT_HOOK_CANDIDATE)?;
        }
        Ok(written)
    }
}

/// The hook's settings where it counts `unpin_user_folio`, or why it does
/// not (every release function then keeps its own probe). `status` is the
/// functions' discovery, `configured` those set up for probes; `hook` the
/// release hook's symbol; `symbols` what [`RangesReader`] read.
fn plan(
    facts: &KernelFacts,
    hook: &str,
    status: &[ProbeStatus],
    configured: &[FuncId],
    symbols: Option<&Kallsyms>,
) -> Result<ReleaseAtHook, String> {
    let candidate = FUNCS[RELEASE_AT_HOOK_CANDIDATE as usize].name;
    if facts.features.object() != Object::Full {
        return Err("the baseline object (before Linux 5.17) probes every release".into());
    }
    if hook != "gup_put_folio" {
        return Err(format!("no gup_put_folio here ({hook})"));
    }
    let symbol = status[RELEASE_AT_HOOK_CANDIDATE as usize].symbol.as_deref();
    if symbol != Some(candidate) || !configured.contains(&RELEASE_AT_HOOK_CANDIDATE) {
        return Err(format!("no {candidate} to trace here"));
    }
    let kallsyms = symbols.ok_or("/proc/kallsyms unread")?;
    let (start, end) = kallsyms
        .range(candidate)
        .ok_or("its code range is not in /proc/kallsyms")?;
    let target = kallsyms
        .address(&[hook])
        .ok_or("gup_put_folio's address is not in /proc/kallsyms")?;
    let len = usize::try_from(end - start).map_or(CODE_READ, |n| n.min(CODE_READ));
    let code = read_kernel_text(start, len).map_err(|e| format!("/proc/kcore: {e}"))?;
    if !reaches_only(&code, start, target) {
        return Err(format!(
            "{candidate} is more than a jump to {hook} on this kernel ({})",
            hex(&code)
        ));
    }
    let mut plan = ReleaseAtHook {
        on: 1,
        ..ReleaseAtHook::default()
    };
    let others = status.iter().filter(|st| {
        FUNCS[st.id as usize].kind == FuncKind::Release && st.id != RELEASE_AT_HOOK_CANDIDATE
    });
    let mut slots = plan.entry_counted.iter_mut();
    for st in others.filter(|st| st.symbol.is_some()) {
        let symbol = st.symbol.as_deref().unwrap_or_default();
        let (start, end) = kallsyms
            .range(symbol)
            .ok_or_else(|| format!("{symbol}'s code range is not in /proc/kallsyms"))?;
        *slots.next().ok_or("more release functions than ranges")? = [start, end];
    }
    Ok(plan)
}

/// What came of counting a release function at the release hook (`plan`),
/// once the hook attached or failed: the function's status says it is
/// counted there; or, without the hook, it is attached with a probe of its
/// own after all (`attach`) and the hook's settings are cleared. The name
/// of the function counted at the hook, or why none is.
pub(super) fn settle(
    ebpf: &mut Ebpf,
    status: &mut [ProbeStatus],
    plan: Result<ReleaseAtHook, String>,
    release_hook: &Result<Mechanism, String>,
    hook: &str,
    attach: impl FnOnce(&mut Ebpf, &mut [ProbeStatus], &[FuncId]) -> Result<(), AttachError>,
) -> Result<&'static str, String> {
    plan?;
    let id = RELEASE_AT_HOOK_CANDIDATE;
    match release_hook {
        Ok(mechanism) => {
            let st = &mut status[id as usize];
            st.attached = Some(*mechanism);
            st.notes.push(counted_at_hook_note(hook));
            Ok(FUNCS[id as usize].name)
        }
        Err(e) => {
            let cleared = KernelMapsMut::new(ebpf)
                .set_release_at_hook(ReleaseAtHook::default())
                .map_err(|e| e.to_string());
            let attached = attach(ebpf, status, &[id]).map_err(|e| e.to_string());
            let why = format!("{hook} not traced ({e}): a probe of its own instead");
            cleared.and(attached).map_err(|e| format!("{why}: {e}"))?;
            Err(why)
        }
    }
}

/// A note for the function the hook counts, in `pinwatch probes`.
pub(super) fn counted_at_hook_note(hook: &str) -> String {
    format!(
        "counted at {hook}'s probe: this kernel's code jumps there and does nothing else \
         (read in /proc/kcore), so each page it releases runs one probe program, not two"
    )
}

/// `len` bytes of the running kernel's text at `addr`, from `/proc/kcore`
/// (an ELF core file whose loadable segments map the kernel's addresses;
/// root only, and refused under lockdown).
fn read_kernel_text(addr: u64, len: usize) -> Result<Vec<u8>, String> {
    let file = File::open("/proc/kcore").map_err(|e| e.to_string())?;
    let cache = ReadCache::new(file);
    let header = FileHeader64::<LittleEndian>::parse(&cache).map_err(|e| e.to_string())?;
    let endian = LittleEndian;
    let segments = header
        .program_headers(endian, &cache)
        .map_err(|e| e.to_string())?;
    let segment = segments
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .find(|ph| {
            let (start, size) = (ph.p_vaddr(endian), ph.p_memsz(endian));
            addr >= start && addr.saturating_add(len as u64) <= start.saturating_add(size)
        })
        .ok_or_else(|| format!("no segment maps {addr:#x}"))?;
    let offset = segment.p_offset(endian) + (addr - segment.p_vaddr(endian));
    cache
        .read_bytes_at(offset, len as u64)
        .map(<[u8]>::to_vec)
        .map_err(|()| format!("{len} bytes at {addr:#x} unreadable"))
}

/// Whether `code`, a function's first bytes at address `at`, is only: an
/// optional `endbr64`, the 5-byte ftrace site (a call, a jump or a nop),
/// `mov`s of an immediate to the argument registers, and a jump to
/// `target` (or a call to it and a return). Then every call of the
/// function reaches `target` exactly once, with the function's own
/// arguments but for those immediates.
fn reaches_only(code: &[u8], at: u64, target: u64) -> bool {
    let mut i = 0;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        i += 4;
    }
    let site = code.get(i..i + 5).unwrap_or_default();
    let is_site = matches!(site.first(), Some(0xe8 | 0xe9)) || site == [0x0f, 0x1f, 0x44, 0, 0];
    if !is_site {
        return false;
    }
    i += 5;
    // `mov $imm32, %edx` / `%esi` / `%ecx` (the flags, a count).
    while matches!(code.get(i), Some(0xba | 0xbe | 0xb9)) {
        i += 5;
    }
    let rel_target = |opcode_at: usize| -> Option<u64> {
        let rel = code.get(opcode_at + 1..opcode_at + 5)?;
        let rel = i32::from_le_bytes(rel.try_into().ok()?);
        Some((at + opcode_at as u64 + 5).wrapping_add_signed(i64::from(rel)))
    };
    match code.get(i) {
        Some(0xe9) => rel_target(i) == Some(target),
        Some(0xe8) => {
            // A call, then `ret` or a jump to the return thunk: accepted
            // only as `ret` (the thunk's address is another symbol).
            rel_target(i) == Some(target) && code.get(i + 5) == Some(&0xc3)
        }
        _ => false,
    }
}

/// Bytes as hex, for an error message.
fn hex(code: &[u8]) -> String {
    code.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 6.12.118's `unpin_user_folio` at 0xffffffff81375500
    /// (objdump of its vmlinux): `endbr64; call __fentry__; mov
    /// $0x80000,%edx; jmp gup_put_folio` (at 0xffffffff813752f0).
    const DEBIAN_6_12: [u8; 19] = [
        0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0xe7, 0xb5, 0xd1, 0xff, 0xba, 0x00, 0x00, 0x08, 0x00, 0xe9,
        0xdd, 0xfd, 0xff, 0xff,
    ];
    const AT: u64 = 0xffff_ffff_8137_5500;
    const GUP_PUT_FOLIO: u64 = 0xffff_ffff_8137_52f0;

    #[test]
    fn a_tail_jump_to_the_hook_is_recognised() {
        assert!(reaches_only(&DEBIAN_6_12, AT, GUP_PUT_FOLIO));
        // With the ftrace site patched to a nop, as when nothing traces it.
        let mut nop = DEBIAN_6_12;
        nop[4..9].copy_from_slice(&[0x0f, 0x1f, 0x44, 0, 0]);
        assert!(reaches_only(&nop, AT, GUP_PUT_FOLIO));
    }

    #[test]
    fn anything_else_is_not() {
        // A jump elsewhere.
        assert!(!reaches_only(&DEBIAN_6_12, AT, GUP_PUT_FOLIO + 16));
        // Another instruction before the jump (e.g. an inlined check).
        let mut other = DEBIAN_6_12.to_vec();
        other.insert(9, 0x90);
        assert!(!reaches_only(&other, AT, GUP_PUT_FOLIO));
        // A call not followed by a return.
        let mut call = DEBIAN_6_12.to_vec();
        call[14] = 0xe8;
        assert!(!reaches_only(&call, AT, GUP_PUT_FOLIO));
        call.push(0xc3);
        assert!(reaches_only(&call, AT, GUP_PUT_FOLIO));
        // Cut short.
        assert!(!reaches_only(&DEBIAN_6_12[..12], AT, GUP_PUT_FOLIO));
    }
}
