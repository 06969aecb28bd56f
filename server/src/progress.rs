//! Progress of long commands (`import`, `rebuild`) on standard error: a bar on a terminal, plain
//! lines otherwise (a log file or a pipe gets one line per tenth of the work, not a redrawn bar).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Plain progress lines: one per this fraction of the work.
const LINE_EVERY_PERCENT: u64 = 10;

pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: u64,
    bar: Option<ProgressBar>,
    next_line_percent: u64,
}

impl Progress {
    /// Progress through `total` `unit`s of `what`.
    pub fn new(what: &'static str, unit: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let template = format!("{what} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress { what, unit, total, bar, next_line_percent: LINE_EVERY_PERCENT }
    }

    pub fn set(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let percent = done * 100 / self.total.max(1);
        if percent >= self.next_line_percent || (done == self.total && self.next_line_percent <= 100) {
            eprintln!("{}: {done} of {} {} ({percent} %)", self.what, self.total, self.unit);
            self.next_line_percent = (percent / LINE_EVERY_PERCENT + 1) * LINE_EVERY_PERCENT;
        }
    }

    /// Removes the bar (the command prints its own summary).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
