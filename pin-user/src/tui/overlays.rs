//! The panes drawn over the dashboard: the key help and the selected
//! row's details (a GUP variant's totals and latency, a process's counts
//! and memlock state, a cgroup's).

use pin_common::FUNCS;
use ratatui::{
    Frame,
    layout::Rect,
    text::Line,
    widgets::{Clear, Paragraph},
};

use super::{
    app::{App, Panel},
    widgets::block,
};
use crate::figures::{errno_name, fmt_ns};

/// A process's memlock limit and what it has charged against it.
fn memlock_line(state: Option<crate::limits::MemlockState>) -> String {
    use crate::limits::fmt_limit;
    match state {
        None => "VmPin -  VmLck -  memlock -".to_string(),
        Some(m) => format!(
            "VmPin {} kB  VmLck {} kB  memlock {} (hard {}){}",
            m.pinned / 1024,
            m.locked / 1024,
            fmt_limit(m.limit),
            fmt_limit(m.limit_hard),
            if m.near_limit() { "  NEAR LIMIT" } else { "" }
        ),
    }
}

/// A `w` x `h` box in the middle of `area` (clipped to it).
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The key help, over the dashboard.
pub(super) fn draw_help(f: &mut Frame, area: Rect) {
    let lines = [
        "q, Esc      quit",
        "↑ ↓, j k    select a row",
        "Tab         switch panel (variants / processes)",
        "Enter       details of the selected row",
        "s           cycle the sort of the focused panel",
        "p           pause / resume (no samples while paused)",
        "f           filter processes by pid or comm",
        "c           cgroups (containers, pods) / processes",
        "?           this help",
        "",
        "Rates are per second over the last interval; latency",
        "columns are upper bounds of log2 buckets.",
    ];
    let r = centered(area, 62, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines.map(Line::from).to_vec()).block(block(" help ".into(), true)),
        r,
    );
}

/// The selected row's details, over the dashboard.
pub(super) fn draw_details(f: &mut Frame, app: &App, area: Rect) {
    let lines: Vec<Line> = match app.focus {
        Panel::Variants => match app.variant_rows().get(app.variant_sel) {
            Some(&id) => {
                let t = &app.totals[id];
                let latency = crate::figures::Latency::from_stats(t);
                let mut v = vec![
                    format!("since start: {} calls", t.calls),
                    format!(
                        "pages requested {}  returned {}",
                        t.pages_requested, t.pages_returned
                    ),
                    format!(
                        "partial {}  zero {}  errors {}",
                        t.partial, t.zero, t.errors
                    ),
                    format!(
                        "fallbacks {}  fast pages {}  slow pages {}",
                        t.fallbacks, t.fast_pages, t.slow_pages
                    ),
                    format!(
                        "latency p50 {}  p90 {}  p99 {}  max {}  mean {}",
                        fmt_ns(latency.p50),
                        fmt_ns(latency.p90),
                        fmt_ns(latency.p99),
                        fmt_ns(latency.max),
                        fmt_ns(latency.mean),
                    ),
                ];
                for (e, n) in t.errno.iter().enumerate().filter(|(_, n)| **n > 0) {
                    v.push(format!("  {} {n}", errno_name(e)));
                }
                v.into_iter().map(Line::from).collect()
            }
            None => vec![Line::from("nothing selected")],
        },
        Panel::Processes if app.show_cgroups => super::cgroups::details(app)
            .into_iter()
            .map(Line::from)
            .collect(),
        Panel::Processes => match app.process_rows().get(app.process_sel) {
            Some(p) => [
                format!(
                    "pid {}  comm {}",
                    crate::figures::pid_label(p.pid),
                    p.totals.comm
                ),
                format!("calls {}  pages {}", p.totals.calls, p.totals.pages),
                format!(
                    "pinned {}  released {}  still pinned {}",
                    p.totals.pinned,
                    p.totals.released,
                    if p.outstanding() < 0 {
                        "unknown (it released pins taken before pinwatch started)".to_string()
                    } else {
                        p.outstanding().to_string()
                    }
                ),
                memlock_line(p.memlock),
            ]
            .map(Line::from)
            .to_vec(),
            None => vec![Line::from("nothing selected")],
        },
    };
    let title = match (app.focus, app.variant_rows().get(app.variant_sel)) {
        (Panel::Variants, Some(&id)) => format!(" {} ", FUNCS[id].name),
        _ => " details ".into(),
    };
    let r = centered(area, 70, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(block(title, true)), r);
}
