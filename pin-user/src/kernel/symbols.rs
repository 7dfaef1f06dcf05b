//! Kernel call sites to function names: blazesym over `/proc/kallsyms`.
//!
//! Reading kallsyms takes a moment (seconds under emulation), so a
//! process-wide resolver loads it once, optionally ahead of time
//! ([`preload`]), and caches every address it has named.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{LazyLock, Mutex, mpsc},
};

use blazesym::{
    MaybeDefault,
    symbolize::{Input, Symbolized, Symbolizer, source::Kernel, source::Source},
};
use serde::{Deserialize, Serialize};

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

/// A batch of addresses for the symbolizer thread and where to answer.
struct Request {
    addrs: Vec<u64>,
    reply: mpsc::Sender<Vec<Option<CallSite>>>,
}

/// blazesym's `Symbolizer` is not `Send`: one thread owns it (and its
/// parsed kallsyms) and answers batches.
static SERVICE: LazyLock<Mutex<mpsc::Sender<Request>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || {
        let symbolizer = Symbolizer::new();
        // kallsyms only: a vmlinux search would scan the disk, and
        // kallsyms already carries the KASLR-adjusted addresses.
        let source = Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Default,
            vmlinux: MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        });
        for request in rx {
            let found = match symbolizer.symbolize(&source, Input::AbsAddr(&request.addrs)) {
                Ok(found) => found,
                Err(err) => {
                    log::warn!("cannot symbolize kernel callers: {err}");
                    Vec::new()
                }
            };
            let sites = (0..request.addrs.len())
                .map(|i| match found.get(i) {
                    Some(Symbolized::Sym(sym)) => Some(CallSite {
                        function: sym.name.to_string(),
                        offset: sym.offset as u64,
                    }),
                    _ => None,
                })
                .collect();
            let _ = request.reply.send(sites);
        }
    });
    Mutex::new(tx)
});

/// Every address named so far.
static NAMES: LazyLock<Mutex<HashMap<u64, CallSite>>> = LazyLock::new(Default::default);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts loading the kernel's symbols in the background, so the first
/// view that needs names does not wait for kallsyms.
pub fn preload() {
    let (reply, _answer) = mpsc::channel();
    // Any kernel address makes blazesym parse kallsyms; nobody waits.
    let _ = lock(&SERVICE).send(Request {
        addrs: vec![0xffff_ffff_8100_0000],
        reply,
    });
}

/// Loads the kernel's symbols now and waits until they are in memory
/// (before giving up the privilege of reading real kallsyms addresses).
pub fn load() {
    let _ = resolve([0xffff_ffff_8100_0000]);
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
    let (reply, answer) = mpsc::channel();
    let sent = lock(&SERVICE).send(Request {
        addrs: missing.clone(),
        reply,
    });
    let found = match sent {
        Ok(()) => answer.recv().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let mut names = lock(&NAMES);
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
}
