//! Keyboard handling: keys change [`App`] state only; the next draw shows
//! the result.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{App, Filter, Panel, ProcessSort, VariantSort};

/// Applies one key press.
pub fn handle_key(app: &mut App, key: KeyEvent) {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.quit = true;
        return;
    }
    if let Some(input) = app.input.as_mut() {
        match key.code {
            KeyCode::Enter => {
                app.filter = Filter::parse(input);
                app.input = None;
                app.process_sel = 0;
            }
            KeyCode::Esc => app.input = None,
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) => input.push(c),
            _ => {}
        }
        return;
    }
    if app.show_help || app.show_details {
        if matches!(
            key.code,
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?') | KeyCode::Char('q')
        ) {
            app.show_help = false;
            app.show_details = false;
        }
        return;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => app.quit = true,
        KeyCode::Char('?') => app.show_help = true,
        KeyCode::Enter => app.show_details = true,
        KeyCode::Tab | KeyCode::BackTab => {
            app.focus = match app.focus {
                Panel::Variants => Panel::Processes,
                Panel::Processes => Panel::Variants,
            }
        }
        KeyCode::Down | KeyCode::Char('j') => move_selection(app, 1),
        KeyCode::Up | KeyCode::Char('k') => move_selection(app, -1),
        KeyCode::Char('s') => match app.focus {
            Panel::Variants => {
                app.variant_sort = match app.variant_sort {
                    VariantSort::Pages => VariantSort::Calls,
                    VariantSort::Calls => VariantSort::Latency,
                    VariantSort::Latency => VariantSort::Name,
                    VariantSort::Name => VariantSort::Pages,
                }
            }
            Panel::Processes => {
                app.process_sort = match app.process_sort {
                    ProcessSort::Rate => ProcessSort::Outstanding,
                    ProcessSort::Outstanding => ProcessSort::Pages,
                    ProcessSort::Pages => ProcessSort::Pid,
                    ProcessSort::Pid => ProcessSort::Rate,
                }
            }
        },
        KeyCode::Char('p') => app.paused = !app.paused,
        KeyCode::Char('c') => {
            app.show_cgroups = !app.show_cgroups;
            app.process_sel = 0;
        }
        KeyCode::Char('f') => app.input = Some(String::new()),
        _ => {}
    }
}

fn move_selection(app: &mut App, by: isize) {
    let len = match app.focus {
        Panel::Variants => app.variant_rows().len(),
        Panel::Processes => app.lower_rows(),
    };
    let sel = match app.focus {
        Panel::Variants => &mut app.variant_sel,
        Panel::Processes => &mut app.process_sel,
    };
    if len == 0 {
        *sel = 0;
        return;
    }
    *sel = (*sel as isize + by).clamp(0, len as isize - 1) as usize;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::app::HeaderInfo;
    use ratatui::crossterm::event::KeyEventKind;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: ratatui::crossterm::event::KeyEventState::NONE,
        }
    }

    fn app() -> App {
        App::new(
            HeaderInfo {
                kernel: "k".into(),
                probes: "p".into(),
                interval_s: 1.0,
                untraced: Vec::new(),
            },
            None,
        )
    }

    #[test]
    fn keys_drive_state() {
        let mut app = app();
        handle_key(&mut app, key(KeyCode::Tab));
        assert_eq!(app.focus, Panel::Processes);
        handle_key(&mut app, key(KeyCode::Char('s')));
        assert_eq!(app.process_sort, ProcessSort::Outstanding);
        handle_key(&mut app, key(KeyCode::Char('p')));
        assert!(app.paused);
        handle_key(&mut app, key(KeyCode::Char('f')));
        for c in "fio".chars() {
            handle_key(&mut app, key(KeyCode::Char(c)));
        }
        handle_key(&mut app, key(KeyCode::Enter));
        assert_eq!(app.filter, Some(Filter::Comm("fio".into())));
        handle_key(&mut app, key(KeyCode::Char('?')));
        assert!(app.show_help);
        handle_key(&mut app, key(KeyCode::Char('q')));
        assert!(!app.show_help && !app.quit, "q closes the overlay first");
        handle_key(&mut app, key(KeyCode::Char('q')));
        assert!(app.quit);
    }

    #[test]
    fn filter_parses_pids_and_comms() {
        assert_eq!(Filter::parse(" 42 "), Some(Filter::Pid(42)));
        assert_eq!(Filter::parse("fio"), Some(Filter::Comm("fio".into())));
        assert_eq!(Filter::parse(""), None);
    }
}
