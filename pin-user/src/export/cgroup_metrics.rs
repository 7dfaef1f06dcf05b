//! The per-cgroup metric families (`pinwatch_cgroup_*`): one series per
//! cgroup, labelled with its path and, where the path shows them, its
//! container and pod; at most [`MAX_CGROUP_SERIES`].

use std::collections::BTreeMap;

use prometheus_client::{encoding::DescriptorEncoder, metrics::MetricType};

use super::families::{Labels, family};
use crate::{cgroups::CgroupIdentity, figures::CgroupFigures, snapshot::CgroupTotals};

/// At most this many cgroup series per family: a host with more pinning
/// cgroups than this is rare, and every series costs the Prometheus
/// server memory (the rest are counted in `pinwatch_cgroup_series_dropped`).
pub const MAX_CGROUP_SERIES: usize = 128;

/// The per-cgroup families, from cumulative per-cgroup counters.
pub(super) fn encode_cgroups(
    encoder: &mut DescriptorEncoder<'_>,
    cgroups: &BTreeMap<u64, CgroupTotals>,
    names: &BTreeMap<u64, CgroupIdentity>,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let mut rows = CgroupFigures::busiest(cgroups, names, usize::MAX);
    // A stable choice (by path, then id) rather than the busiest: a series
    // that dropped in and out of the cap would not be monotonic.
    rows.sort_by(|a, b| (&a.identity.path, a.id).cmp(&(&b.identity.path, b.id)));
    let dropped = rows.len().saturating_sub(MAX_CGROUP_SERIES);
    rows.truncate(MAX_CGROUP_SERIES);
    let series = |f: fn(&CgroupTotals) -> u64| series(&rows, f);
    family(
        encoder,
        "pinwatch_cgroup_calls",
        "Outermost GUP calls made by the cgroup's tasks.",
        Counter,
        series(|t| t.calls),
    )?;
    family(
        encoder,
        "pinwatch_cgroup_pages",
        "Pages returned to the cgroup's tasks by any GUP variant.",
        Counter,
        series(|t| t.pages),
    )?;
    family(
        encoder,
        "pinwatch_cgroup_pinned_pages",
        "Pages pinned (FOLL_PIN) by the cgroup's tasks.",
        Counter,
        series(|t| t.pinned),
    )?;
    family(
        encoder,
        "pinwatch_cgroup_released_pages",
        "Pinned pages released by the cgroup's tasks (releases in interrupt context count for cgroup=\"[irq]\").",
        Counter,
        series(|t| t.released),
    )?;
    family(
        encoder,
        "pinwatch_cgroup_errors",
        "Outermost GUP calls of the cgroup's tasks that returned an errno.",
        Counter,
        series(|t| t.errors),
    )?;
    family(
        encoder,
        "pinwatch_cgroup_series_dropped",
        "Cgroups not exported because of the series cap.",
        Gauge,
        vec![(vec![], dropped as u64)],
    )
}

/// One series per cgroup: `cgroup` is its path; `container` and `pod`
/// only where the path shows them.
fn series(rows: &[CgroupFigures], f: fn(&CgroupTotals) -> u64) -> Vec<(Labels<'static>, u64)> {
    rows.iter()
        .map(|row| {
            let id = &row.identity;
            let mut labels = vec![("cgroup", id.path.clone())];
            if let Some(container) = &id.container {
                labels.push(("container", container.clone()));
            }
            if let Some(pod) = &id.pod {
                labels.push(("pod", pod.clone()));
            }
            (labels, f(&row.totals))
        })
        .collect()
}
