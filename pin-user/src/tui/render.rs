//! Drawing: one function per panel, all reading [`App`] only. Usable from
//! 80x24 up; wider terminals get more columns, taller ones more rows.

use pin_common::{FUNCS, GupStats};
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Style, Stylize as _},
    text::{Line, Span},
    widgets::{Paragraph, Row, Sparkline, Table, TableState},
};

use super::{
    app::{App, Panel, ProcessSort, VariantSort},
    fit, overlays,
    widgets::{TableWindow, block, held},
};
use crate::figures::{VariantFigures, errno_name, fmt_ns, pinned_pages};

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let variant_rows = (app.variant_rows().len() + app.header.untraced.len()) as u16;
    let [header, variants, middle, bottom, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length((variant_rows + 3).clamp(4, (area.height / 3).max(4))),
        Constraint::Length((area.height / 4).max(5)),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, app, header);
    draw_variants(f, app, variants);
    let [trends, hist] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    draw_trends(f, app, trends);
    draw_histogram(f, app, hist);
    let [procs, side] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    if app.show_cgroups {
        super::cgroups::draw_cgroups(f, app, procs);
    } else {
        draw_processes(f, app, procs);
    }
    let [errors, callers] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(side);
    draw_errors_and_release(f, app, errors);
    draw_callers(f, app, callers);
    draw_footer(f, app, footer);
    if app.show_help {
        overlays::draw_help(f, area);
    } else if app.show_details {
        overlays::draw_details(f, app, area);
    }
}

/// Per-second rate of `n` over `secs`, fitted to `width` characters.
fn rate(n: u64, secs: f64, width: usize) -> String {
    fit::rate(crate::figures::per_second(n, secs), width)
}

/// Width the header gives each of its figures.
const HEADER_FIGURE: usize = 10;

fn fmt_uptime(s: f64) -> String {
    let s = s as u64;
    format!("{}d{:02}h{:02}m", s / 86400, s / 3600 % 24, s / 60 % 60)
}

fn last_or_zero(app: &App, id: usize) -> GupStats {
    app.last
        .as_ref()
        .map(|d| d.gup[id])
        .unwrap_or(GupStats::ZERO)
}

fn draw_header(f: &mut Frame, app: &App, area: Rect) {
    let secs = app.last.as_ref().map(|d| d.seconds).unwrap_or(0.0);
    let (calls, pinned) = app.last.as_ref().map_or((0, 0), |d| {
        let calls = d.gup.iter().map(|g| g.calls).sum::<u64>();
        (calls, pinned_pages(&d.gup))
    });
    let vm = app.last.as_ref().and_then(|d| d.vmstat);
    let mut first = vec![
        Span::from("pinwatch").bold(),
        Span::from(format!(
            "  kernel {}  up {}  every {:.1}s",
            app.header.kernel,
            fmt_uptime(app.uptime_s),
            app.header.interval_s,
        )),
    ];
    if app.paused {
        first.push(Span::from("  PAUSED").reversed());
    }
    let mut probes = format!("probes: {}", app.header.probes);
    let missed = app.events_missed();
    if missed > 0 {
        // Never silent: a count that left calls out says so on screen.
        probes.push_str(&format!("  MISSED {missed} (see `pinwatch stat` health)"));
    }
    let evicted = app.evicted.procs + app.evicted.callers;
    if evicted > 0 {
        // Rows lost counts when the kernel evicted their table entries.
        probes.push_str(&format!("  EVICTED {evicted} rows"));
    }
    if app.rows_dropped > 0 {
        // Rows the dashboard let go (idle longest) to stay within the
        // kernel tables' sizes: their totals are no longer shown.
        probes.push_str(&format!("  DROPPED {} idle rows", app.rows_dropped));
    }
    if let Some(v) = &app.latest_refusal {
        // The kernel said no to a memlock charge: the one line that says
        // who and by how much (`pinwatch stat` prints the whole verdict).
        probes.push_str(&format!(
            "  MEMLOCK REFUSED {}x, latest pid {} ({}) {} {} pages, short {} pages",
            app.refusals, v.pid, v.comm, v.check, v.pages, v.shortfall_pages
        ));
    }
    if let Some(filter) = &app.filter {
        probes.push_str(&match filter {
            super::app::Filter::Pid(pid) => format!("  processes: pid {pid}"),
            super::app::Filter::Comm(c) => format!("  processes: comm ~ {c}"),
        });
    }
    let mut third = format!(
        "calls/s {}  pins/s {}  held {}",
        rate(calls, secs, HEADER_FIGURE),
        rate(pinned, secs, HEADER_FIGURE),
        held(app.outstanding(), HEADER_FIGURE)
    );
    if let Some(vm) = vm {
        third.push_str(&format!(
            "  vmstat pins/s +{} -{}",
            rate(vm.nr_foll_pin_acquired, secs, HEADER_FIGURE),
            rate(vm.nr_foll_pin_released, secs, HEADER_FIGURE)
        ));
    }
    f.render_widget(
        Paragraph::new(vec![
            Line::from(first),
            Line::from(probes),
            Line::from(third),
        ]),
        area,
    );
}

fn draw_variants(f: &mut Frame, app: &App, area: Rect) {
    let wide = area.width >= 110;
    let secs = app.last.as_ref().map(|d| d.seconds).unwrap_or(1.0);
    // (title, width) per column; the narrow set fits 80 columns.
    let mut columns = vec![
        ("variant", 24),
        ("calls/s", 8),
        ("pages/s", 8),
        ("pg/call", 7),
    ];
    if wide {
        columns.push(("part%", 5));
    }
    columns.extend([("err/s", 5), ("fb%", 4)]);
    if wide {
        columns.extend([("fast pg", 8), ("slow pg", 8)]);
    }
    columns.extend([("p50", 6), ("p99", 6)]);
    if wide {
        columns.push(("max", 6));
    }
    let mut rows: Vec<Row> = app
        .variant_rows()
        .into_iter()
        .map(|id| {
            let v = VariantFigures::new(id, &last_or_zero(app, id));
            let pct = |percent: Option<f64>| percent.map_or("-".into(), |p| format!("{p:.0}"));
            let mut cells = vec![
                v.variant.to_string(),
                rate(v.calls, secs, 8),
                rate(v.pages, secs, 8),
                v.pages_per_call().map_or("-".into(), |x| fit::rate(x, 7)),
            ];
            if wide {
                cells.push(pct(v.percent_of_calls(v.partial)));
            }
            cells.push(rate(v.errors, secs, 5));
            cells.push(pct(v.fallback_percent()));
            if wide {
                cells.extend([fit::count(v.fast_pages, 8), fit::count(v.slow_pages, 8)]);
            }
            cells.push(fmt_ns(v.latency.p50));
            cells.push(fmt_ns(v.latency.p99));
            if wide {
                cells.push(fmt_ns(v.latency.max));
            }
            Row::new(cells)
        })
        .collect();
    let empty = rows.is_empty();
    // After the selectable rows: functions this kernel has but pinwatch
    // could not attach, labelled, never shown as zeros.
    rows.extend(app.header.untraced.iter().map(|name| {
        // "untraced" fits the 8-wide calls/s column; `pinwatch probes` says why.
        Row::new(vec![name.to_string(), "untraced".into()]).style(Style::default().dim())
    }));
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|(_, w)| Constraint::Length(*w))
        .collect();
    let header: Vec<&str> = columns.iter().map(|(t, _)| *t).collect();
    let sort = match app.variant_sort {
        VariantSort::Pages => "pages/s",
        VariantSort::Calls => "calls/s",
        VariantSort::Latency => "p99",
        VariantSort::Name => "name",
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).bold())
        .column_spacing(1)
        .row_highlight_style(Style::default().reversed())
        .block(block(
            format!(" GUP variants (sort: {sort}) "),
            app.focus == Panel::Variants,
        ));
    let mut state = TableState::default().with_selected((!empty).then_some(app.variant_sel));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_trends(f: &mut Frame, app: &App, area: Rect) {
    let b = block(" trends ".into(), false);
    let inner = b.inner(area);
    f.render_widget(b, area);
    let [l1, s1, l2, s2] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(inner);
    let n = inner.width as usize;
    let start = app.history.len().saturating_sub(n);
    let pinned: Vec<u64> = app
        .history
        .iter()
        .skip(start)
        .map(|p| p.pinned_per_s.round() as u64)
        .collect();
    let fallback: Vec<u64> = app
        .history
        .iter()
        .skip(start)
        .map(|p| p.fallback_pct.round() as u64)
        .collect();
    let last = app.history.back().copied();
    f.render_widget(
        Paragraph::new(format!(
            "pinned pages/s: {} (max {})",
            fit::rate(last.map_or(0.0, |p| p.pinned_per_s), HEADER_FIGURE),
            fit::count(pinned.iter().max().copied().unwrap_or(0), HEADER_FIGURE)
        )),
        l1,
    );
    f.render_widget(Sparkline::default().data(&pinned), s1);
    f.render_widget(
        Paragraph::new(format!(
            "fast-path fallback: {:.1}%",
            last.map_or(0.0, |p| p.fallback_pct)
        )),
        l2,
    );
    f.render_widget(Sparkline::default().data(&fallback).max(100), s2);
}

fn draw_histogram(f: &mut Frame, app: &App, area: Rect) {
    let Some(&id) = app.variant_rows().get(app.variant_sel) else {
        f.render_widget(
            Paragraph::new("no GUP calls yet").block(block(" latency ".into(), false)),
            area,
        );
        return;
    };
    let last = last_or_zero(app, id);
    let (hist, when) = if last.calls > 0 {
        (last.latency_log2, "last interval")
    } else {
        (app.totals[id].latency_log2, "since start")
    };
    let total: u64 = hist.iter().sum();
    let first = hist.iter().position(|&c| c > 0).unwrap_or(0);
    let end = hist.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    let inner_w = area.width.saturating_sub(2) as usize;
    let bar_w = inner_w.saturating_sub(26);
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    let lines: Vec<Line> = (first..end)
        .map(|i| {
            let c = hist[i];
            let bar = "#".repeat((c as usize * bar_w).div_ceil(max as usize).min(bar_w));
            Line::from(format!(
                "<{:>6} {:>7} {:>4.0}% {bar}",
                fmt_ns(Some(1u64 << (i + 1).min(63))),
                fit::count(c, 7),
                100.0 * c as f64 / total.max(1) as f64
            ))
        })
        .collect();
    let title = format!(" latency {} ({when}) ", FUNCS[id].name);
    f.render_widget(Paragraph::new(lines).block(block(title, false)), area);
}

/// Width of the processes table's figures. The table gets 60% of the
/// screen: at 80 columns 46 inside its border, which these widths (7 + 6 +
/// 3 x 6 + 8, plus 5 spaces) fit, so ratatui never narrows a column below
/// what its figures were fitted to.
const PROC_FIGURE: usize = 6;
/// Width of the VmPin column (its title, "VmPin kB", is 8).
const PROC_VMPIN: usize = 8;

fn draw_processes(f: &mut Frame, app: &App, area: Rect) {
    // Pins released by interrupts (O_DIRECT completions) belong to
    // processes the interrupt does not name: once there are any, no
    // process's taken-minus-released is what it holds.
    let irq_released = app
        .procs
        .get(&pin_common::IRQ_TGID)
        .is_some_and(|row| row.totals.released > 0);
    let procs = app.process_rows();
    let shown = TableWindow::of(procs.len(), app.process_sel, area);
    let rows: Vec<Row> = procs[shown.rows()]
        .iter()
        .map(|p| {
            Row::new(vec![
                crate::figures::pid_label(p.pid),
                p.totals.comm.to_string(),
                fit::rate(p.pins_per_s, PROC_FIGURE),
                fit::count(p.totals.pages, PROC_FIGURE),
                if irq_released {
                    "?".to_string()
                } else {
                    held(p.outstanding(), PROC_FIGURE)
                },
                p.memlock.map_or("-".into(), |m| {
                    // `!`: near its memlock limit (the next pin may fail).
                    let mark = if m.near_limit() { "!" } else { "" };
                    let width = PROC_VMPIN - mark.len();
                    format!("{}{mark}", fit::count(m.pinned / 1024, width))
                }),
            ])
        })
        .collect();
    let sort = match app.process_sort {
        ProcessSort::Rate => "pins/s",
        ProcessSort::Outstanding => "still pinned",
        ProcessSort::Pages => "pages",
        ProcessSort::Pid => "pid",
    };
    let empty = rows.is_empty();
    let widths = [
        Constraint::Length(7),
        Constraint::Min(6),
        Constraint::Length(PROC_FIGURE as u16),
        Constraint::Length(PROC_FIGURE as u16),
        Constraint::Length(PROC_FIGURE as u16),
        Constraint::Length(PROC_VMPIN as u16),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(vec!["pid", "comm", "pins/s", "pages", "held", "VmPin kB"]).bold())
        .row_highlight_style(Style::default().reversed())
        .block(block(
            format!(" processes (sort: {sort}) "),
            app.focus == Panel::Processes,
        ));
    let mut state = TableState::default().with_selected((!empty).then_some(shown.selected()));
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_errors_and_release(f: &mut Frame, app: &App, area: Rect) {
    let secs = app.last.as_ref().map(|d| d.seconds).unwrap_or(1.0);
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = vec![Line::from("errors & short (total)").bold()];
    let mut errs: Vec<(String, u64)> = Vec::new();
    for stats in &app.totals {
        for (e, &n) in stats.errno.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = errno_name(e);
            match errs.iter_mut().find(|(k, _)| *k == name) {
                Some((_, total)) => *total += n,
                None => errs.push((name, n)),
            }
        }
    }
    // Calls that came back with fewer pages than asked, or none: the
    // rest of the error view (`pinwatch stat` lists them by caller).
    let partial: u64 = app.totals.iter().map(|s| s.partial).sum();
    let zero: u64 = app.totals.iter().map(|s| s.zero).sum();
    for (name, n) in [("short", partial), ("zero", zero)] {
        if n > 0 {
            errs.push((name.to_string(), n));
        }
    }
    if errs.is_empty() {
        lines.push(Line::from("  none"));
    }
    for (name, n) in errs {
        // A column of 8, like the tables'.
        let n = fit::count(n, 8.min(width.saturating_sub(13)).max(4));
        lines.push(Line::from(format!("  {name:<10} {n}")));
    }
    lines.push(Line::from("unpinned pages/s").bold());
    let mut any = false;
    if let Some(d) = &app.last {
        for (i, r) in d.release.iter().enumerate().filter(|(_, r)| r.calls > 0) {
            any = true;
            let value = rate(r.pages, secs, 10);
            let name_w = width.saturating_sub(value.len() + 3);
            let name: String = FUNCS[pin_common::GUP_FUNC_COUNT + i]
                .name
                .chars()
                .take(name_w)
                .collect();
            lines.push(Line::from(format!("  {name:<name_w$} {value}")));
        }
    }
    if !any {
        lines.push(Line::from("  none"));
    }
    f.render_widget(
        Paragraph::new(lines).block(block(" errors & release ".into(), false)),
        area,
    );
}

/// Calling kernel functions since start, most pages first.
fn draw_callers(f: &mut Frame, app: &App, area: Rect) {
    let views = crate::figures::caller_views(&app.caller_totals, &app.sites);
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    if views.is_empty() {
        lines.push(Line::from("  none yet"));
    }
    for v in &views {
        let value = format!("{} pg", fit::count(v.pages, 8));
        let name_w = width.saturating_sub(value.len() + 3);
        let name: String = v.caller.chars().take(name_w).collect();
        lines.push(Line::from(format!("  {name:<name_w$} {value}")));
    }
    f.render_widget(
        Paragraph::new(lines).block(block(" callers (total) ".into(), false)),
        area,
    );
}

fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    let text = match &app.input {
        Some(input) => {
            format!("filter processes by pid or comm (Enter apply, Esc cancel): {input}_")
        }
        None => {
            "q quit ↑↓/jk select Tab panel Enter details s sort p pause f filter ? help".to_string()
        }
    };
    f.render_widget(Paragraph::new(text).reversed(), area);
}
