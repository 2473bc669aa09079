//! What was measured per candidate, the Pareto front of save time, load time
//! and size, and the choice for a goal.

use serde::Serialize;

/// What the user wants most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// The lowest save + load time.
    Balanced,
    /// The fastest load.
    Load,
    /// The fastest save.
    Save,
    /// The smallest backing footprint.
    Size,
}

impl Goal {
    /// The goal in words, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Goal::Balanced => "lowest save + load time",
            Goal::Load => "fastest load",
            Goal::Save => "fastest save",
            Goal::Size => "smallest footprint",
        }
    }
}

/// One candidate's figures: means over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The candidate's name.
    pub name: String,
    /// Mean save time in seconds.
    pub save_s: f64,
    /// Mean load time in seconds.
    pub load_s: f64,
    /// Backing bytes, as `du` counts them.
    pub bytes: u64,
    /// Whether the layout stores tensors lossily.
    pub lossy: bool,
    /// How many runs the means are over.
    pub runs: usize,
}

impl Point {
    /// Save plus load time, what `balanced` minimises.
    pub fn total_s(&self) -> f64 {
        self.save_s + self.load_s
    }

    /// At least as good on all three, better on one.
    pub fn dominates(&self, o: &Point) -> bool {
        let le = self.save_s <= o.save_s && self.load_s <= o.load_s && self.bytes <= o.bytes;
        let lt = self.save_s < o.save_s || self.load_s < o.load_s || self.bytes < o.bytes;
        le && lt
    }

    fn score(&self, goal: Goal) -> f64 {
        match goal {
            Goal::Balanced => self.total_s(),
            Goal::Load => self.load_s,
            Goal::Save => self.save_s,
            Goal::Size => self.bytes as f64,
        }
    }
}

/// Indices of the points no other point dominates.
pub fn pareto(points: &[Point]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !points.iter().any(|o| o.dominates(&points[i])))
        .collect()
}

/// Scores within this share of the best are a tie (runs here vary by more),
/// broken by the other figures: save + load, then size.
const TIE: f64 = 0.03;

/// The best point for `goal` (lossy points only with `allow_lossy`), and the
/// next best.
pub fn choose(points: &[Point], goal: Goal, allow_lossy: bool) -> Option<(usize, Option<usize>)> {
    let mut eligible: Vec<usize> = (0..points.len())
        .filter(|&i| allow_lossy || !points[i].lossy)
        .collect();
    let best = eligible
        .iter()
        .map(|&i| points[i].score(goal))
        .fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return None;
    }
    let key = |i: usize| {
        let p = &points[i];
        let tied = p.score(goal) <= best * (1.0 + TIE);
        (
            !tied,
            if tied { 0.0 } else { p.score(goal) },
            p.total_s(),
            p.bytes,
        )
    };
    eligible.sort_by(|&a, &b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.total_cmp(&kb.2))
            .then(ka.3.cmp(&kb.3))
    });
    Some((eligible[0], eligible.get(1).copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, save_s: f64, load_s: f64, bytes: u64) -> Point {
        Point {
            name: name.into(),
            save_s,
            load_s,
            bytes,
            lossy: false,
            runs: 1,
        }
    }

    #[test]
    fn the_front_keeps_exactly_the_undominated_points() {
        let pts = vec![
            p("fast", 1.0, 1.0, 100),
            p("small", 3.0, 3.0, 50),
            p("worse", 2.0, 2.0, 100),
            p("tie", 1.0, 1.0, 100),
        ];
        let front = pareto(&pts);
        assert_eq!(front, vec![0, 1, 3]);
        for (i, q) in pts.iter().enumerate() {
            let dominated = pts.iter().any(|o| o.dominates(q));
            assert_eq!(front.contains(&i), !dominated);
        }
    }

    #[test]
    fn each_goal_picks_its_own_best_and_ties_go_to_the_faster_pair() {
        let pts = vec![
            p("fast-save", 1.0, 4.0, 100),
            p("fast-load", 3.0, 1.0, 100),
            p("small", 5.0, 5.0, 40),
            p("balanced", 2.0, 1.9, 100),
        ];
        assert_eq!(choose(&pts, Goal::Save, false).map(|c| c.0), Some(0));
        assert_eq!(choose(&pts, Goal::Load, false).map(|c| c.0), Some(1));
        assert_eq!(choose(&pts, Goal::Size, false).map(|c| c.0), Some(2));
        assert_eq!(choose(&pts, Goal::Balanced, false), Some((3, Some(1))));
        // Within 3% on size: the faster one wins.
        let pts = vec![p("a", 9.0, 9.0, 100), p("b", 1.0, 1.0, 102)];
        assert_eq!(choose(&pts, Goal::Size, false).map(|c| c.0), Some(1));
    }

    #[test]
    fn lossy_points_only_when_allowed() {
        let mut pts = vec![p("keep", 2.0, 2.0, 100), p("f16", 1.0, 1.0, 50)];
        pts[1].lossy = true;
        assert_eq!(choose(&pts, Goal::Balanced, false).map(|c| c.0), Some(0));
        assert_eq!(choose(&pts, Goal::Balanced, true).map(|c| c.0), Some(1));
        assert_eq!(choose(&[], Goal::Balanced, true), None);
    }
}
