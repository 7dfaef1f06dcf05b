//! Names of the `gup_flags` bits (`FOLL_*`) on the running kernel.
//!
//! Since 6.3 the flags are enumerators and the kernel's BTF carries their
//! values (they were renumbered then). Before, they were preprocessor
//! macros that BTF cannot see; for those kernels pinwatch uses the values
//! of `include/linux/mm.h` as of 5.9–6.2, and says so.

use serde::Serialize;

use super::Btf;

/// Where the flag values came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagSource {
    /// The running kernel's BTF.
    Btf,
    /// pinwatch's table of the pre-6.3 `#define`s.
    Pre63Table,
}

/// `FOLL_*` values of `include/linux/mm.h` before 6.3 (macros, not in BTF).
const PRE_6_3: &[(&str, u64)] = &[
    ("FOLL_WRITE", 0x01),
    ("FOLL_TOUCH", 0x02),
    ("FOLL_GET", 0x04),
    ("FOLL_DUMP", 0x08),
    ("FOLL_FORCE", 0x10),
    ("FOLL_NOWAIT", 0x20),
    ("FOLL_NOFAULT", 0x80),
    ("FOLL_HWPOISON", 0x100),
    ("FOLL_TRIED", 0x800),
    ("FOLL_REMOTE", 0x2000),
    ("FOLL_ANON", 0x8000),
    ("FOLL_LONGTERM", 0x10000),
    ("FOLL_SPLIT_PMD", 0x20000),
    ("FOLL_PIN", 0x40000),
    ("FOLL_FAST_ONLY", 0x80000),
];

/// The `FOLL_*` flag values of one kernel.
#[derive(Clone, Debug)]
pub struct FollFlags {
    values: Vec<(String, u64)>,
    /// Where they came from.
    pub source: FlagSource,
}

impl FollFlags {
    /// The flags of a kernel: from its BTF when it has them (6.3+), else the
    /// pre-6.3 table.
    pub fn for_kernel(btf: Option<&Btf>) -> Self {
        if let Some(btf) = btf {
            let values: Vec<(String, u64)> = btf
                .enumerators("FOLL_")
                // Single bits only: skips counters like FOLL_PIN_ACQUIRED
                // should a kernel ever name one so.
                .into_iter()
                .filter(|(_, v)| v.is_power_of_two())
                .collect();
            if values.iter().any(|(n, _)| n == "FOLL_WRITE") {
                return Self {
                    values,
                    source: FlagSource::Btf,
                };
            }
        }
        Self::pre_6_3()
    }

    /// The pre-6.3 table.
    pub fn pre_6_3() -> Self {
        Self {
            values: PRE_6_3.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            source: FlagSource::Pre63Table,
        }
    }

    /// Value of flag `name` (e.g. `FOLL_WRITE`), if this kernel has it.
    pub fn value(&self, name: &str) -> Option<u64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Whether `raw` has flag `name` set.
    pub fn has(&self, raw: u64, name: &str) -> bool {
        self.value(name).is_some_and(|v| raw & v != 0)
    }

    /// `raw` as flag names without the `FOLL_` prefix, lowest bit first;
    /// bits this kernel does not name appear in hex.
    pub fn decode(&self, raw: u64) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = raw;
        let mut known: Vec<&(String, u64)> = self.values.iter().collect();
        known.sort_by_key(|(_, v)| *v);
        for (name, value) in known {
            if raw & value != 0 && rest & value != 0 {
                names.push(name.trim_start_matches("FOLL_").to_string());
                rest &= !value;
            }
        }
        if rest != 0 {
            names.push(format!("{rest:#x}"));
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::tests::build;

    #[test]
    fn btf_enumerators_give_the_values() {
        // One anonymous enum: FOLL_WRITE=1, FOLL_GET=2, FOLL_LONGTERM=256, OTHER=4.
        let names = ["FOLL_WRITE", "FOLL_GET", "FOLL_LONGTERM", "OTHER"];
        let mut words = Vec::new();
        let mut off = 1u32;
        for (name, value) in names.iter().zip([1u32, 2, 256, 4]) {
            words.extend([off, value]);
            off += name.len() as u32 + 1;
        }
        let info = (6u32 << 24) | names.len() as u32;
        let btf = Btf::parse(build(&[("", info, 4, words)], &names)).unwrap();
        let flags = FollFlags::for_kernel(Some(&btf));
        assert_eq!(flags.source, FlagSource::Btf);
        assert_eq!(flags.value("FOLL_LONGTERM"), Some(256));
        assert_eq!(flags.value("OTHER"), None);
        assert_eq!(
            flags.decode(0x103 | 0x1000),
            ["WRITE", "GET", "LONGTERM", "0x1000"]
        );
    }

    #[test]
    fn kernels_without_the_enum_use_the_table() {
        let flags = FollFlags::for_kernel(None);
        assert_eq!(flags.source, FlagSource::Pre63Table);
        assert_eq!(flags.decode(0x10001), ["WRITE", "LONGTERM"]);
        assert!(flags.has(0x10, "FOLL_FORCE"));
        assert!(flags.decode(0).is_empty());
    }
}
