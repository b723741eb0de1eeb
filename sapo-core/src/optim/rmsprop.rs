//! RMSprop (Hinton's lecture 6e; centered form of Graves 2013), with the
//! arithmetic of `torch.optim.RMSprop`'s single-tensor path
//! (`foreach=False`, not capturable, `maximize=False`).
//!
//! With learning rate γ, gradient g and the caller's state s (square
//! average), ḡ (gradient average, centered only) and b (momentum buffer):
//!
//! ```text
//! g ← g + λ·θ                              coupled weight decay, when λ ≠ 0
//! s ← α·s + (1 − α)·g²
//! ḡ ← lerp(ḡ, g, 1 − α)                    centered only
//! d ← √(s − ḡ²) + ε   (centered)   or   √s + ε
//! b ← μ·b + g/d,  θ ← θ − γ·b              when μ > 0
//! θ ← θ − γ·g/d                            otherwise
//! ```
//!
//! Rounding follows torch on a CPU with FMA: α, 1 − α, λ, μ, ε and −γ are
//! rounded from `f64` to `f32`; `add(θ, alpha=λ)`, `addcmul_`, `lerp_` and
//! `add_(b, alpha=−γ)` round once through a fused multiply-add; the divisions
//! are true divisions; the square root is the correctly rounded one (torch's
//! MKL one is not: see [`super`]). Like torch, the centered form takes the square root of
//! `s − ḡ²` as rounded, which is never negative in exact arithmetic but could
//! round below 0 and give NaN when the gradient is nearly constant.

use super::{OptimError, addcmul, check_len, check_param, lerp};

/// Hyper-parameters of [`rmsprop_update`], torch's names and defaults.
///
/// ```
/// use sapo_core::optim::RmspropParams;
/// let hp = RmspropParams::default();
/// assert_eq!((hp.alpha, hp.eps, hp.weight_decay, hp.momentum, hp.centered), (0.99, 1e-8, 0.0, 0.0, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RmspropParams {
    /// α ∈ [0, 1): decay of the square average. Default 0.99. (torch accepts
    /// any α ≥ 0; α ≥ 1 never forgets and is refused here.)
    pub alpha: f64,
    /// ε > 0: added to the root of the square average. Default 1e-8.
    pub eps: f64,
    /// λ ≥ 0: coupled weight decay (L2 penalty added to the gradient). Default 0.
    pub weight_decay: f64,
    /// μ ∈ [0, 1): momentum; 0 applies the step directly. Default 0. (torch
    /// accepts any μ ≥ 0; μ ≥ 1 diverges and is refused here.)
    pub momentum: f64,
    /// Normalise by the estimated variance s − ḡ² instead of s. Default false.
    pub centered: bool,
}

impl Default for RmspropParams {
    fn default() -> Self {
        RmspropParams { alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl RmspropParams {
    /// torch's default learning rate for RMSprop, 1e-2.
    ///
    /// ```
    /// assert_eq!(sapo_core::optim::RmspropParams::DEFAULT_LR, 1e-2);
    /// ```
    pub const DEFAULT_LR: f64 = 1e-2;

    /// Checks the hyper-parameters against their ranges — the rule
    /// [`rmsprop_update`] applies — so a trainer can refuse a bad config
    /// before its first step.
    ///
    /// ```
    /// use sapo_core::optim::{OptimError, RmspropParams};
    /// let params = RmspropParams { alpha: 1.5, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false };
    /// assert!(matches!(params.check(), Err(OptimError::InvalidParameter { name: "alpha", .. })));
    /// ```
    ///
    /// # Errors
    /// [`OptimError::InvalidParameter`] naming the first bad parameter.
    pub fn check(&self) -> Result<(), OptimError> {
        self.check_for("rmsprop")
    }

    fn check_for(&self, op: &'static str) -> Result<(), OptimError> {
        let unit = |value: f64| (0.0..1.0).contains(&value);
        check_param(op, "alpha", self.alpha, unit(self.alpha), "α must lie in [0, 1)")?;
        check_param(op, "eps", self.eps, self.eps > 0.0, "ε must be positive")?;
        check_param(op, "weight_decay", self.weight_decay, self.weight_decay >= 0.0, "λ must be non-negative")?;
        check_param(op, "momentum", self.momentum, unit(self.momentum), "μ must lie in [0, 1)")
    }
}

/// The caller's RMSprop state for one parameter tensor, all zero before the
/// first step. Each slice has the parameters' length.
///
/// ```
/// use sapo_core::optim::RmspropState;
/// let mut square_avg = [0.0_f32; 4];
/// let mut momentum_buffer = [0.0_f32; 4];
/// // Momentum without centering: no gradient average is needed.
/// let state = RmspropState { square_avg: &mut square_avg, grad_avg: None, momentum_buffer: Some(&mut momentum_buffer) };
/// assert!(state.grad_avg.is_none());
/// ```
#[derive(Debug)]
pub struct RmspropState<'a> {
    /// s, the running average of g².
    pub square_avg: &'a mut [f32],
    /// ḡ, the running average of g; required when `centered`, ignored otherwise.
    pub grad_avg: Option<&'a mut [f32]>,
    /// b, the momentum buffer; required when `momentum > 0`, ignored otherwise.
    pub momentum_buffer: Option<&'a mut [f32]>,
}

/// The scalars of one RMSprop step, already rounded to `f32` as torch rounds
/// them: what a device kernel takes as arguments to compute the same update
/// as [`rmsprop_update`].
///
/// ```
/// use sapo_core::optim::{RmspropParams, RmspropStep};
/// let scalars = RmspropStep::new(1e-2, &RmspropParams::default())?;
/// assert_eq!(scalars.one_minus_alpha, (1.0 - 0.99_f64) as f32);
/// assert_eq!(scalars.neg_lr, -1e-2_f32);
/// # Ok::<(), sapo_core::optim::OptimError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropStep {
    /// λ; torch skips the decay term when λ = 0.
    pub weight_decay: f32,
    /// α.
    pub alpha: f32,
    /// `1 − α`, also the lerp weight of the gradient average.
    pub one_minus_alpha: f32,
    /// ε.
    pub eps: f32,
    /// μ; torch uses the momentum buffer only when μ > 0 (in `f64`).
    pub momentum: f32,
    /// −γ.
    pub neg_lr: f32,
}

impl RmspropStep {
    /// The scalars for a step at learning rate `lr`.
    ///
    /// ```
    /// use sapo_core::optim::{RmspropParams, RmspropStep};
    /// assert!(RmspropStep::new(-1.0, &RmspropParams::default()).is_err());
    /// ```
    ///
    /// # Errors
    /// [`OptimError::InvalidParameter`] for a negative or non-finite `lr` or
    /// a hyper-parameter out of range.
    pub fn new(lr: f64, hp: &RmspropParams) -> Result<Self, OptimError> {
        const OP: &str = "rmsprop_update";
        check_param(OP, "lr", lr, lr >= 0.0, "the learning rate must be non-negative")?;
        hp.check_for(OP)?;
        Ok(RmspropStep {
            weight_decay: hp.weight_decay as f32,
            alpha: hp.alpha as f32,
            one_minus_alpha: (1.0 - hp.alpha) as f32,
            eps: hp.eps as f32,
            momentum: hp.momentum as f32,
            neg_lr: (-lr) as f32,
        })
    }

    /// `g + λ·θ` (ATen's `grad.add(param, alpha=λ)`, one rounding).
    fn decayed_grad(&self, grad: f32, param: f32) -> f32 {
        super::fma(param, self.weight_decay, grad)
    }

    /// Updates s and returns the denominator √s + ε, or √(s − ḡ²) + ε after updating ḡ.
    fn denominator(&self, grad: f32, square_avg: &mut f32, grad_avg: Option<&mut f32>) -> f32 {
        *square_avg = addcmul(*square_avg * self.alpha, self.one_minus_alpha, grad, grad);
        let variance = match grad_avg {
            Some(grad_avg) => {
                *grad_avg = lerp(*grad_avg, grad, self.one_minus_alpha);
                addcmul(*square_avg, -1.0, *grad_avg, *grad_avg)
            }
            None => *square_avg,
        };
        super::sqrt(variance) + self.eps
    }

    /// Moves θ by −γ·g/d directly, or through the momentum buffer.
    fn apply(&self, param: &mut f32, grad: f32, denom: f32, momentum_buffer: Option<&mut f32>) {
        match momentum_buffer {
            Some(buffer) => {
                *buffer = *buffer * self.momentum + grad / denom;
                *param = super::fma(*buffer, self.neg_lr, *param);
            }
            None => *param += self.neg_lr * grad / denom,
        }
    }
}

/// Returns the state slice `slice` when `needed`, refusing a missing one.
fn required<'s>(
    slice: Option<&'s mut [f32]>,
    needed: bool,
    name: &'static str,
    reason: &'static str,
) -> Result<Option<&'s mut [f32]>, OptimError> {
    match (needed, slice) {
        (false, _) => Ok(None),
        (true, None) => Err(OptimError::MissingState { op: "rmsprop_update", slice: name, reason }),
        (true, Some(slice)) => Ok(Some(slice)),
    }
}

/// One RMSprop step over one parameter tensor (or a flat buffer), in place.
///
/// `lr` is this step's learning rate (see [`super::LrSchedule::learning_rate`]).
/// `grads` is only read: the weight-decay term is added to a copy, as torch does.
///
/// ```
/// use sapo_core::optim::{rmsprop_update, RmspropParams, RmspropState};
/// let mut weights = [1.0_f32, -1.0];
/// let mut square_avg = [0.0_f32; 2];
/// let state = RmspropState { square_avg: &mut square_avg, grad_avg: None, momentum_buffer: None };
/// rmsprop_update(&mut weights, &[0.5, -0.5], state, 1e-2, &RmspropParams::default())?;
/// // First step: s = 0.01·g², so θ moves by γ·g/(0.1·|g|) = 10·γ against g.
/// assert!((weights[0] - 0.9).abs() < 1e-6 && (weights[1] + 0.9).abs() < 1e-6);
/// # Ok::<(), sapo_core::optim::OptimError>(())
/// ```
///
/// # Errors
/// [`OptimError::LengthMismatch`] naming a slice (a given state slice included)
/// whose length differs from `params`; [`OptimError::MissingState`] when
/// `centered` lacks `grad_avg` or `momentum > 0` lacks `momentum_buffer`; the
/// errors of [`RmspropStep::new`]. Nothing is written then.
pub fn rmsprop_update(
    params: &mut [f32],
    grads: &[f32],
    state: RmspropState<'_>,
    lr: f64,
    hp: &RmspropParams,
) -> Result<(), OptimError> {
    const OP: &str = "rmsprop_update";
    let n = params.len();
    check_len(OP, "grads", n, grads.len())?;
    check_len(OP, "square_avg", n, state.square_avg.len())?;
    if let Some(grad_avg) = &state.grad_avg {
        check_len(OP, "grad_avg", n, grad_avg.len())?;
    }
    if let Some(buffer) = &state.momentum_buffer {
        check_len(OP, "momentum_buffer", n, buffer.len())?;
    }
    let scalars = RmspropStep::new(lr, hp)?;
    let mut grad_avg = required(state.grad_avg, hp.centered, "grad_avg", "centered is true")?;
    let mut momentum_buffer = required(state.momentum_buffer, hp.momentum > 0.0, "momentum_buffer", "momentum > 0")?;
    for i in 0..n {
        let grad = if hp.weight_decay != 0.0 { scalars.decayed_grad(grads[i], params[i]) } else { grads[i] };
        let grad_avg_i = grad_avg.as_deref_mut().map(|slice| &mut slice[i]);
        let denom = scalars.denominator(grad, &mut state.square_avg[i], grad_avg_i);
        let buffer_i = momentum_buffer.as_deref_mut().map(|slice| &mut slice[i]);
        scalars.apply(&mut params[i], grad, denom, buffer_i);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SapoRng;
    use alloc::vec;
    use alloc::vec::Vec;

    /// The textbook RMSprop step in f64: state (s, ḡ, b) per element.
    fn reference_step(theta: &mut [f64], grads: &[f32], state: &mut [[f64; 3]], lr: f64, hp: &RmspropParams) {
        for i in 0..theta.len() {
            let g = f64::from(grads[i]) + hp.weight_decay * theta[i];
            let [s, mean, buffer] = &mut state[i];
            *s = hp.alpha * *s + (1.0 - hp.alpha) * g * g;
            *mean = hp.alpha * *mean + (1.0 - hp.alpha) * g;
            let variance = if hp.centered { *s - *mean * *mean } else { *s };
            let denom = variance.sqrt() + hp.eps;
            if hp.momentum > 0.0 {
                *buffer = hp.momentum * *buffer + g / denom;
                theta[i] -= lr * *buffer;
            } else {
                theta[i] -= lr * g / denom;
            }
        }
    }

    #[test]
    fn thirty_steps_track_the_f64_formula_in_every_configuration() {
        for (seed, centered, momentum, weight_decay) in
            [(21_u64, false, 0.0, 0.0), (22, true, 0.0, 0.1), (23, false, 0.9, 0.1), (24, true, 0.5, 0.0)]
        {
            let hp = RmspropParams { alpha: 0.9, eps: 1e-8, weight_decay, momentum, centered };
            let mut rng = SapoRng::from_seed_u64(seed);
            let mut params: Vec<f32> = (0..41).map(|_| rng.standard_normal() as f32).collect();
            let mut theta: Vec<f64> = params.iter().map(|&p| f64::from(p)).collect();
            let (mut square_avg, mut grad_avg, mut buffer) = (vec![0.0_f32; 41], vec![0.0_f32; 41], vec![0.0_f32; 41]);
            let mut reference_state = vec![[0.0; 3]; 41];
            for _ in 0..30 {
                let grads: Vec<f32> = (0..41).map(|_| (0.1 * rng.standard_normal()) as f32).collect();
                let state = RmspropState {
                    square_avg: &mut square_avg,
                    grad_avg: Some(&mut grad_avg),
                    momentum_buffer: Some(&mut buffer),
                };
                rmsprop_update(&mut params, &grads, state, 1e-3, &hp).expect("valid");
                reference_step(&mut theta, &grads, &mut reference_state, 1e-3, &hp);
            }
            // f32 rounding over 30 steps of size ≤ 10·γ: an absolute 1e-5 on weights of order 1.
            for i in 0..params.len() {
                assert!((f64::from(params[i]) - theta[i]).abs() < 1e-5, "seed {seed}, element {i}");
            }
        }
    }

    #[test]
    fn missing_state_is_named_and_nothing_is_written() {
        let mut params = [1.0_f32; 3];
        let mut square_avg = [0.0_f32; 3];
        let centered = RmspropParams { centered: true, ..RmspropParams::default() };
        let state = RmspropState { square_avg: &mut square_avg, grad_avg: None, momentum_buffer: None };
        assert_eq!(
            rmsprop_update(&mut params, &[0.1; 3], state, 1e-2, &centered),
            Err(OptimError::MissingState { op: "rmsprop_update", slice: "grad_avg", reason: "centered is true" })
        );
        let with_momentum = RmspropParams { momentum: 0.9, ..RmspropParams::default() };
        let state = RmspropState { square_avg: &mut square_avg, grad_avg: None, momentum_buffer: None };
        let result = rmsprop_update(&mut params, &[0.1; 3], state, 1e-2, &with_momentum);
        assert!(matches!(result, Err(OptimError::MissingState { slice: "momentum_buffer", .. })));
        assert_eq!((params, square_avg), ([1.0; 3], [0.0; 3]));
    }

    #[test]
    fn mismatched_slices_are_named_even_when_unused() {
        let mut params = [1.0_f32; 3];
        let (mut square_avg, mut short) = ([0.0_f32; 3], [0.0_f32; 2]);
        let hp = RmspropParams::default();
        let slice = |result: Result<(), OptimError>| match result {
            Err(OptimError::LengthMismatch { slice, expected: 3, got: 2, .. }) => slice,
            other => panic!("expected a length mismatch, got {other:?}"),
        };
        let state = RmspropState { square_avg: &mut square_avg, grad_avg: None, momentum_buffer: None };
        assert_eq!(slice(rmsprop_update(&mut params, &[0.1; 2], state, 1e-2, &hp)), "grads");
        let state = RmspropState { square_avg: &mut short, grad_avg: None, momentum_buffer: None };
        assert_eq!(slice(rmsprop_update(&mut params, &[0.1; 3], state, 1e-2, &hp)), "square_avg");
        let state = RmspropState { square_avg: &mut square_avg, grad_avg: Some(&mut short), momentum_buffer: None };
        assert_eq!(slice(rmsprop_update(&mut params, &[0.1; 3], state, 1e-2, &hp)), "grad_avg");
        assert_eq!(params, [1.0; 3]);
    }

    #[test]
    fn invalid_hyper_parameters_are_refused() {
        let default = RmspropParams::default();
        let name = |lr: f64, hp: RmspropParams| match RmspropStep::new(lr, &hp) {
            Err(OptimError::InvalidParameter { name, .. }) => name,
            other => panic!("expected an invalid parameter, got {other:?}"),
        };
        assert_eq!(name(f64::INFINITY, default), "lr");
        assert_eq!(name(1e-2, RmspropParams { alpha: 1.0, ..default }), "alpha");
        assert_eq!(name(1e-2, RmspropParams { eps: -1e-8, ..default }), "eps");
        assert_eq!(name(1e-2, RmspropParams { weight_decay: f64::NAN, ..default }), "weight_decay");
        assert_eq!(name(1e-2, RmspropParams { momentum: 1.5, ..default }), "momentum");
    }
}
