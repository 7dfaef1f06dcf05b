//! Loading the embedded eBPF object (the full one, or the baseline one
//! for older kernels): its tables sized, its read-only globals set, its
//! log reader started; before it, each found function's signature
//! checked against BTF for the function table the probes read (one of
//! those globals).

use aya::Ebpf;
use pin_common::{FUNC_COUNT, FUNCS, FuncConfig, FuncId};

use super::{
    AttachError, AttachMode, AttachOptions, KernelLog, ProbeStatus, capacities, memlock, multi,
    permission_denied, settings::Globals, signature::func_config,
};
use crate::kernel::{KernelFacts, features::Object};

/// The eBPF object built from `pin-ebpf` by the build script.
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pinwatch-full.bpf.o"));

/// The same built with `pin-ebpf`'s `baseline` feature, for kernels whose
/// tracing programs lack task storage or the 5.15-5.17 helpers.
pub(super) static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pinwatch-baseline.bpf.o"));

/// Loads (verifies) the object this kernel takes, with the loader made
/// from the start, sized for `options` and with `globals` set, with its
/// log reader, and the multi programs of `multi_kind` where the links are
/// to be used.
pub(super) fn load_object(
    facts: &KernelFacts,
    options: &AttachOptions,
    multi_kind: Option<multi::MultiKind>,
    globals: &Globals,
) -> Result<(Ebpf, Option<KernelLog>, Option<multi::MultiPrograms>), AttachError> {
    let started = std::time::Instant::now();
    let object = facts.features.object();
    log::info!("loading the eBPF object ({object:?})");
    let mut loader = facts
        .loader
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    log::info!(
        "aya's loader waited for {} ms",
        started.elapsed().as_millis()
    );
    // TASK_STATES is task local storage, which aya's userspace has no type
    // for; only the probes use it.
    loader.allow_unsupported_maps().map_max_entries(
        pin_common::maps::TRACKED,
        capacities::capacity_if(options.follow, pin_common::TRACKED_CAPACITY),
    );
    for (map, entries) in options
        .capacities
        .max_entries(options.callers, options.lifetimes)
    {
        loader.map_max_entries(map, entries);
    }
    globals.apply(&mut loader);
    let bytes = match object {
        Object::Full => EBPF_OBJECT,
        Object::Baseline => BASELINE_OBJECT,
    };
    let mut ebpf =
        loader
            .load(bytes)
            .map_err(|e| match (permission_denied(&e), memlock::limiting()) {
                (Some(_), Some(limit)) => AttachError::Memlock(limit),
                (Some(denied), None) => AttachError::Refused(denied.to_string()),
                (None, _) => AttachError::Load(e.to_string()),
            })?;
    log::info!(
        "the eBPF object parsed, its maps created and its BTF loaded in {} ms",
        started.elapsed().as_millis()
    );
    // Before the log reader takes its map out of the object: the multi
    // programs are relocated against every map aya created.
    // A kind chosen by `--attach auto` that fails to load leaves the
    // functions to their own program pairs; one asked for is an error.
    let multi_programs = match multi_kind.map(|kind| (kind, multi::load(bytes, &ebpf, kind))) {
        None => None,
        Some((_, Ok(programs))) => Some(programs),
        Some((kind, Err(e))) if options.mode == AttachMode::Auto => {
            log::warn!("{e}: one program pair per function instead of {kind:?} multi links");
            None
        }
        Some((kind, Err(e))) => {
            return Err(AttachError::Load(format!("{}: {e}", kind.option())));
        }
    };
    let kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(e) => {
            log::warn!("kernel-side diagnostics unavailable: {e}");
            None
        }
    };
    Ok((ebpf, kernel_log, multi_programs))
}

/// Checks each found function's signature against its BTF and makes its
/// entry of the function table (`Globals::with_functions`); returns the
/// table and the ids configured (the others get a note why).
pub(super) fn configure_functions(
    facts: &KernelFacts,
    object: Object,
    status: &mut [ProbeStatus],
) -> ([FuncConfig; FUNC_COUNT], Vec<FuncId>) {
    let mut table = [FuncConfig::UNSET; FUNC_COUNT];
    let mut configured = Vec::with_capacity(FUNCS.len());
    for st in status {
        let Some(symbol) = &st.symbol else { continue };
        let cfg = match &facts.btf {
            Ok(btf) => func_config(btf, &FUNCS[st.id as usize], symbol),
            Err(e) => Err(e.clone()),
        };
        match cfg {
            Ok(mut cfg) => {
                // The baseline object cannot ask the kernel where a traced
                // function starts; kallsyms tells (0 where it hides
                // addresses: call sites are then unknown, and counted so).
                if object == Object::Baseline {
                    cfg.addr = facts.kallsyms().address(&[symbol.as_str()]).unwrap_or(0);
                }
                table[st.id as usize] = cfg;
                configured.push(st.id);
            }
            Err(e) => st.notes.push(e),
        }
    }
    (table, configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_object_needs_the_kernel_btf_to_load() {
        // aya's loader is made without the kernel BTF (`kernel::ahead`),
        // and with none it skips CO-RE relocations without a word: an
        // object that had any would load with wrong field offsets.
        for object in [EBPF_OBJECT, BASELINE_OBJECT] {
            let parsed = aya_obj::Object::parse(object).expect("the embedded object parses");
            assert!(!parsed.has_btf_relocations());
        }
    }
}
