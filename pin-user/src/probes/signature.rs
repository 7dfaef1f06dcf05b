//! Which kernel symbol stands for each catalogued function, and whether its
//! BTF prototype has the parameters the probes read where they read them.

use pin_common::{FuncConfig, NO_ARG, catalog::FuncInfo};

use crate::kernel::{Btf, KernelFacts};

/// Finds the kernel symbol for `func`, or says why there is none. BTF
/// answers when the kernel has it (cheap); /proc/kallsyms otherwise.
pub(super) fn resolve_symbol(facts: &KernelFacts, func: &FuncInfo) -> Result<String, String> {
    if let Ok(btf) = &facts.btf {
        return match func.symbols.iter().find(|s| btf.has_func(s)) {
            Some(sym) => Ok((*sym).to_string()),
            None => Err("not in this kernel (absent from its BTF)".to_string()),
        };
    }
    let kallsyms = facts.kallsyms();
    if let Some(sym) = func.symbols.iter().find(|s| kallsyms.has(s)) {
        return Ok((*sym).to_string());
    }
    if kallsyms.is_empty() {
        return Err("cannot read /proc/kallsyms".to_string());
    }
    let clones: Vec<&str> = func
        .symbols
        .iter()
        .flat_map(|s| kallsyms.clones(s))
        .collect();
    if clones.is_empty() {
        Err("not in this kernel (absent from /proc/kallsyms)".to_string())
    } else {
        Err(format!(
            "only a compiler clone exists ({}); its arguments may differ, not probed",
            clones.join(", ")
        ))
    }
}

/// Page-count parameter names accepted at `FuncInfo::nr_arg`.
const NR_PARAM_NAMES: &[&str] = &["nr_pages", "npages", "nfolios", "nr", "max_folios"];
/// Start-address parameter names accepted at `FuncInfo::start_arg`.
const START_PARAM_NAMES: &[&str] = &["start", "addr"];
/// Flag parameter names accepted at `FuncInfo::flags_arg`.
const FLAGS_PARAM_NAMES: &[&str] = &["gup_flags", "flags"];

/// Checks `func`'s BTF prototype against what the probes read and derives
/// its config.
pub(super) fn func_config(btf: &Btf, func: &FuncInfo, symbol: &str) -> Result<FuncConfig, String> {
    let proto = btf
        .func_proto(symbol)
        .ok_or_else(|| format!("no BTF prototype for {symbol}"))?;
    let nr_is_int = if func.nr_arg == NO_ARG {
        false
    } else {
        let param = proto.params.get(func.nr_arg as usize).ok_or_else(|| {
            format!(
                "{symbol} has {} parameters; pinwatch expects a page count at position {}",
                proto.params.len(),
                func.nr_arg
            )
        })?;
        if !NR_PARAM_NAMES.contains(&param.name.as_str()) {
            return Err(format!(
                "unsupported signature: parameter {} of {symbol} is `{}`, not a page count",
                func.nr_arg, param.name
            ));
        }
        param.size == Some(4)
    };
    let named = |index: u8, names: &[&str]| {
        index != NO_ARG
            && proto
                .params
                .get(index as usize)
                .is_some_and(|p| names.contains(&p.name.as_str()))
    };
    let args_known =
        named(func.start_arg, START_PARAM_NAMES) && named(func.flags_arg, FLAGS_PARAM_NAMES);
    let pages_known = named(func.pages_arg, &["pages", "folios"]);
    Ok(FuncConfig {
        nr_is_int: nr_is_int as u8,
        ret_is_int: (proto.ret_size == Some(4)) as u8,
        is_pin: func.is_pin as u8,
        valid: 1,
        args_known: args_known as u8,
        pages_known: pages_known as u8,
        arg_count: proto.params.len().min(u8::MAX as usize) as u8,
        _pad: 0,
        addr: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::tests::build;
    use pin_common::FUNCS;

    fn btf_with(name: &str, params: &[(&str, u32)], ret_size: u32) -> Btf {
        // Types: 1 = 4-byte int, 2 = 8-byte long, 3 = proto, 4 = func.
        let mut words = Vec::new();
        for (pname, size) in params {
            let _ = pname;
            words.push(0); // names patched below via strings order
            words.push(if *size == 4 { 1 } else { 2 });
        }
        let names: Vec<&str> = params.iter().map(|(n, _)| *n).collect();
        // Intern param names first so their offsets are predictable.
        let mut off = 1u32;
        for (i, n) in names.iter().enumerate() {
            words[2 * i] = off;
            off += n.len() as u32 + 1;
        }
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        let types = vec![
            ("int", info(1, 0), 4, vec![32]),
            ("long", info(1, 0), 8, vec![64]),
            (
                "",
                info(13, params.len() as u32),
                if ret_size == 4 { 1 } else { 2 },
                words,
            ),
            (name, info(12, 0), 3, vec![]),
        ];
        Btf::parse(build(&types, &names)).unwrap()
    }

    #[test]
    fn config_from_btf() {
        let btf = btf_with(
            "pin_user_pages_fast",
            &[
                ("start", 8),
                ("nr_pages", 4),
                ("gup_flags", 4),
                ("pages", 8),
            ],
            4,
        );
        let func = &FUNCS[6];
        let cfg = func_config(&btf, func, "pin_user_pages_fast").unwrap();
        assert_eq!(
            cfg,
            FuncConfig {
                nr_is_int: 1,
                ret_is_int: 1,
                is_pin: 1,
                valid: 1,
                args_known: 1,
                pages_known: 1,
                arg_count: 4,
                _pad: 0,
                addr: 0,
            }
        );
    }

    #[test]
    fn config_rejects_shifted_signature() {
        // A pre-5.9 style get_user_pages_remote(tsk, mm, start, nr_pages, ...).
        let btf = btf_with(
            "get_user_pages_remote",
            &[("tsk", 8), ("mm", 8), ("start", 8), ("nr_pages", 8)],
            8,
        );
        let err = func_config(&btf, &FUNCS[3], "get_user_pages_remote").unwrap_err();
        assert!(err.contains("unsupported signature"), "{err}");
    }
}
