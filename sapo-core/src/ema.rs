//! The exponential moving average of the policy's weights, and the copy
//! that refreshes the reference model (docs/algorithms.md, SAPO step 1 and 4).
//!
//! ```text
//! θ_ema ← β·θ_ema + (1−β)·θ
//! ```
//!
//! `f32` weights are updated in `f32` and `f64` in `f64`. `bf16` and `f16`
//! weights are widened to `f32`, updated there, and rounded back to nearest
//! (ties to even) — the same arithmetic a GPU kernel does, so the two
//! backends can be compared bit for bit. The half types are processed in
//! fixed chunks through stack buffers: no allocation, whatever the model size.

use half::{bf16, f16};

/// Why an EMA update or a reference refresh was refused.
///
/// ```
/// use sapo_core::ema::{ema_update, EmaError};
/// let mut ema = [0.0_f64; 2];
/// assert_eq!(ema_update(&mut ema, &[1.0, 1.0], 2.0), Err(EmaError::InvalidDecay(2.0)));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmaError {
    /// The two weight slices differ in length.
    #[error("{op}: destination has {destination_len} weights, source has {source_len}")]
    LengthMismatch {
        /// `ema_update` or `refresh_reference`.
        op: &'static str,
        /// Length of the slice written.
        destination_len: usize,
        /// Length of the slice read.
        source_len: usize,
    },
    /// β is not a finite number in `[0, 1]`.
    #[error("ema_update: decay β = {0} must lie in [0, 1]")]
    InvalidDecay(f64),
}

/// A weight type the EMA can update: `f32`, `f64`, `bf16`, `f16`.
///
/// ```
/// use sapo_core::ema::{ema_update, EmaWeight};
/// fn decay_all<W: EmaWeight>(ema: &mut [W], params: &[W]) {
///     ema_update(ema, params, 0.5).expect("equal lengths, valid β");
/// }
/// let mut ema = [half::f16::from_f32(2.0)];
/// decay_all(&mut ema, &[half::f16::from_f32(4.0)]);
/// assert_eq!(ema[0].to_f32(), 3.0);
/// ```
pub trait EmaWeight: Copy + sealed::Sealed {
    /// `ema[i] ← decay·ema[i] + (1−decay)·params[i]` over equal-length slices.
    #[doc(hidden)]
    fn update_slices(ema: &mut [Self], params: &[Self], decay: f64);
}

/// Elements widened per chunk for the half types (two 2 KiB stack buffers).
const HALF_CHUNK: usize = 512;

impl EmaWeight for f32 {
    fn update_slices(ema: &mut [Self], params: &[Self], decay: f64) {
        let decay = decay as f32;
        let keep = 1.0 - decay;
        for (average, &weight) in ema.iter_mut().zip(params) {
            *average = decay * *average + keep * weight;
        }
    }
}

impl EmaWeight for f64 {
    fn update_slices(ema: &mut [Self], params: &[Self], decay: f64) {
        let keep = 1.0 - decay;
        for (average, &weight) in ema.iter_mut().zip(params) {
            *average = decay * *average + keep * weight;
        }
    }
}

macro_rules! half_ema {
    ($half:ty) => {
        impl EmaWeight for $half {
            fn update_slices(ema: &mut [Self], params: &[Self], decay: f64) {
                use half::slice::HalfFloatSliceExt;
                let mut wide_ema = [0f32; HALF_CHUNK];
                let mut wide_params = [0f32; HALF_CHUNK];
                for (ema_chunk, params_chunk) in ema.chunks_mut(HALF_CHUNK).zip(params.chunks(HALF_CHUNK)) {
                    let n = ema_chunk.len();
                    ema_chunk.convert_to_f32_slice(&mut wide_ema[..n]);
                    params_chunk.convert_to_f32_slice(&mut wide_params[..n]);
                    f32::update_slices(&mut wide_ema[..n], &wide_params[..n], decay);
                    ema_chunk.convert_from_f32_slice(&wide_ema[..n]);
                }
            }
        }
    };
}
half_ema!(bf16);
half_ema!(f16);

/// `θ_ema ← β·θ_ema + (1−β)·θ`, elementwise, in place.
///
/// Call it once per optimizer step, before sampling (SAPO's order), for each
/// parameter tensor of the model, or once over one flat buffer.
///
/// ```
/// use sapo_core::ema::ema_update;
/// use half::bf16;
/// let mut ema = [1.0_f32, 2.0];
/// ema_update(&mut ema, &[3.0, 4.0], 0.5)?;
/// assert_eq!(ema, [2.0, 3.0]);
///
/// let mut ema = [bf16::from_f32(1.0)];
/// ema_update(&mut ema, &[bf16::from_f32(2.0)], 0.5)?;
/// assert_eq!(ema[0].to_f32(), 1.5);
/// # Ok::<(), sapo_core::ema::EmaError>(())
/// ```
///
/// # Errors
/// [`EmaError::LengthMismatch`] for slices of different lengths (nothing is
/// written), [`EmaError::InvalidDecay`] for β outside `[0, 1]`.
pub fn ema_update<W: EmaWeight>(ema: &mut [W], params: &[W], decay: f64) -> Result<(), EmaError> {
    if !(0.0..=1.0).contains(&decay) {
        return Err(EmaError::InvalidDecay(decay));
    }
    if ema.len() != params.len() {
        return Err(EmaError::LengthMismatch {
            op: "ema_update",
            destination_len: ema.len(),
            source_len: params.len(),
        });
    }
    W::update_slices(ema, params, decay);
    Ok(())
}

/// Copies `source` (the EMA or the policy weights) into `reference`: SAPO's
/// reference refresh every R steps.
///
/// ```
/// use sapo_core::ema::refresh_reference;
/// let mut reference = [0.0_f32; 3];
/// refresh_reference(&mut reference, &[1.0, 2.0, 3.0])?;
/// assert_eq!(reference, [1.0, 2.0, 3.0]);
/// # Ok::<(), sapo_core::ema::EmaError>(())
/// ```
///
/// # Errors
/// [`EmaError::LengthMismatch`]; nothing is written then.
pub fn refresh_reference<W: Copy>(reference: &mut [W], source: &[W]) -> Result<(), EmaError> {
    if reference.len() != source.len() {
        return Err(EmaError::LengthMismatch {
            op: "refresh_reference",
            destination_len: reference.len(),
            source_len: source.len(),
        });
    }
    reference.copy_from_slice(source);
    Ok(())
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SapoRng;
    use alloc::vec::Vec;

    fn random_weights(rng: &mut SapoRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.standard_normal() as f32).collect()
    }

    #[test]
    fn f32_update_matches_f64_formula_within_rounding() {
        let mut rng = SapoRng::from_seed_u64(77);
        let (ema0, params) = (random_weights(&mut rng, 1003), random_weights(&mut rng, 1003));
        let mut ema = ema0.clone();
        ema_update(&mut ema, &params, 0.9).expect("valid");
        for i in 0..ema.len() {
            let exact = 0.9 * f64::from(ema0[i]) + 0.1 * f64::from(params[i]);
            assert!((f64::from(ema[i]) - exact).abs() <= 4.0 * f64::from(f32::EPSILON) * exact.abs().max(1e-30) + 1e-7);
        }
    }

    #[test]
    fn bf16_update_is_the_rounded_f32_update_across_chunk_boundaries() {
        // 1300 elements cross two chunk boundaries and end mid-chunk.
        let mut rng = SapoRng::from_seed_u64(78);
        let ema0: Vec<bf16> = random_weights(&mut rng, 1300).into_iter().map(bf16::from_f32).collect();
        let params: Vec<bf16> = random_weights(&mut rng, 1300).into_iter().map(bf16::from_f32).collect();
        let mut ema = ema0.clone();
        ema_update(&mut ema, &params, 0.5).expect("valid");
        for i in 0..ema.len() {
            let wide = 0.5 * ema0[i].to_f32() + 0.5 * params[i].to_f32();
            assert_eq!(ema[i].to_bits(), bf16::from_f32(wide).to_bits(), "element {i}");
        }
    }

    #[test]
    fn f16_update_rounds_ties_to_even() {
        // 1 + 2⁻¹¹ lies halfway between f16 neighbours 1 and 1 + 2⁻¹⁰: it rounds to 1 (even).
        let mut ema = [f16::from_f32(1.0)];
        ema_update(&mut ema, &[f16::from_f32(1.0 + 2.0_f32.powi(-10))], 0.5).expect("valid");
        assert_eq!(ema[0], f16::from_f32(1.0));
    }

    #[test]
    fn mismatched_lengths_and_bad_decay_are_refused_without_writing() {
        let mut ema = [1.0_f64, 2.0];
        assert!(matches!(ema_update(&mut ema, &[0.0], 0.5), Err(EmaError::LengthMismatch { .. })));
        assert_eq!(ema_update(&mut ema, &[0.0, 0.0], 1.5), Err(EmaError::InvalidDecay(1.5)));
        assert!(ema_update(&mut ema, &[0.0, 0.0], f64::NAN).is_err());
        assert_eq!(ema, [1.0, 2.0]);
    }
}
