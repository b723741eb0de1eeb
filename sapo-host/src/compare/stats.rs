//! Mean and 95% confidence interval over seeds (Student's t, because five
//! seeds are far too few for the normal approximation).

/// Two-sided 97.5% quantiles of Student's t for 1–30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// The mean of a sample and the half-width of its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% t interval of the mean; `None` for one value.
    pub half_width: Option<f64>,
    /// Sample size.
    pub n: usize,
}

/// Mean ± t(0.975, n−1)·s/√n of `values` (`None` when empty).
///
/// ```
/// use sapo_host::compare::mean_interval;
/// let estimate = mean_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
/// assert_eq!(estimate.mean, 3.0);
/// // s = √2.5, t(0.975, 4) = 2.776
/// assert!((estimate.half_width.unwrap() - 2.776 * (2.5f64 / 5.0).sqrt()).abs() < 1e-12);
/// ```
pub fn mean_interval(values: &[f64]) -> Option<Estimate> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let half_width = (n > 1).then(|| {
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let t = T_975.get(n - 2).copied().unwrap_or(1.960);
        t * (variance / n as f64).sqrt()
    });
    Some(Estimate { mean, half_width, n })
}

impl Estimate {
    /// `mean ± half` with `digits` decimals after scaling by `scale`
    /// (100 for percentages); one value prints alone.
    pub fn format(&self, scale: f64, digits: usize) -> String {
        match self.half_width {
            Some(half) => format!("{:.digits$} ± {:.digits$}", scale * self.mean, scale * half),
            None => format!("{:.digits$}", scale * self.mean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_matches_scipy() {
        // scipy.stats.t.interval(0.95, 2, loc=mean, scale=sem) for [0.2, 0.25, 0.3]: half-width 0.124211
        let estimate = mean_interval(&[0.2, 0.25, 0.3]).unwrap();
        assert!((estimate.mean - 0.25).abs() < 1e-15);
        assert!((estimate.half_width.unwrap() - 0.124_211).abs() < 1e-5);
        assert_eq!(mean_interval(&[0.5]).unwrap().half_width, None);
        assert_eq!(mean_interval(&[]), None);
        assert_eq!(mean_interval(&[0.25, 0.25]).unwrap().format(100.0, 1), "25.0 ± 0.0");
    }
}
