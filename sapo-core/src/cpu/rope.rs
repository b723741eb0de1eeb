//! Rotary position embedding in Hugging Face's half-split layout.
//!
//! Channel `i < D/2` of a head pairs with channel `i + D/2`; the pair turns by
//! `position · θ^(−2i/D)`. The frequencies and angles are formed in the
//! working precision the way transformers forms them in f32 (`inv_freq =
//! 1/θ^(2i/D)`, `angle = position·inv_freq`), so f32 results match it.

use alloc::vec::Vec;

use super::error::{CpuError, check_len};
use super::float::CpuFloat;

/// `(cos, sin)` per `(position, i)` for positions `0..=max_position`,
/// laid out `[position, D/2]`.
fn rotation_table<F: CpuFloat>(max_position: usize, head_dim: usize, theta: f64) -> (Vec<F>, Vec<F>) {
    let half = head_dim / 2;
    let inv_freq = inverse_frequencies::<F>(head_dim, theta);
    let mut cos = Vec::with_capacity((max_position + 1) * half);
    let mut sin = Vec::with_capacity((max_position + 1) * half);
    for position in 0..=max_position {
        for &frequency in &inv_freq {
            let angle = (F::from_f64(position as f64) * frequency).widen();
            cos.push(F::from_f64(libm::cos(angle)));
            sin.push(F::from_f64(libm::sin(angle)));
        }
    }
    (cos, sin)
}

/// The frequencies `1/θ^(2i/D)`, formed in the working precision as
/// transformers forms them in f32.
fn inverse_frequencies<F: CpuFloat>(head_dim: usize, theta: f64) -> Vec<F> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = F::from_f64((2 * i) as f64) / F::from_f64(head_dim as f64);
            F::one() / F::from_f64(libm::pow(theta, exponent.widen()))
        })
        .collect()
}

/// `(cos, sin)` per `(token, i)` for the given positions, `[T, D/2]`.
fn rotation_rows<F: CpuFloat>(positions: &[u32], head_dim: usize, theta: f64) -> (Vec<F>, Vec<F>) {
    let inv_freq = inverse_frequencies::<F>(head_dim, theta);
    let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * inv_freq.len()), Vec::new());
    for &position in positions {
        for &frequency in &inv_freq {
            let angle = (F::from_f64(f64::from(position)) * frequency).widen();
            cos.push(F::from_f64(libm::cos(angle)));
            sin.push(F::from_f64(libm::sin(angle)));
        }
    }
    (cos, sin)
}

fn rotate<F: CpuFloat>(
    op: &'static str,
    x: &mut [F],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    theta: f64,
    direction: F,
) -> Result<(), CpuError> {
    check_len(op, "x", x.len(), positions.len() * n_heads * head_dim)?;
    if !head_dim.is_multiple_of(2) {
        return Err(CpuError::InvalidDims { op, reason: "RoPE needs an even head dimension" });
    }
    let half = head_dim / 2;
    let max_position = positions.iter().copied().max().unwrap_or(0) as usize;
    // A table over every position up to the largest, unless there are fewer
    // tokens than that (decoding): then only the tokens' own positions.
    let per_token = positions.len() <= max_position;
    let (cos, sin) = if per_token {
        rotation_rows::<F>(positions, head_dim, theta)
    } else {
        rotation_table::<F>(max_position, head_dim, theta)
    };
    for (index, (token_heads, &position)) in x.chunks_exact_mut((n_heads * head_dim).max(1)).zip(positions).enumerate()
    {
        let table = if per_token { index * half } else { position as usize * half };
        for head in token_heads.chunks_exact_mut(head_dim.max(1)) {
            let (first, second) = head.split_at_mut(half);
            for i in 0..half {
                let (c, s) = (cos[table + i], direction * sin[table + i]);
                let (a, b) = (first[i], second[i]);
                first[i] = a * c - b * s;
                second[i] = b * c + a * s;
            }
        }
    }
    Ok(())
}

/// Rotates `x` `[T, heads, D]` in place by each token's position.
///
/// ```
/// use sapo_core::cpu::ops::rope_forward;
/// // Position 0 is the identity.
/// let mut x = [1.0_f64, 2.0, 3.0, 4.0];
/// rope_forward(&mut x, &[0], 1, 4, 10_000.0)?;
/// assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch or an odd head dimension.
pub fn rope_forward<F: CpuFloat>(
    x: &mut [F],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    theta: f64,
) -> Result<(), CpuError> {
    rotate("rope_forward", x, positions, n_heads, head_dim, theta, F::one())
}

/// Turns a gradient with respect to the rotated values into one with
/// respect to the unrotated values, in place (the inverse rotation).
///
/// # Errors
/// A length mismatch or an odd head dimension.
pub fn rope_backward<F: CpuFloat>(
    dx: &mut [F],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    theta: f64,
) -> Result<(), CpuError> {
    rotate("rope_backward", dx, positions, n_heads, head_dim, theta, -F::one())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};

    #[test]
    fn backward_matches_finite_differences() {
        let (heads, head_dim) = (3, 8);
        let positions = [0u32, 5, 1, 17, 2];
        let x = random_vec::<f64>(1, positions.len() * heads * head_dim);
        let dout = random_vec::<f64>(2, x.len());
        let mut dx = dout.clone();
        rope_backward(&mut dx, &positions, heads, head_dim, 10_000.0).expect("valid");
        check_gradients("rope", &x, &dx, 1e-6, |input| {
            let mut y = input.to_vec();
            rope_forward(&mut y, &positions, heads, head_dim, 10_000.0).expect("valid");
            y.iter().zip(&dout).map(|(a, b)| a * b).sum()
        });
    }

    #[test]
    fn forward_matches_the_naive_formula() {
        let head_dim = 6;
        let x = random_vec::<f64>(3, head_dim);
        let mut y = x.clone();
        rope_forward(&mut y, &[9], 1, head_dim, 500.0).expect("valid");
        for i in 0..3 {
            let angle = 9.0 * 500f64.powf(-(2.0 * i as f64) / head_dim as f64);
            let expected_first = x[i] * angle.cos() - x[i + 3] * angle.sin();
            let expected_second = x[i + 3] * angle.cos() + x[i] * angle.sin();
            assert!((y[i] - expected_first).abs() < 1e-14 && (y[i + 3] - expected_second).abs() < 1e-14);
        }
    }
}
