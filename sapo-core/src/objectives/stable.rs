//! Numerically stable scalar building blocks shared by the objectives.
//!
//! Every function here is finite for every finite argument; the tests at the
//! bottom check the extreme regimes the objectives rely on.

/// `softplus(x) = ln(1 + eˣ)`, as `max(x, 0) + ln1p(e^{−|x|})` so that
/// neither branch overflows.
///
/// ```
/// use sapo_core::objectives::stable::softplus;
/// assert_eq!(softplus(1e4), 1e4);
/// assert!(softplus(-1e4) >= 0.0 && softplus(-1e4) < 1e-300);
/// ```
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + libm::log1p(libm::exp(-x.abs()))
}

/// `logσ(x) = −softplus(−x)` (docs/algorithms.md, notation).
///
/// ```
/// use sapo_core::objectives::stable::log_sigmoid;
/// assert!((log_sigmoid(0.0) + core::f64::consts::LN_2).abs() < 1e-15);
/// assert_eq!(log_sigmoid(-1e4), -1e4);
/// ```
pub fn log_sigmoid(x: f64) -> f64 {
    -softplus(-x)
}

/// The logistic sigmoid `σ(x) = 1 / (1 + e^{−x})`, evaluated on the side
/// where the exponential cannot overflow.
///
/// ```
/// use sapo_core::objectives::stable::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert_eq!(sigmoid(1e4), 1.0);
/// assert_eq!(sigmoid(-1e4), 0.0);
/// ```
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}

/// The largest argument [`log1mexp`] evaluates exactly; larger ones (a mean
/// log-probability that rounds to 0 or above) are clamped to it.
///
/// This is sapo's deliberate deviation from TRL, whose ORPO gives −∞ and then
/// NaN for a response the model predicts with probability 1
/// (docs/algorithms.md, `orpo`).
pub const LOG1MEXP_MAX_ARG: f64 = -1e-7;

/// `log1mexp(x) = ln(1 − eˣ)` for `x < 0`, after clamping `x` to at most
/// [`LOG1MEXP_MAX_ARG`]: `ln(−expm1(x))` when `x > −ln 2`, else
/// `ln1p(−eˣ)` (Mächler's rule: each branch where it loses no digits).
///
/// ```
/// use sapo_core::objectives::stable::log1mexp;
/// assert!((log1mexp(-1.0) - (1.0 - (-1.0_f64).exp()).ln()).abs() < 1e-15);
/// assert!(log1mexp(0.0).is_finite());
/// assert_eq!(log1mexp(-1e4), 0.0);
/// ```
pub fn log1mexp(x: f64) -> f64 {
    let x = x.min(LOG1MEXP_MAX_ARG);
    if x > -core::f64::consts::LN_2 { libm::log(-libm::expm1(x)) } else { libm::log1p(-libm::exp(x)) }
}

/// `d/dx log1mexp(x) = −eˣ / (1 − eˣ) = −1 / expm1(−x)`; zero where the
/// argument is clamped (the clamp is flat there), as autograd would give.
///
/// ```
/// use sapo_core::objectives::stable::log1mexp_grad;
/// let x = -0.3_f64;
/// assert!((log1mexp_grad(x) + x.exp() / (1.0 - x.exp())).abs() < 1e-12);
/// assert_eq!(log1mexp_grad(0.0), 0.0);
/// ```
pub fn log1mexp_grad(x: f64) -> f64 {
    if x > LOG1MEXP_MAX_ARG { 0.0 } else { -1.0 / libm::expm1(-x) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_halves_sum_to_one_at_extremes() {
        for &x in &[-745.0, -50.0, -1e-3, 0.0, 1e-3, 50.0, 745.0, 1e4, -1e4] {
            let total = sigmoid(x) + sigmoid(-x);
            assert!((total - 1.0).abs() < 1e-15, "x={x} total={total}");
        }
    }

    #[test]
    fn log1mexp_matches_direct_formula_away_from_cancellation() {
        for &x in &[-0.01, -0.5, -0.69, -0.7, -2.0, -30.0] {
            let direct = (1.0 - libm::exp(x)).ln();
            assert!((log1mexp(x) - direct).abs() <= 1e-10 * direct.abs().max(1.0), "x={x}");
        }
    }

    #[test]
    fn log1mexp_is_finite_at_and_above_zero() {
        for &x in &[0.0, 1e-300, 1e-12, 3.0] {
            assert!(log1mexp(x).is_finite());
            assert_eq!(log1mexp_grad(x), 0.0);
        }
    }
}
