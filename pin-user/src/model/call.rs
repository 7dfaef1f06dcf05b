//! A GUP call as the model takes it: the variant, the range and the flags
//! its caller passed.

use serde::{Deserialize, Serialize};

/// The exported entry points (and the populate walker), by kernel name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// `get_user_pages`.
    GetUserPages,
    /// `get_user_pages_fast`.
    GetUserPagesFast,
    /// `get_user_pages_fast_only`.
    GetUserPagesFastOnly,
    /// `get_user_pages_remote`.
    GetUserPagesRemote,
    /// `get_user_pages_unlocked`.
    GetUserPagesUnlocked,
    /// `pin_user_pages`.
    PinUserPages,
    /// `pin_user_pages_fast`.
    PinUserPagesFast,
    /// `pin_user_pages_fast_only` (before 6.3).
    PinUserPagesFastOnly,
    /// `pin_user_pages_remote`.
    PinUserPagesRemote,
    /// `pin_user_pages_unlocked`.
    PinUserPagesUnlocked,
    /// `__get_user_pages` without a page array (mlock, MAP_POPULATE,
    /// MADV_POPULATE_*): faults pages in, takes no references.
    Populate,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 11] = [
        Variant::GetUserPages,
        Variant::GetUserPagesFast,
        Variant::GetUserPagesFastOnly,
        Variant::GetUserPagesRemote,
        Variant::GetUserPagesUnlocked,
        Variant::PinUserPages,
        Variant::PinUserPagesFast,
        Variant::PinUserPagesFastOnly,
        Variant::PinUserPagesRemote,
        Variant::PinUserPagesUnlocked,
        Variant::Populate,
    ];

    /// The kernel symbol (the name pinwatch's probes report).
    pub fn name(self) -> &'static str {
        match self {
            Variant::GetUserPages => "get_user_pages",
            Variant::GetUserPagesFast => "get_user_pages_fast",
            Variant::GetUserPagesFastOnly => "get_user_pages_fast_only",
            Variant::GetUserPagesRemote => "get_user_pages_remote",
            Variant::GetUserPagesUnlocked => "get_user_pages_unlocked",
            Variant::PinUserPages => "pin_user_pages",
            Variant::PinUserPagesFast => "pin_user_pages_fast",
            Variant::PinUserPagesFastOnly => "pin_user_pages_fast_only",
            Variant::PinUserPagesRemote => "pin_user_pages_remote",
            Variant::PinUserPagesUnlocked => "pin_user_pages_unlocked",
            Variant::Populate => "__get_user_pages",
        }
    }

    /// Takes FOLL_PIN references (else FOLL_GET, or none for populate).
    pub fn pins(self) -> bool {
        matches!(
            self,
            Variant::PinUserPages
                | Variant::PinUserPagesFast
                | Variant::PinUserPagesFastOnly
                | Variant::PinUserPagesRemote
                | Variant::PinUserPagesUnlocked
        )
    }

    /// Takes references at all (populate only faults).
    pub fn takes_pages(self) -> bool {
        self != Variant::Populate
    }

    /// Tries the lockless fast path first.
    pub fn fast(self) -> bool {
        matches!(
            self,
            Variant::GetUserPagesFast
                | Variant::GetUserPagesFastOnly
                | Variant::PinUserPagesFast
                | Variant::PinUserPagesFastOnly
        )
    }

    /// Never falls back to the slow path.
    pub fn fast_only(self) -> bool {
        matches!(
            self,
            Variant::GetUserPagesFastOnly | Variant::PinUserPagesFastOnly
        )
    }

    /// Takes `nr_pages` as a 32-bit `int` (the fast variants), so a
    /// negative count reaches the kernel as such.
    pub fn int_nr(self) -> bool {
        self.fast()
    }
}

/// The `gup_flags` a caller passes, by meaning (their values differ
/// between kernels; see `kernel::foll`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GupFlags {
    /// FOLL_WRITE: the caller will write to the pages.
    pub write: bool,
    /// FOLL_FORCE: write to read-only private mappings (breaking COW) and
    /// read PROT_NONE ones, as ptrace and /proc/PID/mem do.
    pub force: bool,
    /// FOLL_LONGTERM: the pin is held indefinitely (RDMA, io_uring, VFIO).
    pub longterm: bool,
    /// FOLL_PIN passed by the caller: invalid, the wrappers add it.
    pub pin: bool,
    /// FOLL_GET passed by the caller to a pin variant: invalid.
    pub get: bool,
}

impl GupFlags {
    /// No flags.
    pub const NONE: GupFlags = GupFlags {
        write: false,
        force: false,
        longterm: false,
        pin: false,
        get: false,
    };

    /// FOLL_WRITE only.
    pub const WRITE: GupFlags = GupFlags {
        write: true,
        ..GupFlags::NONE
    };

    /// FOLL_WRITE when `write`, else nothing.
    pub fn write_if(write: bool) -> GupFlags {
        GupFlags {
            write,
            ..GupFlags::NONE
        }
    }

    /// The names of the set flags, without the `FOLL_` prefix.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.write, "WRITE"),
            (self.get, "GET"),
            (self.force, "FORCE"),
            (self.longterm, "LONGTERM"),
            (self.pin, "PIN"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

/// One call into the GUP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Entry point.
    pub variant: Variant,
    /// Start address (rounded down to its page by the kernel).
    pub start: u64,
    /// Pages asked for, as the caller's type holds it.
    pub nr_pages: i64,
    /// Caller's flags.
    pub flags: GupFlags,
}
