//! The running kernel's function symbols, from `/proc/kallsyms`.
//!
//! procfs does not parse kallsyms, and the format is three whitespace
//! separated fields (plus an optional `[module]`), so this is a few lines.

use std::{
    collections::{HashMap, HashSet},
    io::BufRead as _,
};

/// The kernel's return-probe trampoline by kernel: rethook (5.19+ on x86),
/// then the older names. Its address tells the probes a kretprobe's
/// return address.
pub const RETURN_TRAMPOLINES: [&str; 3] = [
    "arch_rethook_trampoline",
    "__kretprobe_trampoline",
    "kretprobe_trampoline",
];

/// The symbol that ends the core kernel's text in kallsyms.
const END_OF_TEXT: &str = "_etext";

/// Groups of symbol names, each satisfied by any one of its members
/// found: set while kallsyms is read, they let the reader stop once it has
/// every group (see [`Kallsyms::read`]).
pub type Enough = std::sync::OnceLock<Vec<Vec<&'static str>>>;

/// The groups that are never all found: read to the end of the core
/// kernel's text (a group with no member).
pub fn to_end_of_text() -> Vec<Vec<&'static str>> {
    vec![Vec::new()]
}

/// /proc/kallsyms being read on a thread of its own, for the symbols it
/// was started with. The thread opens the file at once, while the process
/// still holds the privileges that make the kernel show addresses (it
/// checks the opener's credentials), then waits to be told what is enough
/// ([`Reader::enough`]) before it reads.
pub struct Reader {
    thread: std::thread::JoinHandle<Option<Kallsyms>>,
    wanted: std::sync::Arc<[&'static str]>,
    enough: std::sync::Arc<Enough>,
}

impl Reader {
    /// Starts a thread named `name` reading the code symbols in `wanted`
    /// (see [`Kallsyms::read`]); `None` where no thread could be started.
    pub fn start(name: &str, wanted: Vec<&'static str>) -> Option<Self> {
        let wanted: std::sync::Arc<[&'static str]> = wanted.into();
        let enough = std::sync::Arc::new(Enough::new());
        let (theirs, their_wanted) = (std::sync::Arc::clone(&enough), wanted.clone());
        let label = name.to_string();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let file = Kallsyms::open();
                theirs.wait();
                read_logged(&label, file, &their_wanted, &theirs)
            })
            .ok()
            .map(|thread| Self {
                thread,
                wanted,
                enough,
            })
    }

    /// Lets the reader stop once it has found `groups` (see
    /// [`Kallsyms::read`]).
    pub fn enough(&self, groups: Vec<Vec<&'static str>>) {
        let _ = self.enough.set(groups);
    }

    /// The symbols once read (read here if the thread died); `None` when
    /// /proc/kallsyms could not be opened.
    pub fn join(self) -> Option<Kallsyms> {
        let Self {
            thread,
            wanted,
            enough,
        } = self;
        thread
            .join()
            .unwrap_or_else(|_| read_logged("kallsyms (again)", Kallsyms::open(), &wanted, &enough))
    }
}

/// [`Kallsyms::read`] of `file` with its time logged under `label`.
fn read_logged(
    label: &str,
    file: std::io::Result<std::fs::File>,
    wanted: &[&str],
    enough: &Enough,
) -> Option<Kallsyms> {
    log::info!("{label}: reading /proc/kallsyms");
    let started = std::time::Instant::now();
    let symbols = Kallsyms::read(file.ok()?, wanted, enough);
    log::info!(
        "{label}: read /proc/kallsyms in {} ms",
        started.elapsed().as_millis()
    );
    Some(symbols)
}

/// Text symbols of the running kernel, with their addresses.
#[derive(Debug, Default)]
pub struct Kallsyms {
    /// Symbol name -> address (0 where kallsyms hides addresses, without
    /// CAP_SYSLOG); the first of duplicate names.
    text: HashMap<String, u64>,
    /// Kept symbol name -> the address of the next code symbol above it
    /// (where its code ends, `__pfx_` padding of the next one included).
    ends: HashMap<String, u64>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`, keeping the code symbols named in `wanted`
    /// and their compiler clones (`name.isra.0`, ...), up to the end of
    /// the core kernel's text (`_etext`). Keeping only those matters: a
    /// kernel has ~200k symbols and pinwatch needs ~25. Read a line at a
    /// time: the whole text is over 10 MiB. Stopping at `_etext` spares
    /// the kernel generating the rest: data, init text and modules, none
    /// of which holds a GUP function or a return trampoline (Debian 6.12:
    /// line 97 730 of 155 452; the kernel lists symbols by address).
    ///
    /// Sooner still once `enough` is set and every one of its groups has
    /// a member found: the return trampoline lies in the first few
    /// thousand lines (arch/x86 is linked first), the GUP functions in a
    /// third of the text (mm/gup.c is linked early).
    pub fn read(file: std::fs::File, wanted: &[&str], enough: &Enough) -> Self {
        let file = std::io::BufReader::new(file);
        Self::parse_lines(file.lines().map_while(Result::ok), wanted, enough)
    }

    /// Opens `/proc/kallsyms` for [`Kallsyms::read`]: the kernel shows
    /// addresses or zeros by the credentials of whoever opened it.
    pub fn open() -> std::io::Result<std::fs::File> {
        std::fs::File::open("/proc/kallsyms")
    }

    /// Parses kallsyms text like [`Kallsyms::read`].
    pub fn parse(text: &str, wanted: &[&str], enough: &Enough) -> Self {
        Self::parse_lines(text.lines(), wanted, enough)
    }

    fn parse_lines<L: AsRef<str>>(
        lines: impl Iterator<Item = L>,
        wanted: &[&str],
        enough: &Enough,
    ) -> Self {
        // A set: every one of the ~100 000 lines is looked up.
        let wanted: HashSet<&str> = wanted.iter().copied().collect();
        let mut symbols = HashMap::new();
        let mut ends = HashMap::new();
        // Kept symbols whose end is the next higher address listed.
        let mut open: Vec<(String, u64)> = Vec::new();
        // Set once `enough` is found: then only the open ends are read.
        let mut finishing = false;
        let found_enough = |symbols: &HashMap<String, u64>| {
            enough.get().is_some_and(|groups| {
                groups
                    .iter()
                    .all(|group| group.iter().any(|name| symbols.contains_key(*name)))
            })
        };
        for (n, line) in lines.enumerate() {
            let Some((addr, name)) = code_symbol(line.as_ref()) else {
                continue;
            };
            open.retain(|(sym, start)| {
                let ended = addr > *start;
                if ended {
                    ends.insert(sym.clone(), addr);
                }
                !ended
            });
            if name == END_OF_TEXT || (finishing && open.is_empty()) {
                break;
            }
            if finishing {
                continue;
            }
            let base = name.split_once('.').map_or(name, |(base, _)| base);
            let kept = wanted.contains(base) && !symbols.contains_key(name);
            if kept {
                symbols.insert(name.to_string(), addr);
                if addr != 0 {
                    open.push((name.to_string(), addr));
                }
            }
            // Checked at each kept symbol, and now and then for an
            // `enough` set after its last symbol was found; the symbols
            // found then still get their ends.
            if (kept || n % 1024 == 0) && found_enough(&symbols) {
                if open.is_empty() {
                    break;
                }
                finishing = true;
            }
        }
        Self {
            text: symbols,
            ends,
        }
    }

    /// The address of the first of `names` listed with a non-zero address
    /// (addresses read as 0 without CAP_SYSLOG).
    pub fn address(&self, names: &[&str]) -> Option<u64> {
        names
            .iter()
            .find_map(|name| self.text.get(*name).copied().filter(|&addr| addr != 0))
    }

    /// The code of symbol `name`: from its address to the next code
    /// symbol's (`None` when either is unknown or hidden).
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let start = *self.text.get(name).filter(|&&addr| addr != 0)?;
        Some((start, *self.ends.get(name)?))
    }

    /// Whether a code symbol with exactly this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.text.contains_key(name)
    }

    /// Compiler clones of `name` (`name.isra.0`, `name.constprop.0`, ...):
    /// when only a clone exists the function's arguments may have been
    /// rewritten, so pinwatch does not probe it.
    pub fn clones(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}.");
        let mut clones: Vec<&str> = self
            .text
            .keys()
            .filter(|sym| sym.starts_with(&prefix))
            .map(String::as_str)
            .collect();
        clones.sort_unstable();
        clones
    }

    /// Number of text symbols; 0 means kallsyms hid everything from us.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    /// Whether no text symbol was read.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// The address and name of a code symbol's kallsyms line (`t`, `T`, `w`,
/// `W`); `None` for data symbols and malformed lines. The address is 0
/// where kallsyms hides addresses from the reader.
pub fn code_symbol(line: &str) -> Option<(u64, &str)> {
    let mut fields = line.split_whitespace();
    let (addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
    matches!(kind, "t" | "T" | "w" | "W")
        .then(|| (u64::from_str_radix(addr, 16).unwrap_or(0), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_preference_and_hidden_ones_skipped() {
        let text = "ffffffff81000010 T __kretprobe_trampoline\n\
                    ffffffff81000020 T arch_rethook_trampoline\n\
                    0000000000000000 T kretprobe_trampoline\n";
        let syms = Kallsyms::parse(text, &RETURN_TRAMPOLINES, &Enough::new());
        let names = ["arch_rethook_trampoline", "__kretprobe_trampoline"];
        assert_eq!(syms.address(&names), Some(0xffff_ffff_8100_0020));
        assert_eq!(syms.address(&["kretprobe_trampoline"]), None);
    }

    const SAMPLE: &str = "\
ffffffff81234560 T pin_user_pages_fast
ffffffff81234570 t gup_fast_fallback
ffffffff81234580 t __gup_longterm_locked.constprop.0
ffffffff81234590 D some_data
ffffffffc0000000 t brd_probe\t[brd]
";

    /// A symbol's code ends where the next code symbol starts.
    #[test]
    fn ranges_end_at_the_next_code_symbol() {
        let text = "ffffffff81000000 T _stext\n\
                    ffffffff81375500 T unpin_user_folio\n\
                    ffffffff81375510 D some_data\n\
                    ffffffff81375520 T __pfx_unpin_folios\n\
                    ffffffff81375530 T unpin_folios\n\
                    ffffffff82000000 T _etext\n";
        let wanted = ["unpin_user_folio", "unpin_folios"];
        let enough = Enough::new();
        enough.set(vec![vec!["unpin_user_folio"]]).unwrap();
        let syms = Kallsyms::parse(text, &wanted, &enough);
        assert_eq!(
            syms.range("unpin_user_folio"),
            Some((0xffff_ffff_8137_5500, 0xffff_ffff_8137_5520))
        );
        // Read on past `enough` only until the last one found has its end.
        assert!(!syms.has("unpin_folios"));
        let syms = Kallsyms::parse(text, &wanted, &Enough::new());
        assert_eq!(
            syms.range("unpin_folios"),
            Some((0xffff_ffff_8137_5530, 0xffff_ffff_8200_0000))
        );
    }

    /// What follows the core kernel's text is not read.
    #[test]
    fn stops_at_the_end_of_text() {
        let text = "ffffffff81000000 T _stext\n\
                    ffffffff81234560 T pin_user_pages_fast\n\
                    ffffffff82000000 T _etext\n\
                    ffffffff83000000 t unpin_user_page\n\
                    ffffffffc0000000 t brd_probe\t[brd]\n";
        let wanted = ["pin_user_pages_fast", "unpin_user_page", "brd_probe"];
        let syms = Kallsyms::parse(text, &wanted, &Enough::new());
        assert!(syms.has("pin_user_pages_fast"));
        assert!(!syms.has("unpin_user_page"));
        assert!(!syms.has("brd_probe"));
    }

    /// Reading stops once each group of `enough` has a member, not before.
    #[test]
    fn stops_once_it_has_enough() {
        let text = "ffffffff81000010 T kretprobe_trampoline\n\
                    ffffffff81234560 T pin_user_pages_fast\n\
                    ffffffff81234570 t gup_fast_fallback\n\
                    ffffffff81234580 T unpin_user_page\n";
        let wanted = [
            "kretprobe_trampoline",
            "__kretprobe_trampoline",
            "pin_user_pages_fast",
            "gup_fast_fallback",
            "unpin_user_page",
        ];
        let enough = Enough::new();
        let groups = vec![
            vec!["__kretprobe_trampoline", "kretprobe_trampoline"],
            vec!["gup_fast_fallback"],
        ];
        enough.set(groups).unwrap();
        let syms = Kallsyms::parse(text, &wanted, &enough);
        assert!(syms.has("kretprobe_trampoline"));
        assert!(syms.has("gup_fast_fallback"));
        assert!(!syms.has("unpin_user_page"));
        // A group never satisfied: read to the end.
        let enough = Enough::new();
        enough.set(vec![vec!["get_user_pages"]]).unwrap();
        assert!(Kallsyms::parse(text, &wanted, &enough).has("unpin_user_page"));
    }

    #[test]
    fn keeps_text_symbols_only() {
        let wanted = [
            "pin_user_pages_fast",
            "gup_fast_fallback",
            "__gup_longterm_locked",
            "brd_probe",
            "some_data",
        ];
        let syms = Kallsyms::parse(SAMPLE, &wanted, &Enough::new());
        assert!(syms.has("pin_user_pages_fast"));
        assert!(syms.has("gup_fast_fallback"));
        assert!(syms.has("brd_probe"));
        assert!(!syms.has("some_data"));
        assert!(!syms.has("__gup_longterm_locked"));
        assert_eq!(
            syms.clones("__gup_longterm_locked"),
            vec!["__gup_longterm_locked.constprop.0"]
        );
        assert_eq!(syms.len(), 4);
        assert!(
            !Kallsyms::parse(SAMPLE, &["gup_fast_fallback"], &Enough::new())
                .has("pin_user_pages_fast")
        );
    }

    #[test]
    fn tolerates_short_lines() {
        let syms = Kallsyms::parse("garbage\n\nffff T\n", &["garbage"], &Enough::new());
        assert!(syms.is_empty());
    }
}
