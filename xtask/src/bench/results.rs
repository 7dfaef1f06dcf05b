//! What one VM run of the benchmark measured: raw samples, one per
//! (repetition, tracer, workload), so every figure in the report can be
//! recomputed from the JSON.

use serde::{Deserialize, Serialize};

/// The tracers compared, in the order the report lists them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TracerKind {
    /// Nothing attached.
    Untraced,
    /// `pinwatch stat` with its default instrumentation.
    Pinwatch,
    /// `pinwatch stat --no-callers` (no call-site attribution).
    PinwatchNoCallers,
    /// `pinwatch stat --attach kprobe-multi` (two links for every function),
    /// where the kernel has the links pinwatch can use.
    PinwatchKprobeMulti,
    /// `pinwatch stat` of another build (`--baseline`), for before/after
    /// comparisons in one run.
    Baseline,
    /// The equivalent bpftrace script.
    Bpftrace,
    /// libbpf-tools `funclatency` on the workload's function.
    Funclatency,
    /// bpftrace with empty fentry+fexit programs on the workloads' functions.
    EmptyPair,
}

impl TracerKind {
    /// Name in tables.
    pub fn label(&self) -> &'static str {
        match self {
            TracerKind::Untraced => "untraced",
            TracerKind::Pinwatch => "pinwatch",
            TracerKind::PinwatchNoCallers => "pinwatch --no-callers",
            TracerKind::PinwatchKprobeMulti => "pinwatch --attach kprobe-multi",
            TracerKind::Baseline => "baseline pinwatch",
            TracerKind::Bpftrace => "bpftrace",
            TracerKind::Funclatency => "funclatency",
            TracerKind::EmptyPair => "empty fentry+fexit",
        }
    }
}

/// One workload of the benchmark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Short name (e.g. `odirect-1p`).
    pub name: String,
    /// `pinwatch workload` kind.
    pub kind: String,
    /// Pages per call.
    pub pages: u64,
    /// Processes calling at once.
    pub callers: u32,
    /// Calls per process in a timing pass.
    pub calls: u64,
    /// The outermost GUP function the calls reach on this kernel.
    pub function: String,
    /// The file or device the O_DIRECT calls use, when not the ramdisk
    /// (`--device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// One timing pass of one workload under one tracer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// Repetition.
    pub rep: u32,
    /// Tracer.
    pub tracer: TracerKind,
    /// Workload name.
    pub workload: String,
    /// Mean wall-clock nanoseconds per system call (mean over callers).
    pub ns_per_call: f64,
}

/// One statistics pass: the tracer's BPF programs' run time over a workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InKernel {
    /// Repetition.
    pub rep: u32,
    /// Tracer.
    pub tracer: TracerKind,
    /// Workload name.
    pub workload: String,
    /// System calls made in the pass (all callers).
    pub calls: u64,
    /// Run time of the tracer's programs over the pass.
    pub run_time_ns: u64,
    /// Program runs over the pass.
    pub run_count: u64,
    /// Programs the tracer holds.
    pub programs: u64,
}

/// One start of a tracer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TracerRun {
    /// Repetition.
    pub rep: u32,
    /// Tracer.
    pub tracer: TracerKind,
    /// The function funclatency timed (empty for the others).
    pub function: String,
    /// From spawn to its first report (every tracer reports each second).
    pub first_data_ms: f64,
    /// The tracer's CPU time over the timing passes / their wall time.
    pub cpu_share: f64,
    /// Peak resident set at the end.
    pub peak_rss_kib: u64,
}

/// Everything one VM run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRun {
    /// `uname -r`.
    pub kernel: String,
    /// The first line of /proc/version (carries the upstream release).
    pub kernel_version: String,
    /// CPUs in the VM.
    pub cpus: usize,
    /// Repetitions.
    pub reps: u32,
    /// How pinwatch attached each function it found (`function=mechanism`).
    pub pinwatch_attach: Vec<String>,
    /// Workloads.
    pub workloads: Vec<WorkloadSpec>,
    /// Timing passes.
    pub timings: Vec<Timing>,
    /// Statistics passes.
    pub in_kernel: Vec<InKernel>,
    /// Tracer starts.
    pub tracer_runs: Vec<TracerRun>,
    /// The tracers this kernel could not run, each with why
    /// (`label: reason`).
    #[serde(default)]
    pub not_measured: Vec<String>,
}
