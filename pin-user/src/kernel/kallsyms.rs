//! The running kernel's function symbols, from `/proc/kallsyms`.
//!
//! procfs does not parse kallsyms, and the format is three whitespace
//! separated fields (plus an optional `[module]`), so this is a few lines.

use std::collections::HashSet;

/// Text symbols of the running kernel.
#[derive(Debug, Default)]
pub struct Kallsyms {
    text: HashSet<String>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`, keeping the code symbols named in `wanted`
    /// and their compiler clones (`name.isra.0`, ...). Keeping only those
    /// matters: a kernel has ~200k symbols and pinwatch needs ~25.
    pub fn read(wanted: &[&str]) -> std::io::Result<Self> {
        Ok(Self::parse(
            &std::fs::read_to_string("/proc/kallsyms")?,
            wanted,
        ))
    }

    /// Parses kallsyms text like [`Kallsyms::read`].
    pub fn parse(text: &str, wanted: &[&str]) -> Self {
        let text = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let _addr = fields.next()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                let base = name.split_once('.').map_or(name, |(base, _)| base);
                (matches!(kind, "t" | "T" | "w" | "W") && wanted.contains(&base))
                    .then(|| name.to_string())
            })
            .collect();
        Self { text }
    }

    /// The address of the first of `names` that `/proc/kallsyms` lists
    /// with a non-zero address (addresses read as 0 without CAP_SYSLOG).
    pub fn address_of(names: &[&str]) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
        Self::address_in(&text, names)
    }

    /// [`Kallsyms::address_of`] on kallsyms text.
    pub fn address_in(text: &str, names: &[&str]) -> Option<u64> {
        let mut found: Vec<(usize, u64)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let _kind = fields.next()?;
                let name = fields.next()?;
                let rank = names.iter().position(|n| *n == name)?;
                (addr != 0).then_some((rank, addr))
            })
            .collect();
        found.sort_unstable();
        found.first().map(|&(_, addr)| addr)
    }

    /// Whether a code symbol with exactly this name exists.
    pub fn has(&self, name: &str) -> bool {
        self.text.contains(name)
    }

    /// Compiler clones of `name` (`name.isra.0`, `name.constprop.0`, ...):
    /// when only a clone exists the function's arguments may have been
    /// rewritten, so pinwatch does not probe it.
    pub fn clones(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}.");
        let mut clones: Vec<&str> = self
            .text
            .iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_by_preference_and_hidden_ones_skipped() {
        let text = "ffffffff81000010 T __kretprobe_trampoline\n\
                    ffffffff81000020 T arch_rethook_trampoline\n\
                    0000000000000000 T kretprobe_trampoline\n";
        let names = ["arch_rethook_trampoline", "__kretprobe_trampoline"];
        assert_eq!(
            Kallsyms::address_in(text, &names),
            Some(0xffff_ffff_8100_0020)
        );
        assert_eq!(Kallsyms::address_in(text, &["kretprobe_trampoline"]), None);
    }

    const SAMPLE: &str = "\
ffffffff81234560 T pin_user_pages_fast
ffffffff81234570 t gup_fast_fallback
ffffffff81234580 t __gup_longterm_locked.constprop.0
ffffffff81234590 D some_data
ffffffffc0000000 t brd_probe\t[brd]
";

    #[test]
    fn keeps_text_symbols_only() {
        let wanted = [
            "pin_user_pages_fast",
            "gup_fast_fallback",
            "__gup_longterm_locked",
            "brd_probe",
            "some_data",
        ];
        let syms = Kallsyms::parse(SAMPLE, &wanted);
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
        assert!(!Kallsyms::parse(SAMPLE, &["gup_fast_fallback"]).has("pin_user_pages_fast"));
    }

    #[test]
    fn tolerates_short_lines() {
        let syms = Kallsyms::parse("garbage\n\nffff T\n", &["garbage"]);
        assert!(syms.is_empty());
    }
}
