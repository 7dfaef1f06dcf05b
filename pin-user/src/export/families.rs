//! The encoding every exposition shares: one counter or gauge family from
//! rows of labels and values, seconds counters, and the kernel's own
//! FOLL_PIN counters (the same names in full and reduced mode).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

/// Label pairs of one series.
pub type Labels<'a> = Vec<(&'static str, String)>;

/// Encodes one counter or gauge family.
pub fn family<'a>(
    encoder: &mut DescriptorEncoder<'a>,
    name: &'static str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels<'_>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let mut m = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => m.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => m.encode_gauge(&(value as i64))?,
        }
    }
    Ok(())
}

/// The kernel's own FOLL_PIN counters (same names in reduced mode).
pub fn encode_vmstat(
    encoder: &mut DescriptorEncoder,
    vm: crate::vmstat::PinCounters,
) -> Result<(), std::fmt::Error> {
    family(
        encoder,
        "pinwatch_vmstat_foll_pin_acquired",
        "The kernel's nr_foll_pin_acquired (/proc/vmstat).",
        MetricType::Counter,
        vec![(vec![], vm.nr_foll_pin_acquired)],
    )?;
    family(
        encoder,
        "pinwatch_vmstat_foll_pin_released",
        "The kernel's nr_foll_pin_released (/proc/vmstat).",
        MetricType::Counter,
        vec![(vec![], vm.nr_foll_pin_released)],
    )
}

/// Encodes one counter family of seconds from nanosecond totals.
pub fn seconds_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    rows: Vec<(Labels<'_>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, ns) in rows {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&(ns as f64 / 1e9), None)?;
    }
    Ok(())
}

/// The OpenMetrics text exposition (with `# EOF`) of one collector.
pub fn exposition(collector: impl Collector + 'static) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}
