//! Where the benchmark's own wall time went: the timed saves and loads, and
//! everything around them (building the model, the warm-up, verification,
//! page-cache drops, cleanup, Python start-up), so that a long comparison
//! says what made it long.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Seconds of one bench, by what they were spent on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WallTime {
    /// From start to the results written.
    pub total_s: f64,
    /// Building (or reading) the model.
    pub model_s: f64,
    /// Writing the source file the peers and external tools read, and the
    /// untimed warm-up save and load.
    pub setup_s: f64,
    /// The mount strategies' timed save + load, summed over runs.
    pub strategies_timed_s: f64,
    /// The rest of their runs: fresh folders, page-cache drops,
    /// verification, footprints, cleanup.
    pub strategies_other_s: f64,
    /// The direct peers' own timed save + load.
    pub peers_timed_s: f64,
    /// The rest of the peers' runs: Python start-up, reading the source,
    /// verification, cleanup.
    pub peers_other_s: f64,
}

impl WallTime {
    /// Adds one run that took `wall` of which `timed` seconds were measured.
    pub fn add_strategy_run(&mut self, wall: Duration, timed: f64) {
        let wall = wall.as_secs_f64();
        self.strategies_timed_s += timed.min(wall);
        self.strategies_other_s += (wall - timed).max(0.0);
    }

    /// Adds one peer run that took `wall`, of which `timed` seconds were measured.
    pub fn add_peer_run(&mut self, wall: Duration, timed: f64) {
        let wall = wall.as_secs_f64();
        self.peers_timed_s += timed.min(wall);
        self.peers_other_s += (wall - timed).max(0.0);
    }

    /// Sets the total from `started` (before the results are written);
    /// whatever no part claims is the remainder.
    pub fn finish(&mut self, started: Instant) {
        self.total_s = started.elapsed().as_secs_f64();
    }

    /// One line for stdout and results.md.
    pub fn line(&self) -> String {
        let parts = self.model_s
            + self.setup_s
            + self.strategies_timed_s
            + self.strategies_other_s
            + self.peers_timed_s
            + self.peers_other_s;
        let mut s = format!(
            "bench took {}: model {:.0} s, setup and warm-up {:.0} s; mount strategies {:.0} s timed + {:.0} s around them (folders, cache drops, verification, cleanup)",
            minutes(self.total_s),
            self.model_s,
            self.setup_s,
            self.strategies_timed_s,
            self.strategies_other_s,
        );
        if self.peers_timed_s + self.peers_other_s > 0.0 {
            s.push_str(&format!(
                "; direct peers {:.0} s timed + {:.0} s around them (Python start-up, reading the source, verification, cleanup)",
                self.peers_timed_s, self.peers_other_s
            ));
        }
        s.push_str(&format!(
            "; the rest (copying the binary, removing the work folder) {:.0} s",
            (self.total_s - parts).max(0.0)
        ));
        s
    }
}

fn minutes(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min ({s:.0} s)", s / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_into_timed_and_the_rest() {
        let mut w = WallTime::default();
        w.add_strategy_run(Duration::from_secs(10), 7.5);
        w.add_peer_run(Duration::from_secs(4), 3.0);
        // A timed figure above the run's wall (clock granularity) is capped.
        w.add_peer_run(Duration::from_millis(1000), 1.2);
        assert_eq!(w.strategies_timed_s, 7.5);
        assert_eq!(w.strategies_other_s, 2.5);
        assert_eq!(w.peers_timed_s, 4.0);
        assert_eq!(w.peers_other_s, 1.0);
        w.model_s = 2.0;
        w.total_s = 20.0;
        let line = w.line();
        assert!(line.starts_with("bench took 20 s: model 2 s"), "{line}");
        assert!(line.contains("mount strategies 8 s timed + 2 s"), "{line}");
        assert!(line.contains("direct peers 4 s timed + 1 s"), "{line}");
        assert!(
            line.ends_with("the rest (copying the binary, removing the work folder) 3 s"),
            "{line}"
        );
    }
}
