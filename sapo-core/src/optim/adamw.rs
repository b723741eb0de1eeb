//! AdamW (Loshchilov & Hutter), with the arithmetic of `torch.optim.AdamW`'s
//! single-tensor path (`foreach=False`, not fused, not capturable,
//! `amsgrad=False`, `maximize=False`).
//!
//! For step t (counted from 1), learning rate γ, gradient g:
//!
//! ```text
//! θ ← θ·(1 − γλ)                          decoupled weight decay, first
//! m ← lerp(m, g, 1 − β1)                  = β1·m + (1 − β1)·g
//! v ← β2·v + (1 − β2)·g²
//! θ ← θ − (γ / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! Rounding follows torch on a CPU with FMA: `1 − γλ`, `1 − β1`, `1 − β2`,
//! `γ / (1 − β1^t)` and `√(1 − β2^t)` are computed in `f64` (Python floats)
//! and rounded to `f32`; `lerp_` and `addcmul_` round once through a fused
//! multiply-add; `√v` is the correctly rounded square root (torch's MKL one
//! is not: see [`super`]); `√v / √(1 − β2^t)` is a true division, then `+ ε`,
//! then `θ + (−step_size·m) / denom` (ATen's `addcdiv_`).

use super::{OptimError, addcmul, check_len, check_param, lerp};

/// Hyper-parameters of [`adamw_update`], torch's names and defaults.
///
/// ```
/// use sapo_core::optim::AdamWParams;
/// let hp = AdamWParams::default();
/// assert_eq!((hp.beta1, hp.beta2, hp.eps, hp.weight_decay), (0.9, 0.999, 1e-8, 0.01));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    /// β1 ∈ [0, 1): decay of the first-moment average m. Default 0.9.
    pub beta1: f64,
    /// β2 ∈ [0, 1): decay of the second-moment average v. Default 0.999.
    pub beta2: f64,
    /// ε > 0: added to the bias-corrected √v. Default 1e-8. (torch also
    /// accepts 0, which divides 0 by 0 for a weight whose gradients were all 0.)
    pub eps: f64,
    /// λ ≥ 0: decoupled weight decay; each step scales θ by 1 − γλ.
    /// Default 0.01 (torch's; transformers' `TrainingArguments` defaults to 0).
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

impl AdamWParams {
    /// torch's default learning rate for AdamW, 1e-3.
    ///
    /// ```
    /// assert_eq!(sapo_core::optim::AdamWParams::DEFAULT_LR, 1e-3);
    /// ```
    pub const DEFAULT_LR: f64 = 1e-3;

    /// Checks the hyper-parameters against their ranges — the rule
    /// [`adamw_update`] applies — so a trainer can refuse a bad config
    /// before its first step.
    ///
    /// ```
    /// use sapo_core::optim::{AdamWParams, OptimError};
    /// let params = AdamWParams { beta1: 0.9, beta2: 1.0, eps: 1e-8, weight_decay: 0.0 };
    /// assert!(matches!(params.check(), Err(OptimError::InvalidParameter { name: "beta2", .. })));
    /// ```
    ///
    /// # Errors
    /// [`OptimError::InvalidParameter`] naming the first bad parameter.
    pub fn check(&self) -> Result<(), OptimError> {
        self.check_for("adamw")
    }

    fn check_for(&self, op: &'static str) -> Result<(), OptimError> {
        let unit = |value: f64| (0.0..1.0).contains(&value);
        check_param(op, "beta1", self.beta1, unit(self.beta1), "β1 must lie in [0, 1)")?;
        check_param(op, "beta2", self.beta2, unit(self.beta2), "β2 must lie in [0, 1)")?;
        check_param(op, "eps", self.eps, self.eps > 0.0, "ε must be positive")?;
        check_param(op, "weight_decay", self.weight_decay, self.weight_decay >= 0.0, "λ must be non-negative")
    }
}

/// The scalars of one AdamW step, already rounded to `f32` as torch rounds
/// them: what a device kernel takes as arguments to compute the same update
/// as [`adamw_update`].
///
/// ```
/// use sapo_core::optim::{AdamWParams, AdamWStep};
/// let scalars = AdamWStep::new(1, 1e-3, &AdamWParams::default())?;
/// // At t = 1 the bias-corrected step is lr / (1 − β1) = 1e-2.
/// assert_eq!(scalars.neg_step_size, -(1e-3_f64 / (1.0 - 0.9)) as f32);
/// assert_eq!(scalars.weight_decay_factor, (1.0 - 1e-3 * 0.01) as f32);
/// # Ok::<(), sapo_core::optim::OptimError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// `1 − γλ`; multiplying by it is exact when λ = 0, where torch skips it.
    pub weight_decay_factor: f32,
    /// `1 − β1`, the lerp weight of the first moment.
    pub one_minus_beta1: f32,
    /// β2.
    pub beta2: f32,
    /// `1 − β2`.
    pub one_minus_beta2: f32,
    /// `√(1 − β2^t)`.
    pub bias_correction2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// `−γ / (1 − β1^t)`.
    pub neg_step_size: f32,
}

impl AdamWStep {
    /// The scalars for step `step` (1-based, counting this update) at learning rate `lr`.
    ///
    /// ```
    /// use sapo_core::optim::{AdamWParams, AdamWStep, OptimError};
    /// assert_eq!(AdamWStep::new(0, 1e-3, &AdamWParams::default()), Err(OptimError::ZeroStep { op: "adamw_update" }));
    /// ```
    ///
    /// # Errors
    /// [`OptimError::ZeroStep`], or [`OptimError::InvalidParameter`] for a
    /// negative or non-finite `lr` or a hyper-parameter out of range.
    pub fn new(step: u64, lr: f64, hp: &AdamWParams) -> Result<Self, OptimError> {
        const OP: &str = "adamw_update";
        if step == 0 {
            return Err(OptimError::ZeroStep { op: OP });
        }
        check_param(OP, "lr", lr, lr >= 0.0, "the learning rate must be non-negative")?;
        hp.check_for(OP)?;
        // torch reads the step from a float32 tensor as a Python float, exact up to 2²⁴.
        let step = step as f64;
        let bias_correction1 = 1.0 - libm::pow(hp.beta1, step);
        let bias_correction2 = 1.0 - libm::pow(hp.beta2, step);
        Ok(AdamWStep {
            weight_decay_factor: (1.0 - lr * hp.weight_decay) as f32,
            one_minus_beta1: (1.0 - hp.beta1) as f32,
            beta2: hp.beta2 as f32,
            one_minus_beta2: (1.0 - hp.beta2) as f32,
            // torch writes `bias_correction2 ** 0.5`; pow(x, 0.5) and sqrt(x) agree to the
            // f64 ulp, far below the f32 rounding that follows.
            bias_correction2_sqrt: libm::sqrt(bias_correction2) as f32,
            eps: hp.eps as f32,
            neg_step_size: (-(lr / bias_correction1)) as f32,
        })
    }

    /// One element of the update, in torch's order of `f32` operations.
    fn apply(&self, param: &mut f32, grad: f32, exp_avg: &mut f32, exp_avg_sq: &mut f32) {
        *param *= self.weight_decay_factor;
        *exp_avg = lerp(*exp_avg, grad, self.one_minus_beta1);
        *exp_avg_sq = addcmul(*exp_avg_sq * self.beta2, self.one_minus_beta2, grad, grad);
        let denom = super::sqrt(*exp_avg_sq) / self.bias_correction2_sqrt + self.eps;
        *param += self.neg_step_size * *exp_avg / denom;
    }
}

/// One AdamW step over one parameter tensor (or a flat buffer), in place.
///
/// `exp_avg` (m) and `exp_avg_sq` (v) are the caller's state, zero before
/// the first step; `step` counts updates from 1, including this one; `lr` is
/// this step's learning rate (see [`super::LrSchedule::learning_rate`]).
///
/// ```
/// use sapo_core::optim::{adamw_update, AdamWParams};
/// let hp = AdamWParams { weight_decay: 0.0, ..AdamWParams::default() };
/// let mut weights = [1.0_f32, -2.0];
/// let (mut exp_avg, mut exp_avg_sq) = ([0.0_f32; 2], [0.0_f32; 2]);
/// adamw_update(&mut weights, &[0.5, -0.25], &mut exp_avg, &mut exp_avg_sq, 1, 0.1, &hp)?;
/// // The first step is lr·g/(|g| + ε): a step of 0.1 against each gradient.
/// assert!((weights[0] - 0.9).abs() < 1e-6 && (weights[1] + 1.9).abs() < 1e-6);
/// assert_eq!(exp_avg, [0.05, -0.025]);
/// # Ok::<(), sapo_core::optim::OptimError>(())
/// ```
///
/// # Errors
/// [`OptimError::LengthMismatch`] naming the slice that differs from
/// `params`, and the errors of [`AdamWStep::new`]. Nothing is written then.
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    step: u64,
    lr: f64,
    hp: &AdamWParams,
) -> Result<(), OptimError> {
    const OP: &str = "adamw_update";
    check_len(OP, "grads", params.len(), grads.len())?;
    check_len(OP, "exp_avg", params.len(), exp_avg.len())?;
    check_len(OP, "exp_avg_sq", params.len(), exp_avg_sq.len())?;
    let scalars = AdamWStep::new(step, lr, hp)?;
    for (((param, &grad), first), second) in params.iter_mut().zip(grads).zip(exp_avg).zip(exp_avg_sq) {
        scalars.apply(param, grad, first, second);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SapoRng;
    use alloc::vec::Vec;

    fn random(rng: &mut SapoRng, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (scale * rng.standard_normal()) as f32).collect()
    }

    /// The textbook AdamW step in f64, for comparison with the f32 path.
    fn reference_step(
        theta: &mut [f64],
        grads: &[f32],
        m: &mut [f64],
        v: &mut [f64],
        t: i32,
        lr: f64,
        hp: &AdamWParams,
    ) {
        for i in 0..theta.len() {
            let g = f64::from(grads[i]);
            theta[i] *= 1.0 - lr * hp.weight_decay;
            m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
            v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
            let m_hat = m[i] / (1.0 - hp.beta1.powi(t));
            let v_hat = v[i] / (1.0 - hp.beta2.powi(t));
            theta[i] -= lr * m_hat / (v_hat.sqrt() + hp.eps);
        }
    }

    #[test]
    fn thirty_steps_track_the_f64_formula_for_both_lerp_branches() {
        for (seed, beta1) in [(11_u64, 0.9), (12, 0.3)] {
            let hp = AdamWParams { beta1, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
            let mut rng = SapoRng::from_seed_u64(seed);
            let mut params = random(&mut rng, 53, 1.0);
            let mut theta: Vec<f64> = params.iter().map(|&p| f64::from(p)).collect();
            let (mut m, mut v) = (alloc::vec![0.0_f32; 53], alloc::vec![0.0_f32; 53]);
            let (mut m64, mut v64) = (alloc::vec![0.0; 53], alloc::vec![0.0; 53]);
            for t in 1..=30 {
                let grads = random(&mut rng, 53, 0.1);
                adamw_update(&mut params, &grads, &mut m, &mut v, t, 1e-2, &hp).expect("valid");
                reference_step(&mut theta, &grads, &mut m64, &mut v64, t as i32, 1e-2, &hp);
            }
            // f32 rounding of m, v and θ over 30 steps: an absolute 1e-5 on weights of order 1.
            for i in 0..params.len() {
                assert!((f64::from(params[i]) - theta[i]).abs() < 1e-5, "seed {seed}, element {i}");
            }
        }
    }

    #[test]
    fn zero_learning_rate_updates_the_moments_but_not_the_weights() {
        let mut params = [1.5_f32, -0.5];
        let (mut m, mut v) = ([0.0_f32; 2], [0.0_f32; 2]);
        adamw_update(&mut params, &[1.0, 2.0], &mut m, &mut v, 1, 0.0, &AdamWParams::default()).expect("valid");
        assert_eq!(params, [1.5, -0.5]);
        assert_eq!(m, [(1.0 - 0.9_f64) as f32, 2.0 * (1.0 - 0.9_f64) as f32]);
    }

    #[test]
    fn each_mismatched_slice_is_named_and_nothing_is_written() {
        let hp = AdamWParams::default();
        let mut params = [1.0_f32; 4];
        let (mut m, mut v, mut short) = ([0.0_f32; 4], [0.0_f32; 4], [0.0_f32; 3]);
        let slice = |result: Result<(), OptimError>| match result {
            Err(OptimError::LengthMismatch { slice, expected: 4, got: 3, .. }) => slice,
            other => panic!("expected a length mismatch, got {other:?}"),
        };
        assert_eq!(slice(adamw_update(&mut params, &[0.0; 3], &mut m, &mut v, 1, 1e-3, &hp)), "grads");
        assert_eq!(slice(adamw_update(&mut params, &[0.0; 4], &mut short, &mut v, 1, 1e-3, &hp)), "exp_avg");
        assert_eq!(slice(adamw_update(&mut params, &[0.0; 4], &mut m, &mut short, 1, 1e-3, &hp)), "exp_avg_sq");
        assert_eq!(params, [1.0; 4]);
    }

    #[test]
    fn step_zero_and_invalid_hyper_parameters_are_refused_without_writing() {
        let mut params = [1.0_f32; 2];
        let (mut m, mut v) = ([0.0_f32; 2], [0.0_f32; 2]);
        let mut run =
            |step: u64, lr: f64, hp: AdamWParams| adamw_update(&mut params, &[0.5; 2], &mut m, &mut v, step, lr, &hp);
        let default = AdamWParams::default();
        assert_eq!(run(0, 1e-3, default), Err(OptimError::ZeroStep { op: "adamw_update" }));
        let name = |result: Result<(), OptimError>| match result {
            Err(OptimError::InvalidParameter { name, .. }) => name,
            other => panic!("expected an invalid parameter, got {other:?}"),
        };
        assert_eq!(name(run(1, -1e-3, default)), "lr");
        assert_eq!(name(run(1, f64::NAN, default)), "lr");
        assert_eq!(name(run(1, 1e-3, AdamWParams { beta1: 1.0, ..default })), "beta1");
        assert_eq!(name(run(1, 1e-3, AdamWParams { beta1: -0.1, ..default })), "beta1");
        assert_eq!(name(run(1, 1e-3, AdamWParams { beta2: f64::INFINITY, ..default })), "beta2");
        assert_eq!(name(run(1, 1e-3, AdamWParams { eps: 0.0, ..default })), "eps");
        assert_eq!(name(run(1, 1e-3, AdamWParams { weight_decay: -0.01, ..default })), "weight_decay");
        assert_eq!((params, m, v), ([1.0; 2], [0.0; 2], [0.0; 2]));
    }
}
