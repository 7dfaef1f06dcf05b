//! What the release hook (`gup_put_folio`) counts besides GUP's own
//! releases: the layout the agent writes and the probes read
//! (`maps::RELEASE_AT_HOOK`).

/// How many release functions' code ranges [`ReleaseAtHook`] holds: one
/// per release function pinwatch knows, and one spare.
pub const RELEASE_RANGES: usize = 8;

/// What the release hook (`gup_put_folio`) counts besides GUP's own
/// releases (`RELEASE_AT_HOOK`, written by the agent before the hook
/// attaches). `unpin_user_folio` (the block layer's release of every
/// O_DIRECT page) is only `gup_put_folio` behind a jump: where the agent
/// read that in the kernel's code, it leaves `unpin_user_folio` without a
/// probe and the hook counts its releases, so each page enters one
/// trampoline instead of two. The hook tells them apart from the other
/// releases that reach it by the return address: a release function
/// probed at its entry calls the hook from inside its own code
/// (`entry_counted`) or jumps there leaving a mark
/// ([`crate::TaskState::hook_mark`], `irq_marks`); GUP's own releases
/// come inside a get/pin call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseAtHook {
    /// 1 when the hook counts `catalog::RELEASE_AT_HOOK_CANDIDATE`
    /// (`unpin_user_folio`), 0 when every release function has its own
    /// probe.
    pub on: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// `[start, end)` of the code of each release function counted at its
    /// own entry; unused entries are zero.
    pub entry_counted: [[u64; 2]; RELEASE_RANGES],
    /// The marks (stack slot, return address) releases counted at entry
    /// in an interrupt left for the hook, like `TaskState::hook_mark`:
    /// per CPU, since an interrupt neither sleeps nor moves; two, for an
    /// interrupt that interrupts another. Written by the probes only.
    pub irq_marks: [[u64; 2]; 2],
}
