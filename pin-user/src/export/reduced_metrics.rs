//! Metrics in reduced mode (no probes): the kernel's FOLL_PIN counters
//! under the same names as in full mode, each process's `VmPin`, and an
//! info series saying the mode and why, so a dashboard never mistakes an
//! absent per-variant series for zero calls.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::families::{encode_vmstat, family};
use crate::reduced::{ReducedReason, ReducedSample};

#[derive(Debug)]
struct ReducedExporter {
    sample: ReducedSample,
    reason: ReducedReason,
}

impl Collector for ReducedExporter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut mode = encoder.encode_descriptor(
            "pinwatch_mode",
            "How pinwatch collects: reduced = no probes, kernel counters only.",
            None,
            MetricType::Info,
        )?;
        mode.encode_info(&vec![
            ("mode", "reduced".to_string()),
            ("reason", self.reason.why.clone()),
        ])?;
        if let Some(vm) = self.sample.vmstat {
            encode_vmstat(&mut encoder, vm)?;
        }
        family(
            &mut encoder,
            "pinwatch_process_vm_pin_bytes",
            "VmPin of each process that has any (/proc/PID/status).",
            MetricType::Gauge,
            self.sample
                .pinned
                .values()
                .map(|p| {
                    (
                        vec![("pid", p.pid.to_string()), ("comm", p.comm.clone())],
                        p.vm_pin_kb * 1024,
                    )
                })
                .collect(),
        )
    }
}

/// Encodes a reduced-mode sample as an OpenMetrics text exposition.
pub fn openmetrics(sample: &ReducedSample, reason: &ReducedReason) -> String {
    // Collectors must be 'static; the copy is small.
    super::families::exposition(ReducedExporter {
        sample: sample.clone(),
        reason: reason.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{reduced::PinnedProcess, vmstat::PinCounters};

    #[test]
    fn reduced_exposition_golden() {
        let sample = ReducedSample {
            vmstat: Some(PinCounters {
                nr_foll_pin_acquired: 1200,
                nr_foll_pin_released: 1100,
            }),
            pinned: [(
                42,
                PinnedProcess {
                    pid: 42,
                    comm: "ib_write_bw".into(),
                    vm_pin_kb: 256,
                },
            )]
            .into(),
        };
        let text = openmetrics(&sample, &ReducedReason::requested());
        insta::assert_snapshot!(text);
        insta::assert_snapshot!(super::super::metrics::prometheus_text(&text));
    }
}
