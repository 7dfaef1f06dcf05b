//! The cgroups table (`c` swaps it with the processes table): per cgroup,
//! named by container (and pod) where its path shows one, calls and pages
//! per second, pins held since start and errors.

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Style, Stylize as _},
    widgets::{Row, Table, TableState},
};

use super::{
    app::{App, Panel},
    fit,
    widgets::{TableWindow, block, held},
};

/// Width of the rates, as the processes table's (see `PROC_FIGURE`).
/// At 80 columns the table has 46 inside its border: the two rates, pins
/// held (5), errors (4) and the spaces between leave the label 20, a
/// runtime's name and a short container id ("docker 0123456789ab").
const FIGURE: usize = 6;
/// Width of the pins held column.
const HELD: usize = 5;
/// Width of the errors column.
const ERRORS: usize = 4;

/// Draws the cgroups table in `area`.
pub fn draw_cgroups(f: &mut Frame, app: &App, area: Rect) {
    // As for processes: once interrupts released pins (O_DIRECT
    // completions), no cgroup's taken-minus-released is what it holds.
    let irq_released = app
        .cgroups
        .get(&pin_common::IRQ_CGROUP)
        .is_some_and(|row| row.totals.released > 0);
    let cgroups = app.cgroup_rows();
    let shown = TableWindow::of(cgroups.len(), app.process_sel, area);
    let rows: Vec<Row> = cgroups[shown.rows()]
        .iter()
        .map(|c| {
            let label = if c.id == pin_common::IRQ_CGROUP {
                "[irq]".to_string()
            } else if c.identity.path.is_empty() {
                format!("[cgroup {}]", c.id)
            } else {
                c.identity.short()
            };
            Row::new(vec![
                label,
                fit::rate(c.calls_per_s, FIGURE),
                fit::rate(c.pages_per_s, FIGURE),
                if irq_released {
                    "?".to_string()
                } else {
                    held(c.totals.outstanding(), HELD)
                },
                fit::count(c.totals.errors, ERRORS),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(FIGURE as u16),
        Constraint::Length(FIGURE as u16),
        Constraint::Length(HELD as u16),
        Constraint::Length(ERRORS as u16),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(vec!["cgroup", "call/s", "pg/s", "held", "err"]).bold())
        .row_highlight_style(Style::default().reversed())
        .block(block(
            " cgroups (c: processes) ".to_string(),
            app.focus == Panel::Processes,
        ));
    let mut state = TableState::default().with_selected((!empty).then_some(shown.selected()));
    f.render_stateful_widget(table, area, &mut state);
}

/// The details overlay of the selected cgroup: its path, what the path
/// says, and its counts since start.
pub fn details(app: &App) -> Vec<String> {
    let Some(c) = app.cgroup_rows().get(app.process_sel).copied() else {
        return vec!["nothing selected".to_string()];
    };
    let id = &c.identity;
    let mut lines = vec![format!("cgroup {} (id {})", id.path, c.id)];
    if let Some(container) = &id.container {
        let runtime = id.runtime.map(|r| format!(" ({r:?})")).unwrap_or_default();
        lines.push(format!("container {container}{runtime}"));
    }
    if let Some(pod) = &id.pod {
        let qos = id.qos.map(|q| format!(", QoS {q:?}")).unwrap_or_default();
        lines.push(format!("pod {pod}{qos}"));
    }
    if let Some(unit) = &id.unit {
        lines.push(format!("unit {unit}"));
    }
    let t = &c.totals;
    lines.push(format!(
        "calls {}  pages {}  errors {}",
        t.calls, t.pages, t.errors
    ));
    lines.push(format!(
        "pinned {}  released {}  still pinned {}",
        t.pinned,
        t.released,
        if t.outstanding() < 0 {
            "unknown (it released pins taken before pinwatch started)".to_string()
        } else {
            t.outstanding().to_string()
        }
    ));
    lines
}
