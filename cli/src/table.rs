//! Plain-text tables, colour, and the human forms of durations and byte counts.
//!
//! Pure: whether to colour is decided by the caller (`std::io::IsTerminal` in `main`), so
//! every rendering is testable as a string.

use std::fmt::Write as _;
use std::time::Duration;

/// How a cell is coloured on a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Bad,
    Pending,
    Dim,
}

impl Tone {
    fn ansi(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some("32"),
            Tone::Bad => Some("31"),
            Tone::Pending => Some("33"),
            Tone::Dim => Some("2"),
        }
    }

    /// The tone of a condition status (`True`, `False`, `Unknown`, or absent).
    pub fn of_status(status: Option<&str>) -> Tone {
        match status {
            Some("True") => Tone::Good,
            Some("False") => Tone::Bad,
            _ => Tone::Pending,
        }
    }
}

/// One cell: its text and its tone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            tone: Tone::Plain,
        }
    }

    pub fn toned(text: impl Into<String>, tone: Tone) -> Self {
        Cell {
            text: text.into(),
            tone,
        }
    }
}

/// A table with a header row, rendered with columns separated by three spaces, the way
/// `kubectl get` aligns them.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline. Colour codes wrap
    /// only the cell text, so alignment is the same with and without colour.
    pub fn render(&self, colour: bool) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self
            .header
            .iter()
            .map(|h| Cell::plain(h.as_str()))
            .collect();
        for row in std::iter::once(&header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                let last = i + 1 == columns;
                let pad = widths[i] - cell.text.chars().count();
                match (colour, cell.tone.ansi()) {
                    (true, Some(code)) => {
                        let _ = write!(line, "\x1b[{code}m{}\x1b[0m", cell.text);
                    }
                    _ => line.push_str(&cell.text),
                }
                if !last {
                    line.push_str(&" ".repeat(pad + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A bold heading on a terminal, plain otherwise.
pub fn heading(text: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// An age the way `kubectl get` prints one: `45s`, `3m12s`, `25m`, `2h5m`, `9h`, `3d4h`, `12d`.
pub fn human_age(age: Duration) -> String {
    let s = age.as_secs();
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            rest => format!("{m}m{rest}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            rest => format!("{h}h{rest}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        match h % 24 {
            0 => format!("{d}d"),
            rest => format!("{d}d{rest}h"),
        }
    } else {
        format!("{d}d")
    }
}

/// A byte count in binary units: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_on_the_widest_cell_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&["NAME", "READY"]);
        t.row(vec![Cell::plain("a-wg0-client"), Cell::plain("True")]);
        t.row(vec![Cell::plain("b"), Cell::plain("")]);
        assert_eq!(
            t.render(false),
            "NAME           READY\na-wg0-client   True\nb\n"
        );
    }

    #[test]
    fn colour_wraps_only_the_text_and_keeps_the_alignment() {
        let mut t = Table::new(&["READY", "NODE"]);
        t.row(vec![Cell::toned("False", Tone::Bad), Cell::plain("b")]);
        let coloured = t.render(true);
        assert_eq!(coloured, "READY   NODE\n\x1b[31mFalse\x1b[0m   b\n");
        assert!(!t.render(false).contains('\x1b'));
    }

    #[test]
    fn ages_read_like_kubectl() {
        let age = |s| human_age(Duration::from_secs(s));
        assert_eq!(age(0), "0s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(25 * 60 + 7), "25m");
        assert_eq!(age(2 * 3600 + 300), "125m");
        assert_eq!(age(5 * 3600 + 300), "5h5m");
        assert_eq!(age(9 * 3600), "9h");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(age(12 * 86_400), "12d");
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
    }
}
