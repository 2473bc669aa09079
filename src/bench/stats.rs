//! Mean and sample standard deviation of repeated runs.

use serde::Serialize;

/// Mean ± sample standard deviation (n - 1 in the denominator; 0 for one run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MeanStd {
    /// Mean of the values.
    pub mean: f64,
    /// Sample standard deviation (0 for fewer than two values).
    pub std: f64,
    /// Number of values.
    pub n: usize,
}

impl MeanStd {
    /// Mean and sample standard deviation of `values` (all zero for none).
    pub fn of(values: &[f64]) -> MeanStd {
        let n = values.len();
        if n == 0 {
            return MeanStd::default();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        MeanStd { mean, std, n }
    }

    /// "1.23 ± 0.04" with `decimals` places.
    pub fn display(&self, decimals: usize) -> String {
        format!("{:.*} ± {:.*}", decimals, self.mean, decimals, self.std)
    }
}

/// How much lower (better) `value` is than `baseline`, in percent of the
/// baseline: +50 means half the baseline's time, -100 twice it.
pub fn improvement_pct(baseline: f64, value: f64) -> Option<f64> {
    (baseline > 0.0).then(|| (baseline - value) / baseline * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_std_uses_n_minus_one() {
        let m = MeanStd::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.mean, 5.0);
        assert!((m.std - 2.138_089_935).abs() < 1e-6, "{}", m.std);
        assert_eq!(MeanStd::of(&[3.0]).std, 0.0);
        assert_eq!(m.display(2), "5.00 ± 2.14");
    }

    #[test]
    fn improvement_is_relative_to_the_baseline() {
        assert_eq!(improvement_pct(10.0, 5.0), Some(50.0));
        assert_eq!(improvement_pct(10.0, 20.0), Some(-100.0));
        assert_eq!(improvement_pct(0.0, 1.0), None);
    }
}
