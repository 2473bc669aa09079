//! Progress while the benchmark runs: an overall bar and the current step on
//! a terminal, plain lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Reports the benchmark's progress on stderr: bars on a terminal, plain lines otherwise.
pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
}

impl Progress {
    /// `total` runs in all.
    pub fn new(total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bars: None };
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(total));
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs  {msg}")
        {
            overall.set_style(style.progress_chars("=> "));
        }
        let step = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} ({elapsed})") {
            step.set_style(style);
        }
        step.enable_steady_tick(Duration::from_millis(120));
        Progress {
            bars: Some((multi, overall, step)),
        }
    }

    /// What is happening now, e.g. "chunked run 2/3: saving".
    pub fn step(&self, what: &str) {
        if let Some((_, _, step)) = &self.bars {
            step.set_message(what.to_string());
            step.reset_elapsed();
        }
    }

    /// A line that stays (a finished run, a skipped strategy).
    pub fn line(&self, text: &str) {
        match &self.bars {
            Some((multi, _, _)) => {
                if multi.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            None => eprintln!("{text}"),
        }
    }

    /// `n` more runs are done (or skipped).
    pub fn advance(&self, n: u64) {
        if let Some((_, overall, _)) = &self.bars {
            overall.inc(n);
        }
    }

    /// Clears the bars at the end.
    pub fn finish(&self) {
        if let Some((_, overall, step)) = &self.bars {
            step.finish_and_clear();
            overall.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// Bars never outlive the benchmark, even when it stops on an error.
    fn drop(&mut self) {
        self.finish();
    }
}
