//! The kernel type ids that fentry and fexit programs are loaded against,
//! in the form aya's loaders take them (an `aya::Btf`), made from the
//! agent's own parse of the kernel BTF instead of a second, full one.
//!
//! Why: `FEntry::load` and `FExit::load` read the BTF they are given for
//! one thing only, the traced function's type id, which they look up by
//! name (`Btf::id_by_type_name_kind`: the position of the first function
//! type of that name). aya 0.14 takes the id no other way, and its own
//! parse of the kernel's BTF for that lookup cost 0.25-0.37 s of a CPU at
//! start-up on Debian 6.12 under TCG, beside the agent's own parse. The
//! index made here holds each wanted function at its kernel type id, as
//! a function type of its name, and a placeholder (`BtfType::Unknown`,
//! which no lookup by kind matches) at every other id below the highest:
//! the lookup answers as over the kernel's BTF. It is for those lookups
//! only, never loaded into the kernel nor used to relocate.

use aya::Btf as AyaBtf;
use aya_obj::btf::{BtfType, Func, FuncLinkage};

use super::{AttachMode, ProbeStatus};
use crate::kernel::{Btf, KernelFacts};

/// The type ids fentry and fexit programs are loaded against, for every
/// function they may attach to here ([`attach_ids`]); none where fentry
/// is not tried or the kernel has no BTF.
pub(super) fn for_attach(
    facts: &KernelFacts,
    mode: AttachMode,
    status: &[ProbeStatus],
    hook: &str,
) -> Option<AyaBtf> {
    let btf = facts.btf.as_ref().ok().filter(|_| mode.tries_fentry())?;
    let mut functions: Vec<&str> = status
        .iter()
        .filter_map(|st| st.symbol.as_deref())
        .collect();
    functions.push(hook);
    for function in super::checks::functions() {
        functions.push(function);
    }
    Some(attach_ids(btf, functions))
}

/// The type id the task iterator (`probes::fold`) is loaded against,
/// `bpf_iter_task`'s, whatever the attach mode; none without kernel BTF.
pub(super) fn for_task_iterator(facts: &KernelFacts) -> Option<AyaBtf> {
    let btf = facts.btf.as_ref().ok()?;
    Some(attach_ids(btf, ["bpf_iter_task"]))
}

/// An index answering aya's lookups of `functions` by name with their
/// type ids in `btf` (the running kernel's); names `btf` lacks are left
/// out, so that their lookups fail as over the kernel's BTF.
fn attach_ids<'a>(btf: &Btf, functions: impl IntoIterator<Item = &'a str>) -> AyaBtf {
    let mut wanted: Vec<(u32, &str)> = functions
        .into_iter()
        .filter_map(|name| btf.func_id(name).map(|id| (id, name)))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut index = AyaBtf::new();
    // Type id 0 (void) is there from the start.
    let mut next_id = 1;
    for (id, name) in wanted {
        while next_id < id {
            next_id = index.add_type(BtfType::Unknown) + 1;
        }
        let name_offset = index.add_string(name);
        let func = Func::new(name_offset, 0, FuncLinkage::Global);
        next_id = index.add_type(BtfType::Func(func)) + 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use aya_obj::btf::BtfKind;

    use super::*;
    use crate::kernel::btf::tests::build;

    const KIND_FUNC_PROTO: u32 = 13;
    const KIND_FUNC: u32 = 12;
    const KIND_STRUCT: u32 = 4;

    fn lookup(index: &AyaBtf, name: &str) -> Option<u32> {
        index.id_by_type_name_kind(name, BtfKind::Func).ok()
    }

    /// Each wanted function is found at its kernel id, the first of two
    /// of one name wins, and what was not wanted or is not a function is
    /// not found.
    #[test]
    fn lookups_answer_the_kernel_ids() {
        let types = vec![
            ("", KIND_FUNC_PROTO << 24, 0, vec![]),
            ("get_user_pages", KIND_FUNC << 24, 1, vec![]),
            ("page", KIND_STRUCT << 24, 0, vec![]),
            ("pin_user_pages", KIND_FUNC << 24, 1, vec![]),
            ("pin_user_pages", KIND_FUNC << 24, 1, vec![]),
            ("unpin_user_page", KIND_FUNC << 24, 1, vec![]),
        ];
        let btf = Btf::parse(build(&types, &[])).unwrap();
        let index = attach_ids(
            &btf,
            [
                "unpin_user_page",
                "pin_user_pages",
                "page",
                "missing",
                "pin_user_pages",
            ],
        );
        assert_eq!(lookup(&index, "pin_user_pages"), Some(4));
        assert_eq!(lookup(&index, "unpin_user_page"), Some(6));
        assert_eq!(lookup(&index, "get_user_pages"), None);
        assert_eq!(lookup(&index, "page"), None);
        assert_eq!(lookup(&index, "missing"), None);
    }

    /// Over the running kernel's BTF, the index and aya's full parse give
    /// every catalogued function the same id (or neither has it). Every
    /// machine we build on has /sys/kernel/btf/vmlinux (see
    /// `kernel::btf`'s tests).
    #[test]
    fn answers_as_aya_does_over_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF at /sys/kernel/btf/vmlinux");
        let full = AyaBtf::from_sys_fs().expect("aya's parse of the kernel BTF");
        let names: Vec<&str> = pin_common::FUNCS
            .iter()
            .flat_map(|f| f.symbols.iter().copied())
            .chain(super::super::RELEASE_HOOKS.iter().copied())
            .collect();
        let index = attach_ids(&btf, names.iter().copied());
        let mut found = 0;
        for name in names {
            let expected = lookup(&full, name);
            assert_eq!(lookup(&index, name), expected, "{name}");
            found += usize::from(expected.is_some());
        }
        assert!(
            found > 10,
            "only {found} catalogued functions in this kernel's BTF"
        );
    }
}
