//! Kernel call sites to function names, from `/proc/kallsyms`, looked up
//! only for the addresses actually seen.
//!
//! The table itself is not kept: a kernel has ~200k symbols, and
//! blazesym's parsed copy of them held 9-10 MiB of the agent's RSS for as
//! long as it ran (measured on 6.12) to name the tens of call sites a host
//! has. Instead one pass over kallsyms names a whole batch of new
//! addresses, and the names are cached (bounded). The descriptor is
//! opened once, while pinwatch may still see addresses: the kernel decides
//! at open, from the opener's credentials (Linux 5.8+), whether a reader
//! sees them, so rewinding it keeps working after privileges are dropped.
//! The lookup is the nearest code symbol at or below each address, which
//! is what blazesym did with kallsyms; written by hand because no crate
//! streams it.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufReader, Seek as _},
    sync::{LazyLock, Mutex},
};

use serde::{Deserialize, Serialize};

use super::kallsyms::code_symbol;

/// Name shown for a caller the stack did not reveal (address 0).
pub const UNKNOWN_CALLER: &str = "[unknown]";

/// A kernel code address, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSite {
    /// The function containing the address (e.g. `io_pin_pages`).
    pub function: String,
    /// Offset of the address into that function.
    pub offset: u64,
}

impl CallSite {
    /// The site of an unknown caller.
    pub fn unknown() -> Self {
        Self {
            function: UNKNOWN_CALLER.to_string(),
            offset: 0,
        }
    }

    /// An address no symbol names: unknown for 0, else the bare address.
    pub fn bare(addr: u64) -> Self {
        if addr == 0 {
            Self::unknown()
        } else {
            Self {
                function: format!("{addr:#x}"),
                offset: 0,
            }
        }
    }
}

impl std::fmt::Display for CallSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.function == UNKNOWN_CALLER {
            f.write_str(UNKNOWN_CALLER)
        } else {
            write!(f, "{}+{:#x}", self.function, self.offset)
        }
    }
}

/// `/proc/kallsyms`, opened by [`load`] or the first [`resolve`] (`None`
/// until then, or when it cannot be opened: names are then bare addresses).
static KALLSYMS: Mutex<Option<File>> = Mutex::new(None);

/// Most names cached: far above the call sites a host has (tens) and the
/// `CALLERS` table's default size, so only a churn of addresses (modules
/// loaded and unloaded for months) reaches it; then the cache starts over.
const NAME_CACHE: usize = 4096;

/// Every address named so far (at most [`NAME_CACHE`]).
static NAMES: LazyLock<Mutex<HashMap<u64, CallSite>>> = LazyLock::new(Default::default);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens `/proc/kallsyms` for the names to come: call while the process
/// may still read real addresses (before giving up CAP_SYSLOG or root).
/// [`resolve`] opens it itself otherwise.
pub fn load() {
    open(&mut lock(&KALLSYMS));
}

fn open(kallsyms: &mut Option<File>) -> Option<&mut File> {
    if kallsyms.is_none() {
        match File::open("/proc/kallsyms") {
            Ok(file) => *kallsyms = Some(file),
            Err(e) => log::warn!("cannot name kernel callers: /proc/kallsyms: {e}"),
        }
    }
    kallsyms.as_mut()
}

/// Names every address in `addrs` (0 and unresolvable ones as unknown or
/// as the bare address).
pub fn resolve(addrs: impl IntoIterator<Item = u64>) -> BTreeMap<u64, CallSite> {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    {
        let names = lock(&NAMES);
        for addr in addrs {
            match names.get(&addr) {
                Some(site) => {
                    out.insert(addr, site.clone());
                }
                None if addr == 0 => {
                    out.insert(0, CallSite::unknown());
                }
                None => missing.push(addr),
            }
        }
    }
    if missing.is_empty() {
        return out;
    }
    missing.sort_unstable();
    missing.dedup();
    let found = match open(&mut lock(&KALLSYMS)) {
        Some(file) => file
            .rewind()
            .map(|()| nearest_symbols(BufReader::new(&*file), &missing))
            .unwrap_or_else(|e| {
                log::warn!("cannot name kernel callers: /proc/kallsyms: {e}");
                Vec::new()
            }),
        None => Vec::new(),
    };
    let mut names = lock(&NAMES);
    if names.len() + missing.len() > NAME_CACHE {
        names.clear();
    }
    for (i, addr) in missing.into_iter().enumerate() {
        let site = found
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| CallSite::bare(addr));
        names.insert(addr, site.clone());
        out.insert(addr, site);
    }
    out
}

/// Start of x86-64's module area (`MODULES_VADDR`): the core kernel's
/// text lies below it, modules, BPF programs and trampolines above.
const MODULES_START: u64 = 0xffff_ffff_c000_0000;

/// For each of `addrs` (sorted, no duplicates), the code symbol with the
/// greatest address at or below it, in one pass over kallsyms text.
/// Symbol `s` can only be the answer for addresses in bucket
/// `i` = (addrs[i-1], addrs[i]] where addrs[i] is the first at or above
/// it, so each bucket keeps its greatest symbol; an address's answer is
/// then its own bucket's, or the nearest non-empty bucket below it.
///
/// Module symbols may come in any order; the core kernel's come first and
/// in address order (the kernel sorts them), so when every address is
/// core text the pass stops at the first core symbol above them all. Why:
/// a pass over all of kallsyms cost 0.41-0.43 s of CPU under TCG on 6.12
/// (`stat`, one per new call site: 16 % of a CPU over the overhead
/// benchmark's timing passes), and call sites in mm/, kernel/ and fs/ lie
/// in the first part of the listing.
fn nearest_symbols(text: impl std::io::BufRead, addrs: &[u64]) -> Vec<Option<CallSite>> {
    let mut buckets: Vec<Option<(u64, String)>> = vec![None; addrs.len()];
    let highest = addrs.last().copied().unwrap_or(0);
    for line in text.lines().map_while(Result::ok) {
        let Some((start, name)) = code_symbol(&line) else {
            continue;
        };
        if highest < start && start < MODULES_START {
            break;
        }
        let i = addrs.partition_point(|&a| a < start);
        if start == 0 || i == addrs.len() {
            continue;
        }
        match &mut buckets[i] {
            Some((best, best_name)) if *best < start => {
                *best = start;
                best_name.clear();
                best_name.push_str(name);
            }
            Some(_) => {}
            empty => *empty = Some((start, name.to_string())),
        }
    }
    let mut below: Option<(u64, String)> = None;
    addrs
        .iter()
        .zip(buckets)
        .map(|(&addr, bucket)| {
            if bucket.is_some() {
                below = bucket;
            }
            below.as_ref().map(|(start, name)| CallSite {
                function: name.clone(),
                offset: addr - start,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_display_like_kallsyms_offsets() {
        let site = CallSite {
            function: "io_pin_pages".into(),
            offset: 0x5a,
        };
        assert_eq!(site.to_string(), "io_pin_pages+0x5a");
        assert_eq!(CallSite::unknown().to_string(), "[unknown]");
        assert_eq!(resolve([0]).get(&0), Some(&CallSite::unknown()));
    }

    /// Module symbols come after the core kernel's, out of address order.
    const TEXT: &str = "\
ffffffff81000000 T _stext
ffffffff81200000 T io_pin_pages
ffffffff81200100 t io_sqe_buffer_register
ffffffff81300000 D some_data
ffffffff81300010 T process_vm_rw_core
0000000000000000 T hidden
ffffffffc0100000 t mlx5_ib_reg_user_mr\t[mlx5_ib]
ffffffffc0000000 t brd_probe\t[brd]
";

    /// Where the proptest's core symbols start.
    const KERNEL_BASE: u64 = 0xffff_ffff_8100_0000;

    fn site(function: &str, offset: u64) -> Option<CallSite> {
        Some(CallSite {
            function: function.into(),
            offset,
        })
    }

    #[test]
    fn each_address_gets_the_nearest_code_symbol_below_it() {
        let addrs = [
            0xffff_ffff_8000_0000,
            0xffff_ffff_8120_005a,
            0xffff_ffff_8120_0100,
            0xffff_ffff_8130_0004,
            0xffff_ffff_8130_0020,
            0xffff_ffff_c000_0010,
            0xffff_ffff_c010_0008,
        ];
        assert_eq!(
            nearest_symbols(TEXT.as_bytes(), &addrs),
            vec![
                None,
                site("io_pin_pages", 0x5a),
                site("io_sqe_buffer_register", 0),
                // Data symbols are not functions: the code symbol before.
                site("io_sqe_buffer_register", 0xfff04),
                site("process_vm_rw_core", 0x10),
                site("brd_probe", 0x10),
                site("mlx5_ib_reg_user_mr", 8),
            ]
        );
    }

    #[test]
    fn hidden_addresses_name_nothing() {
        let hidden = "0000000000000000 T io_pin_pages\n0000000000000000 t brd_probe\n";
        assert_eq!(
            nearest_symbols(hidden.as_bytes(), &[0xffff_ffff_8120_005a]),
            vec![None]
        );
    }

    #[test]
    fn reading_stops_past_the_last_core_address() {
        // A core symbol listed after one above every address asked about
        // is never read: the listing is in address order there.
        let text = "ffffffff81200000 T io_pin_pages\n\
                    ffffffff81300000 T process_vm_rw_core\n\
                    ffffffff81200050 T out_of_order\n";
        assert_eq!(
            nearest_symbols(text.as_bytes(), &[0xffff_ffff_8120_005a]),
            vec![site("io_pin_pages", 0x5a)]
        );
        // A module address reads everything.
        let text = "ffffffff81200000 T io_pin_pages\n\
                    ffffffffc0000000 t brd_probe\t[brd]\n";
        assert_eq!(
            nearest_symbols(text.as_bytes(), &[0xffff_ffff_c000_0010]),
            vec![site("brd_probe", 0x10)]
        );
    }

    proptest::proptest! {
        /// Against the obvious quadratic search: core symbols in address
        /// order, as the kernel lists them, then module symbols in any
        /// order, and addresses in either part.
        #[test]
        fn matches_a_linear_search(
            core in proptest::collection::vec((1u64..10_000, 0u8..3), 0..60),
            modules in proptest::collection::vec((0u64..10_000, 0u8..3), 0..20),
            addrs in proptest::collection::vec((0u64..12_000, proptest::bool::ANY), 1..40),
        ) {
            let mut core = core;
            core.sort_by_key(|(a, _)| *a);
            let symbols: Vec<(u64, u8)> = core
                .into_iter()
                .map(|(a, k)| (KERNEL_BASE + a, k))
                .chain(modules.into_iter().map(|(a, k)| (MODULES_START + a, k)))
                .collect();
            let mut addrs: Vec<u64> = addrs
                .into_iter()
                .map(|(a, module)| if module { MODULES_START + a } else { KERNEL_BASE + a })
                .collect();
            addrs.sort_unstable();
            addrs.dedup();
            let text: String = symbols
                .iter()
                .enumerate()
                .map(|(i, (a, k))| format!("{a:016x} {} f{i}\n", ["T", "t", "D"][*k as usize]))
                .collect();
            let expected: Vec<Option<CallSite>> = addrs
                .iter()
                .map(|&addr| {
                    symbols
                        .iter()
                        .enumerate()
                        .filter(|(_, (a, k))| *a <= addr && *k != 2)
                        // The greatest address; the first listed among equals.
                        .max_by_key(|(i, (a, _))| (*a, std::cmp::Reverse(*i)))
                        .map(|(i, (a, _))| CallSite { function: format!("f{i}"), offset: addr - a })
                })
                .collect();
            proptest::prop_assert_eq!(nearest_symbols(text.as_bytes(), &addrs), expected);
        }
    }
}
