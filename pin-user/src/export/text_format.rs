//! The classic Prometheus text format (0.0.4) for scrapers that do not ask
//! for OpenMetrics, rewritten from the OpenMetrics exposition
//! prometheus-client writes.

use std::fmt::Write as _;

/// Rewrites an OpenMetrics exposition into the classic Prometheus text
/// format (0.0.4): counter families carry their `_total` suffix in HELP and
/// TYPE, info families become gauges named `*_info`, and `# EOF` and
/// `# UNIT` lines go. prometheus-client only writes OpenMetrics, and these
/// are the only differences in what pinwatch exports.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut kinds = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                kinds.insert(name.to_string(), kind.to_string());
            }
        }
    }
    let rename = |name: &str| match kinds.get(name).map(String::as_str) {
        Some("counter") => format!("{name}_total"),
        Some("info") => format!("{name}_info"),
        _ => name.to_string(),
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let _ = writeln!(out, "# HELP {} {help}", rename(name));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = if kind == "info" { "gauge" } else { kind };
            let _ = writeln!(out, "# TYPE {} {kind}", rename(name));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
