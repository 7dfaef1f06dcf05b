//! The BPF features pinwatch uses, probed on the running kernel at
//! start-up rather than inferred from its version: what the kernel's BTF
//! says it knows (helpers, map types, attach types, `bpf_prog_info`
//! fields) and what the mechanism probes found. Each feature that is off
//! names what pinwatch does instead; [`Features::object`] picks the eBPF
//! object that follows from them.

use serde::Serialize;

use super::Btf;

/// A kernel feature pinwatch uses or could use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// fentry/fexit programs (BPF trampolines).
    Fentry,
    /// kprobe/kretprobe programs.
    Kprobe,
    /// The BPF ring buffer (per-call events).
    RingBuffer,
    /// Task local storage usable from tracing programs.
    TaskStorage,
    /// `bpf_loop` (callbacks over a pinned page array).
    BpfLoop,
    /// `bpf_get_func_arg` / `bpf_get_func_arg_cnt` in tracing programs.
    FuncArgs,
    /// `bpf_get_func_ip` in tracing and kprobe programs.
    FuncIp,
    /// `bpf_prog_info.recursion_misses` (runs the kernel skipped).
    RecursionMisses,
    /// Multi-function kprobe links (`BPF_TRACE_KPROBE_MULTI`).
    KprobeMulti,
    /// Multi-function tracing links (`BPF_TRACE_FENTRY_MULTI`, Linux 7.3).
    FentryMulti,
    /// A kprobe link's own count of the runs the kernel skipped
    /// (`bpf_link_info.perf_event.kprobe.missed`).
    KprobeMissed,
}

/// One feature on this kernel.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureStatus {
    /// Which feature.
    pub feature: Feature,
    /// Whether the kernel has it.
    pub available: bool,
    /// How it was found out (or why it is missing).
    pub evidence: String,
    /// What pinwatch does with it, or instead of it.
    pub pinwatch: &'static str,
}

/// Which eBPF object pinwatch loads (see pin-user's build script).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Object {
    /// Task storage for per-thread state, helpers from 5.17.
    Full,
    /// Only what 5.10's tracing programs have: per-thread state in an LRU
    /// hash, addresses and argument counts from the agent, no lifetimes.
    Baseline,
}

/// Every feature, probed once.
#[derive(Clone, Debug, Serialize)]
pub struct Features {
    /// In display order.
    pub list: Vec<FeatureStatus>,
}

impl Feature {
    /// The name `pinwatch probes` shows.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Fentry => "fentry/fexit",
            Feature::Kprobe => "kprobe/kretprobe",
            Feature::RingBuffer => "ring buffer",
            Feature::TaskStorage => "task storage",
            Feature::BpfLoop => "bpf_loop",
            Feature::FuncArgs => "bpf_get_func_arg",
            Feature::FuncIp => "bpf_get_func_ip",
            Feature::RecursionMisses => "recursion misses",
            Feature::KprobeMulti => "kprobe multi",
            Feature::FentryMulti => "fentry multi",
            Feature::KprobeMissed => "kprobe misses",
        }
    }

    /// What pinwatch does where the feature is there, and where not.
    fn uses(self) -> (&'static str, &'static str) {
        match self {
            Feature::Fentry => (
                "attaches fentry/fexit (cheapest, exact returns)",
                "attaches kprobe/kretprobe",
            ),
            Feature::Kprobe => (
                "falls back to kprobe/kretprobe per function",
                "only fentry/fexit",
            ),
            Feature::RingBuffer => (
                "per-call events (trace, record, validate)",
                "cannot load (the object has a ring buffer; Linux 5.8+)",
            ),
            Feature::TaskStorage => (
                "per-thread state in task storage",
                "per-thread state in an LRU hash by thread id (baseline object)",
            ),
            Feature::BpfLoop => (
                "pin lifetimes (--lifetimes)",
                "no pin lifetimes: --lifetimes refused (baseline object)",
            ),
            Feature::FuncArgs => (
                "reads fentry frames and `pages` arrays",
                "argument counts from BTF; no pin lifetimes (baseline object)",
            ),
            Feature::FuncIp => (
                "finds call sites on the stack",
                "function addresses from /proc/kallsyms (baseline object)",
            ),
            Feature::RecursionMisses => (
                "reports runs the kernel skipped (MISSED)",
                "skipped runs not reported by this kernel; missed returns still counted",
            ),
            Feature::KprobeMulti => (
                "--attach kprobe-multi: one link for every function (5.18-6.13, CONFIG_FPROBE)",
                "one kprobe link per function",
            ),
            Feature::FentryMulti => (
                "--attach fentry-multi: one fentry link and one fexit link for every function \
                 (Linux 7.3)",
                "one fentry/fexit pair per function",
            ),
            Feature::KprobeMissed => (
                "reads each kprobe's own count of skipped runs (kprobe_missed, kretprobe_missed)",
                "kprobes' own skipped runs not reported by this kernel; missed returns still counted",
            ),
        }
    }
}

/// The names of the kernel's `BPF_*` enumerators (helpers, map types,
/// attach types), collected in one pass over its BTF.
struct BpfNames(std::collections::HashSet<String>);

impl BpfNames {
    fn of(btf: &Btf) -> Self {
        Self(
            btf.enumerators("BPF_")
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        )
    }

    /// A helper the kernel's `enum bpf_func_id` names.
    fn helper(&self, name: &str) -> (bool, String) {
        self.enumerator(&format!("BPF_FUNC_{name}"))
    }

    /// An enumerator of the kernel's BTF (a map type, an attach type).
    fn enumerator(&self, wanted: &str) -> (bool, String) {
        let found = self.0.contains(wanted);
        (found, in_btf(wanted, found))
    }
}

/// Evidence text: `what` is (not) in the kernel's BTF.
fn in_btf(what: &str, found: bool) -> String {
    format!(
        "{what} {}in the kernel's BTF",
        if found { "" } else { "not " }
    )
}

/// Whether pinwatch can use kprobe_multi links here: the attach type
/// (5.18+; the uapi enumerator is there whatever the build), fprobe under
/// it (`CONFIG_FPROBE`, off in Debian's 6.1; its struct is then in the
/// BTF), and returns on a rethook (from 6.14 fprobe runs on the
/// function-graph tracer, whose saved return addresses the missed-return
/// check does not read; the struct lost its rethook then).
fn kprobe_multi(names: &BpfNames, btf: &Btf) -> (bool, String) {
    let (attach_type, evidence) = names.enumerator("BPF_TRACE_KPROBE_MULTI");
    if !attach_type {
        return (false, evidence);
    }
    if btf.member_offset("fprobe", "nmissed").is_none() {
        return (
            false,
            "struct fprobe not in the kernel's BTF: built without fprobe (CONFIG_FPROBE)".into(),
        );
    }
    let on_rethook = btf.member_offset("fprobe", "rethook").is_some();
    (
        on_rethook,
        if on_rethook {
            "BPF_TRACE_KPROBE_MULTI and fprobe.rethook in the kernel's BTF".into()
        } else {
            "fprobe has no rethook (6.14+): its returns go through the function-graph tracer, \
             which pinwatch's missed-return check cannot read yet"
                .into()
        },
    )
}

/// Whether pinwatch can use tracing multi links here: the attach type
/// (its uapi enumerator) and the function the kernel verifies multi
/// programs against (`bpf_multi_func`, built where the links are).
fn fentry_multi(names: &BpfNames, btf: &Btf) -> (bool, String) {
    let (attach_type, evidence) = names.enumerator("BPF_TRACE_FENTRY_MULTI");
    if !attach_type {
        return (false, evidence);
    }
    let found = btf.has_func("bpf_multi_func");
    (
        found,
        if found {
            "BPF_TRACE_FENTRY_MULTI and bpf_multi_func in the kernel's BTF".into()
        } else {
            in_btf("bpf_multi_func", false)
        },
    )
}

/// Whether kprobe links report their misses: 6.7 added the count to
/// `bpf_link_info` and, with it, a `missed` parameter to
/// `bpf_get_perf_event_info`, which fills that info.
fn kprobe_missed(btf: &Btf) -> (bool, String) {
    let found = btf
        .func_proto("bpf_get_perf_event_info")
        .is_some_and(|proto| proto.params.iter().any(|p| p.name == "missed"));
    (found, in_btf("bpf_get_perf_event_info(..., missed)", found))
}

impl Features {
    /// Probes the kernel: BTF for helpers, map types and fields; the
    /// mechanism results already found for fentry and kprobes.
    pub fn probe(
        btf: &Result<Btf, String>,
        tracing: &Result<(), String>,
        kprobes: &Result<(), String>,
    ) -> Self {
        let mechanism = |r: &Result<(), String>| match r {
            Ok(()) => (true, "a test program loaded".to_string()),
            Err(e) => (false, e.clone()),
        };
        let probes: Vec<(Feature, (bool, String))> = match btf {
            Ok(btf) => {
                let names = BpfNames::of(btf);
                vec![
                    (Feature::Fentry, mechanism(tracing)),
                    (Feature::Kprobe, mechanism(kprobes)),
                    (
                        Feature::RingBuffer,
                        names.enumerator("BPF_MAP_TYPE_RINGBUF"),
                    ),
                    (Feature::TaskStorage, names.helper("task_storage_get")),
                    (Feature::BpfLoop, names.helper("loop")),
                    (Feature::FuncArgs, names.helper("get_func_arg_cnt")),
                    (Feature::FuncIp, names.helper("get_func_ip")),
                    (Feature::RecursionMisses, {
                        let found = btf
                            .member_offset("bpf_prog_info", "recursion_misses")
                            .is_some();
                        (found, in_btf("bpf_prog_info.recursion_misses", found))
                    }),
                    (Feature::KprobeMulti, kprobe_multi(&names, btf)),
                    (Feature::FentryMulti, fentry_multi(&names, btf)),
                    (Feature::KprobeMissed, kprobe_missed(btf)),
                ]
            }
            Err(e) => [
                Feature::Fentry,
                Feature::Kprobe,
                Feature::RingBuffer,
                Feature::TaskStorage,
                Feature::BpfLoop,
                Feature::FuncArgs,
                Feature::FuncIp,
                Feature::RecursionMisses,
                Feature::KprobeMulti,
                Feature::FentryMulti,
                Feature::KprobeMissed,
            ]
            .into_iter()
            .map(|f| (f, (false, format!("unknown: {e}"))))
            .collect(),
        };
        let list = probes
            .into_iter()
            .map(|(feature, (available, evidence))| {
                let (with, without) = feature.uses();
                FeatureStatus {
                    feature,
                    available,
                    evidence,
                    pinwatch: if available { with } else { without },
                }
            })
            .collect();
        Self { list }
    }

    /// Whether the kernel has `feature`.
    pub fn has(&self, feature: Feature) -> bool {
        self.list
            .iter()
            .any(|s| s.feature == feature && s.available)
    }

    /// The object to load: the full one only where tracing programs have
    /// every helper and map type it uses (Linux 5.17 on).
    pub fn object(&self) -> Object {
        let full = [
            Feature::TaskStorage,
            Feature::BpfLoop,
            Feature::FuncArgs,
            Feature::FuncIp,
        ]
        .into_iter()
        .all(|f| self.has(f));
        if full { Object::Full } else { Object::Baseline }
    }

    /// Why pin lifetimes cannot be timed here, if they cannot.
    pub fn lifetimes_unavailable(&self) -> Option<String> {
        let missing: Vec<&str> = [Feature::BpfLoop, Feature::FuncArgs]
            .into_iter()
            .filter(|f| !self.has(*f))
            .map(Feature::name)
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "pin lifetimes need {} in tracing programs (Linux 5.17+), which this kernel lacks",
                missing.join(" and ")
            )
        })
    }

    /// One line naming the features that are off and what that costs, for
    /// `stat`, `top` and `serve` (empty when nothing that changes a figure
    /// is off).
    pub fn off_summary(&self) -> Option<String> {
        let off: Vec<String> = self
            .list
            .iter()
            // multi links are an option (`--attach kprobe-multi` and
            // `fentry-multi` refuse where they are off), and kprobes' own misses matter
            // only where kprobes attach (`pinwatch probes` says which do).
            .filter(|s| !s.available)
            .filter(|s| {
                !matches!(
                    s.feature,
                    Feature::KprobeMulti | Feature::FentryMulti | Feature::KprobeMissed
                )
            })
            .filter(|s| !matches!(s.feature, Feature::Fentry | Feature::Kprobe))
            .map(|s| format!("{} ({})", s.feature.name(), s.pinwatch))
            .collect();
        (!off.is_empty()).then(|| format!("kernel features off: {}", off.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::tests::build;

    /// A kernel BTF with one enum of `enumerators` and, if `multi_func`,
    /// the function `bpf_multi_func`.
    fn btf_with(enumerators: &[&str], multi_func: bool) -> Btf {
        const KIND_ENUM: u32 = 6;
        const KIND_FUNC: u32 = 12;
        const KIND_FUNC_PROTO: u32 = 13;
        let mut words = Vec::new();
        let mut offset = 1u32;
        for (value, name) in enumerators.iter().enumerate() {
            words.extend([offset, value as u32]);
            offset += name.len() as u32 + 1;
        }
        let mut types = vec![("", (KIND_ENUM << 24) | enumerators.len() as u32, 4, words)];
        if multi_func {
            types.push(("", KIND_FUNC_PROTO << 24, 0, vec![]));
            types.push(("bpf_multi_func", KIND_FUNC << 24, 2, vec![]));
        }
        Btf::parse(build(&types, enumerators)).expect("the built BTF parses")
    }

    /// Tracing multi links need both the attach type and the function
    /// the kernel verifies multi programs against; each alone is not
    /// enough, and the evidence names what is missing.
    #[test]
    fn fentry_multi_needs_the_attach_type_and_bpf_multi_func() {
        let probe = |enumerators: &[&str], multi_func| {
            let btf = btf_with(enumerators, multi_func);
            fentry_multi(&BpfNames::of(&btf), &btf)
        };
        let (found, evidence) = probe(&["BPF_TRACE_FENTRY_MULTI"], true);
        assert!(found, "{evidence}");
        let (found, evidence) = probe(&["BPF_TRACE_FENTRY_MULTI"], false);
        assert!(!found && evidence.contains("bpf_multi_func"), "{evidence}");
        let (found, evidence) = probe(&["BPF_TRACE_KPROBE_MULTI"], true);
        assert!(
            !found && evidence.contains("BPF_TRACE_FENTRY_MULTI not in"),
            "{evidence}"
        );
    }

    #[test]
    fn no_btf_means_baseline_and_no_lifetimes() {
        let features = Features::probe(&Err("no BTF".into()), &Ok(()), &Ok(()));
        assert_eq!(features.object(), Object::Baseline);
        assert!(
            features
                .lifetimes_unavailable()
                .unwrap()
                .contains("bpf_loop and bpf_get_func_arg")
        );
        assert!(features.list.iter().all(|s| s.evidence.contains("no BTF")));
    }
}
