//! The kernel functions pinwatch knows, with the ids both sides use to
//! index maps and name programs.
//!
//! Ids `0..GUP_FUNC_COUNT` are the get/pin family (exported variants and the
//! internal fast and slow paths); the rest are the release family.

/// Id of a traced kernel function: an index into [`FUNCS`].
pub type FuncId = u32;

/// What role a traced function plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuncKind {
    /// An exported get/pin entry point users' code paths call.
    Variant,
    /// A fast-path variant (`*_fast`, `*_fast_only`).
    FastVariant,
    /// The internal fast-path function the fast variants share.
    FastInternal,
    /// The internal slow path (also the fallback of the fast path).
    SlowInternal,
    /// The page-table walker under everything (outermost for mlock/populate).
    Walker,
    /// A release (unpin) function.
    Release,
}

/// One traced function: its role and the kernel symbol names it has had.
#[derive(Clone, Copy, Debug)]
pub struct FuncInfo {
    /// Stable display name (the first symbol name).
    pub name: &'static str,
    /// Symbol names across kernel versions, newest first.
    pub symbols: &'static [&'static str],
    /// Role of the function.
    pub kind: FuncKind,
    /// Whether it takes FOLL_PIN references (pin family) rather than
    /// FOLL_GET ones; meaningless for internal functions and releases.
    pub is_pin: bool,
    /// Index of the page-count parameter (`nr_pages`, `npages`, `nfolios`),
    /// or [`NO_ARG`] for functions that handle one page or folio. The probes
    /// read this position; the agent checks it against the kernel's BTF.
    pub nr_arg: u8,
    /// Index of the start-address parameter, or [`NO_ARG`].
    pub start_arg: u8,
    /// Index of the `gup_flags` parameter, or [`NO_ARG`].
    pub flags_arg: u8,
    /// Index of the `pages` output array, or [`NO_ARG`].
    pub pages_arg: u8,
}

/// [`FuncInfo::nr_arg`] of functions without a page-count parameter.
pub const NO_ARG: u8 = 0xff;

/// Positions of (start, nr_pages, gup_flags, pages) in the two signatures
/// the get/pin family uses, `(start, nr, flags, pages, ...)` and `(mm,
/// start, nr, flags, pages, ...)`, and in the ones that differ.
const LOCAL: (u8, u8, u8, u8) = (0, 1, 2, 3);
const REMOTE: (u8, u8, u8, u8) = (1, 2, 3, 4);
/// `*_unlocked(start, nr_pages, pages, gup_flags)`.
const UNLOCKED: (u8, u8, u8, u8) = (0, 1, 3, 2);
/// `__gup_longterm_locked(mm, start, nr_pages, pages, locked|vmas, gup_flags)`.
const LONGTERM: (u8, u8, u8, u8) = (1, 2, 5, 3);
/// `memfd_pin_folios(memfd, start, end, folios, max_folios, offset)`: file
/// offsets, not an address; no flags (always FOLL_PIN|FOLL_LONGTERM); the
/// count and the output array are of folios.
const MEMFD: (u8, u8, u8, u8) = (NO_ARG, 4, NO_ARG, 3);
/// Release functions: one page/folio, no count.
const ONE: (u8, u8, u8, u8) = (NO_ARG, NO_ARG, NO_ARG, NO_ARG);
/// Release functions with a count at position 1.
const COUNTED: (u8, u8, u8, u8) = (NO_ARG, 1, NO_ARG, NO_ARG);

const fn f(
    symbols: &'static [&'static str],
    kind: FuncKind,
    is_pin: bool,
    (start_arg, nr_arg, flags_arg, pages_arg): (u8, u8, u8, u8),
) -> FuncInfo {
    FuncInfo {
        name: symbols[0],
        symbols,
        kind,
        is_pin,
        nr_arg,
        start_arg,
        flags_arg,
        pages_arg,
    }
}

use FuncKind::*;

/// Number of get/pin functions (ids below this).
pub const GUP_FUNC_COUNT: usize = 14;

/// Total number of traced functions.
pub const FUNC_COUNT: usize = 21;

/// Id of the internal fast-path function.
pub const FAST_INTERNAL: FuncId = 11;

/// Every function pinwatch traces, indexed by [`FuncId`].
pub const FUNCS: [FuncInfo; FUNC_COUNT] = [
    f(&["get_user_pages"], Variant, false, LOCAL),
    f(&["get_user_pages_fast"], FastVariant, false, LOCAL),
    f(
        &["get_user_pages_fast_only", "__get_user_pages_fast"],
        FastVariant,
        false,
        LOCAL,
    ),
    f(&["get_user_pages_remote"], Variant, false, REMOTE),
    f(&["get_user_pages_unlocked"], Variant, false, UNLOCKED),
    f(&["pin_user_pages"], Variant, true, LOCAL),
    f(&["pin_user_pages_fast"], FastVariant, true, LOCAL),
    f(&["pin_user_pages_fast_only"], FastVariant, true, LOCAL),
    f(&["pin_user_pages_remote"], Variant, true, REMOTE),
    f(&["pin_user_pages_unlocked"], Variant, true, UNLOCKED),
    f(&["memfd_pin_folios"], Variant, true, MEMFD),
    f(
        &["gup_fast_fallback", "internal_get_user_pages_fast"],
        FastInternal,
        false,
        LOCAL,
    ),
    f(&["__gup_longterm_locked"], SlowInternal, false, LONGTERM),
    f(&["__get_user_pages"], Walker, false, REMOTE),
    // Release family.
    f(&["unpin_user_page"], Release, true, ONE),
    f(&["unpin_user_pages"], Release, true, COUNTED),
    f(&["unpin_user_pages_dirty_lock"], Release, true, COUNTED),
    f(
        &["unpin_user_page_range_dirty_lock"],
        Release,
        true,
        COUNTED,
    ),
    f(&["unpin_folio"], Release, true, ONE),
    f(&["unpin_folios"], Release, true, COUNTED),
    f(&["unpin_user_folio"], Release, true, COUNTED),
];

/// `unpin_user_pages_dirty_lock`: the one release function that calls
/// another traced one (`unpin_user_pages`, when it need not dirty the
/// pages), so the only one whose return is traced.
pub const RELEASE_NESTING: FuncId = 16;

/// `unpin_user_pages`, which [`RELEASE_NESTING`] calls.
pub const RELEASE_NESTED: FuncId = 15;

/// Whether `id` is traced at its return as well as its entry: every get/pin
/// function (results, latency, nesting), and of the releases only
/// [`RELEASE_NESTING`]; the other releases are counted at entry.
#[inline(always)]
pub fn has_exit_probe(id: FuncId) -> bool {
    !is_release(id) || id == RELEASE_NESTING
}

/// Whether `id` belongs to the fast path (variant or internal): the first
/// slow function entered below it is a fallback.
#[inline(always)]
pub fn is_fast(id: FuncId) -> bool {
    matches!(id, 1 | 2 | 6 | 7 | FAST_INTERNAL)
}

/// The kernel function every FOLL_PIN release goes through, GUP's own
/// included (its unpin calls are inlined on 6.1 and 6.12), by the names it
/// has had: `put_compound_head(page, refs, flags)` up to 5.x, then
/// `gup_put_folio(folio, refs, flags)`: the release hook.
pub const RELEASE_HOOKS: [&str; 2] = ["gup_put_folio", "put_compound_head"];

/// `unpin_user_folio`: the block layer's release of each folio of an
/// O_DIRECT request, one call per folio; where it is nothing but a jump
/// to the release hook, the hook counts it (`ReleaseAtHook`).
pub const RELEASE_AT_HOOK_CANDIDATE: FuncId = 20;

/// Whether release function `id` may be compiled as a jump to the release
/// hook (`gup_put_folio`): the single-folio releases `unpin_user_page`,
/// `unpin_folio` and [`RELEASE_AT_HOOK_CANDIDATE`]. Where the hook counts
/// the candidate, the others leave a mark for it when counted at their
/// own entry, so that it does not count them again.
#[inline(always)]
pub fn may_jump_to_hook(id: FuncId) -> bool {
    id == 14 || id == 18 || id == RELEASE_AT_HOOK_CANDIDATE
}

/// Whether release function `id` takes the folio it releases as its first
/// argument (`unpin_folio`, `unpin_user_folio`): pin lifetimes end at its
/// entry, since the release hook may be inlined into it.
#[inline(always)]
pub fn releases_one_folio(id: FuncId) -> bool {
    id == 18 || id == 20
}

/// Whether `id` is a release function.
#[inline(always)]
pub fn is_release(id: FuncId) -> bool {
    id as usize >= GUP_FUNC_COUNT && (id as usize) < FUNC_COUNT
}

/// What a kprobe_multi link's cookie tells its one program about the
/// function that was hit: its id and where its arguments are, so that the
/// program needs no table to look them up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiTarget {
    /// The function's id.
    pub id: FuncId,
    /// [`FuncInfo::nr_arg`].
    pub nr_arg: u8,
    /// [`FuncInfo::start_arg`].
    pub start_arg: u8,
    /// [`FuncInfo::flags_arg`].
    pub flags_arg: u8,
    /// [`FuncInfo::pages_arg`].
    pub pages_arg: u8,
}

impl MultiTarget {
    /// The target of function `id` (an index into [`FUNCS`]).
    pub const fn of(id: FuncId) -> Self {
        let f = &FUNCS[id as usize];
        Self {
            id,
            nr_arg: f.nr_arg,
            start_arg: f.start_arg,
            flags_arg: f.flags_arg,
            pages_arg: f.pages_arg,
        }
    }

    /// The cookie the agent gives the function on the link: the id in the
    /// low byte, then the four argument positions a byte each.
    pub const fn cookie(self) -> u64 {
        (self.id as u64 & 0xff)
            | (self.nr_arg as u64) << 8
            | (self.start_arg as u64) << 16
            | (self.flags_arg as u64) << 24
            | (self.pages_arg as u64) << 32
    }

    /// What [`MultiTarget::cookie`] packed.
    #[inline(always)]
    pub const fn from_cookie(cookie: u64) -> Self {
        Self {
            id: (cookie & 0xff) as FuncId,
            nr_arg: (cookie >> 8) as u8,
            start_arg: (cookie >> 16) as u8,
            flags_arg: (cookie >> 24) as u8,
            pages_arg: (cookie >> 32) as u8,
        }
    }
}

/// Every function's [`MultiTarget::cookie`], by id: a plain table the
/// kprobe_multi programs can index (`FUNCS`, which [`MultiTarget::of`]
/// reads, holds names, which have no place in a BPF object's data).
pub const MULTI_COOKIES: [u64; FUNC_COUNT] = {
    let mut cookies = [0; FUNC_COUNT];
    let mut id = 0;
    while id < FUNC_COUNT {
        cookies[id] = MultiTarget::of(id as FuncId).cookie();
        id += 1;
    }
    cookies
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_cookies_round_trip_for_every_function() {
        for (id, cookie) in MULTI_COOKIES.iter().enumerate() {
            assert_eq!(
                MultiTarget::from_cookie(*cookie),
                MultiTarget::of(id as FuncId)
            );
        }
        for id in 0..FUNC_COUNT as FuncId {
            let target = MultiTarget::of(id);
            assert_eq!(MultiTarget::from_cookie(target.cookie()), target);
        }
    }

    #[test]
    fn ids_agree_with_kinds() {
        for (id, func) in FUNCS.iter().enumerate() {
            let id = id as FuncId;
            assert_eq!(
                is_fast(id),
                matches!(func.kind, FastVariant | FastInternal),
                "{}",
                func.name
            );
            assert_eq!(is_release(id), func.kind == Release, "{}", func.name);
        }
        assert_eq!(FUNCS[FAST_INTERNAL as usize].kind, FastInternal);
        assert_eq!(
            FUNCS[RELEASE_NESTING as usize].name,
            "unpin_user_pages_dirty_lock"
        );
        assert_eq!(
            FUNCS[RELEASE_AT_HOOK_CANDIDATE as usize].name,
            "unpin_user_folio"
        );
        for (id, func) in FUNCS.iter().enumerate() {
            assert_eq!(
                may_jump_to_hook(id as FuncId),
                matches!(
                    func.name,
                    "unpin_user_page" | "unpin_folio" | "unpin_user_folio"
                ),
                "{}",
                func.name
            );
        }
        assert_eq!(FUNCS[RELEASE_NESTED as usize].name, "unpin_user_pages");
        for (id, func) in FUNCS.iter().enumerate() {
            assert_eq!(
                releases_one_folio(id as FuncId),
                matches!(func.name, "unpin_folio" | "unpin_user_folio"),
                "{}",
                func.name
            );
        }
        assert_eq!(
            FUNCS.iter().filter(|f| f.kind != Release).count(),
            GUP_FUNC_COUNT
        );
    }
}
