//! The pieces every panel draws with: a bordered block, the window of
//! rows a table shows, a held-pins cell. Apart from `render` so that the
//! panels drawn in their own modules (`cgroups`, `overlays`) take them
//! from here, not from the module that calls them.

use ratatui::{
    layout::Rect,
    style::{Modifier, Style},
    widgets::{Block, Borders},
};

use super::fit;

/// Pins held, from pins taken minus released since start. Below zero the
/// process released pins taken before pinwatch started (or in a call that
/// was in flight when it attached): how many it holds is then unknown,
/// shown as `?` rather than as a negative count.
pub(super) fn held(outstanding: i64, width: usize) -> String {
    if outstanding < 0 {
        "?".to_string()
    } else {
        fit::count(outstanding as u64, width)
    }
}

/// A bordered block titled `title`, in bold where it has the focus.
pub(super) fn block(title: String, focused: bool) -> Block<'static> {
    let b = Block::default().borders(Borders::ALL).title(title);
    if focused {
        b.border_style(Style::default().add_modifier(Modifier::BOLD))
    } else {
        b
    }
}

/// The rows a bordered table with a one-line header in `area` shows:
/// only those are built (a dashboard beside thousands of processes built
/// a row of strings for each, every frame, to show 40). The window is the
/// one ratatui scrolls to: from the top, or ending at the selected row.
pub(super) struct TableWindow {
    offset: usize,
    end: usize,
    selected: usize,
}

impl TableWindow {
    /// The window over `len` rows with row `selected` selected.
    pub(super) fn of(len: usize, selected: usize, area: Rect) -> Self {
        // Two borders and the header line.
        let height = usize::from(area.height.saturating_sub(3)).max(1);
        let selected = selected.min(len.saturating_sub(1));
        let offset = (selected + 1).saturating_sub(height);
        Self {
            offset,
            end: (offset + height).min(len),
            selected,
        }
    }

    /// The shown rows' indices.
    pub(super) fn rows(&self) -> std::ops::Range<usize> {
        self.offset..self.end
    }

    /// The selected row's index among the shown ones.
    pub(super) fn selected(&self) -> usize {
        self.selected - self.offset
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn held_below_zero_is_unknown() {
        assert_eq!(super::held(0, 6), "0");
        assert_eq!(super::held(304, 6), "304");
        assert_eq!(super::held(-16, 6), "?");
    }
}
