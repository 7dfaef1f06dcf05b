//! `pinwatch top` in reduced mode: no probes, so no variant, latency or
//! caller panels; a banner saying so and why, the kernel's FOLL_PIN page
//! rates, and the processes with the most `VmPin`. q, Esc or Ctrl-C quits.

use ratatui::{
    Frame,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Table, Wrap},
};

use crate::reduced::{ReducedReason, ReducedSource, ReducedView};

/// What the reduced dashboard shows.
pub struct ReducedScreen {
    /// Kernel release.
    pub kernel: String,
    /// Why reduced, and what would enable tracing.
    pub reason: ReducedReason,
    /// The last interval, once one has passed.
    pub view: Option<ReducedView>,
}

/// Draws the reduced dashboard.
pub fn draw(f: &mut Frame, screen: &ReducedScreen) {
    // The reasons are long: give the banner the rows its text wraps to.
    let width = usize::from(f.area().width.saturating_sub(2)).max(1);
    let banner_text = screen.kernel.len() + screen.reason.why.len() + 40;
    let banner_rows =
        banner_text.div_ceil(width) + (screen.reason.enable.len() + 20).div_ceil(width);
    let [banner, rates, procs, footer] = Layout::vertical([
        Constraint::Length((banner_rows as u16 + 2).min(f.area().height / 2)),
        Constraint::Length(3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_banner(f, screen, banner);
    draw_rates(f, screen, rates);
    draw_processes(f, screen, procs);
    f.render_widget(Line::from(" q quit").dim(), footer);
}

/// Why the mode is reduced, and what would enable tracing.
fn draw_banner(f: &mut Frame, screen: &ReducedScreen, area: Rect) {
    let warn = Style::default().fg(ratatui::style::Color::Yellow);
    f.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "REDUCED MODE: no probes on kernel {}: {}",
                screen.kernel, screen.reason.why
            ))
            .style(warn.add_modifier(Modifier::BOLD)),
            Line::from(format!("For full tracing, {}", screen.reason.enable)),
        ])
        .wrap(Wrap { trim: true })
        .block(Block::default().borders(Borders::ALL).title(" pinwatch ")),
        area,
    );
}

/// The kernel's FOLL_PIN page rates.
fn draw_rates(f: &mut Frame, screen: &ReducedScreen, area: Rect) {
    let rate_text = match &screen.view {
        None => "waiting for the first interval".to_string(),
        Some(view) => match view.vmstat {
            Some(v) => {
                format!(
                    "acquired {:.1} pages/s   released {:.1} pages/s   pinned now {} pages",
                    crate::figures::per_second(v.nr_foll_pin_acquired, view.interval_s),
                    crate::figures::per_second(v.nr_foll_pin_released, view.interval_s),
                    view.pinned_now_pages
                        .map_or("-".to_string(), |p| p.to_string())
                )
            }
            None => "not in this kernel's /proc/vmstat".to_string(),
        },
    };
    f.render_widget(
        Paragraph::new(rate_text).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" /proc/vmstat nr_foll_pin_* (host-wide) "),
        ),
        area,
    );
}

/// The processes with the most `VmPin`.
fn draw_processes(f: &mut Frame, screen: &ReducedScreen, area: Rect) {
    let rows: Vec<Row> = screen
        .view
        .iter()
        .flat_map(|v| &v.processes)
        .map(|p| {
            Row::new(vec![
                p.pid.to_string(),
                p.comm.clone(),
                p.vm_pin_kb.to_string(),
                format!("{:+}", p.change_kb),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let mut table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Length(12),
        ],
    )
    .header(Row::new(vec!["pid", "comm", "VmPin KiB", "change KiB"]).bold())
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" processes by VmPin "),
    );
    if empty {
        table = table.footer(Row::new(vec!["", "(none has VmPin > 0)"]));
    }
    f.render_widget(table, area);
}

impl super::Screen<ReducedSource> for ReducedScreen {
    fn draw(&self, f: &mut Frame) {
        draw(f, self)
    }

    /// q, Esc or Ctrl-C quits; nothing else is bound.
    fn key(&mut self, key: KeyEvent) -> bool {
        matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
            || (key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c'))
    }

    fn ingest(&mut self, view: ReducedView) {
        self.view = Some(view);
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        reduced::{PinnedProcess, ReducedSample},
        vmstat::PinCounters,
    };

    #[test]
    fn reduced_dashboard_80x24() {
        let sample = |acquired, kb| ReducedSample {
            vmstat: Some(PinCounters {
                nr_foll_pin_acquired: acquired,
                nr_foll_pin_released: 1000,
            }),
            pinned: [(
                4242,
                PinnedProcess {
                    pid: 4242,
                    comm: "qemu-system-x86".into(),
                    vm_pin_kb: kb,
                },
            )]
            .into(),
        };
        let screen = ReducedScreen {
            kernel: "6.18.44".into(),
            reason: ReducedReason {
                why: "no GUP function could be traced on kernel 6.18.44: kprobes unavailable"
                    .into(),
                enable: "use a kernel built with CONFIG_KPROBES=y".into(),
            },
            view: Some(ReducedView::new(
                &sample(1000, 4096),
                &sample(1512, 8192),
                1.0,
            )),
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, &screen)).unwrap();
        insta::assert_snapshot!(terminal.backend());
    }
}
