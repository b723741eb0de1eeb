//! RMSNorm as Hugging Face's `LlamaRMSNorm`: `x·rsqrt(mean(x²) + ε)·w`.
//!
//! Backward, with `n = rstd·x` and `g = dout ⊙ w`:
//! `dx = rstd·(g − n·mean(g ⊙ n))`, `dw += Σ_rows dout ⊙ n`.

use super::error::{CpuError, check_len};
use super::float::CpuFloat;
#[allow(unused_imports)]
use super::par::prelude::*;
use super::par::{chunks, chunks_mut};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;

fn check(op: &'static str, rows: usize, cols: usize, lens: [(&'static str, usize, usize); 3]) -> Result<(), CpuError> {
    for (name, got, expected) in lens {
        check_len(op, name, got, expected)?;
    }
    if cols == 0 && rows > 0 {
        return Err(CpuError::InvalidDims { op, reason: "a row needs at least one channel" });
    }
    Ok(())
}

/// Normalises each of `rows` rows of `inp` `[rows, cols]`; keeps `rstd`.
///
/// ```
/// use sapo_core::cpu::ops::rms_norm_forward;
/// let (mut out, mut rstd) = ([0.0_f64; 2], [0.0; 1]);
/// rms_norm_forward(&mut out, &mut rstd, &[3.0, 4.0], &[1.0, 2.0], 1, 2, 0.0)?;
/// let scale = 1.0 / 12.5_f64.sqrt();
/// assert!((out[0] - 3.0 * scale).abs() < 1e-15 && (out[1] - 8.0 * scale).abs() < 1e-15);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch.
pub fn rms_norm_forward<F: CpuFloat>(
    out: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    weight: &[F],
    rows: usize,
    cols: usize,
    eps: F,
) -> Result<(), CpuError> {
    const OP: &str = "rms_norm_forward";
    check(
        OP,
        rows,
        cols,
        [("inp", inp.len(), rows * cols), ("out", out.len(), rows * cols), ("rstd", rstd.len(), rows)],
    )?;
    check_len(OP, "weight", weight.len(), cols)?;
    if rows == 0 {
        return Ok(());
    }
    let block = ROWS_PER_TASK * cols;
    chunks_mut!(out, block).zip(chunks_mut!(rstd, ROWS_PER_TASK)).zip(chunks!(inp, block)).for_each(
        |((out, rstd), inp)| {
            for ((x, y), r) in inp.chunks_exact(cols).zip(out.chunks_exact_mut(cols)).zip(rstd.iter_mut()) {
                let mean_square = x.iter().map(|&v| v.widen() * v.widen()).sum::<f64>() / cols as f64;
                // rsqrt in the working precision, as torch computes it on f32.
                let inv = (F::from_f64(mean_square) + eps).sqrt().recip();
                *r = inv;
                for ((o, &v), &w) in y.iter_mut().zip(x).zip(weight) {
                    *o = w * (v * inv);
                }
            }
        },
    );
    Ok(())
}

/// Accumulates `dinp` and `dweight`.
///
/// # Errors
/// A length mismatch.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward<F: CpuFloat>(
    dinp: &mut [F],
    dweight: &mut [F],
    dout: &[F],
    inp: &[F],
    weight: &[F],
    rstd: &[F],
    rows: usize,
    cols: usize,
) -> Result<(), CpuError> {
    const OP: &str = "rms_norm_backward";
    check(
        OP,
        rows,
        cols,
        [("inp", inp.len(), rows * cols), ("dout", dout.len(), rows * cols), ("rstd", rstd.len(), rows)],
    )?;
    check_len(OP, "dinp", dinp.len(), rows * cols)?;
    check_len(OP, "weight", weight.len(), cols)?;
    check_len(OP, "dweight", dweight.len(), cols)?;
    if rows == 0 {
        return Ok(());
    }
    let block = ROWS_PER_TASK * cols;
    // Each task returns its rows' share of dweight (f64); shares are summed
    // in task order, so the result does not depend on the thread schedule.
    let tasks =
        chunks_mut!(dinp, block).zip(chunks!(inp, block)).zip(chunks!(dout, block)).zip(chunks!(rstd, ROWS_PER_TASK));
    let shares: alloc::vec::Vec<alloc::vec::Vec<f64>> = tasks
        .map(|(((dx_rows, x_rows), g_rows), rstd)| {
            let mut share = alloc::vec![0.0; cols];
            let rows = dx_rows.chunks_exact_mut(cols).zip(x_rows.chunks_exact(cols)).zip(g_rows.chunks_exact(cols));
            for (((dx, x), g), r) in rows.zip(rstd) {
                let r = r.widen();
                // mean over channels of (dout ⊙ w) ⊙ normalised
                let dot: f64 =
                    (0..cols).map(|c| g[c].widen() * weight[c].widen() * x[c].widen() * r).sum::<f64>() / cols as f64;
                for c in 0..cols {
                    let normalised = x[c].widen() * r;
                    let scaled = g[c].widen() * weight[c].widen();
                    dx[c] = F::from_f64(dx[c].widen() + r * (scaled - normalised * dot));
                    share[c] += g[c].widen() * normalised;
                }
            }
            share
        })
        .collect();
    for (c, dw) in dweight.iter_mut().enumerate() {
        *dw = F::from_f64(dw.widen() + shares.iter().map(|share| share[c]).sum::<f64>());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};
    use alloc::vec;

    fn loss(inp: &[f64], weight: &[f64], dout: &[f64], rows: usize, cols: usize) -> f64 {
        let (mut out, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows]);
        rms_norm_forward(&mut out, &mut rstd, inp, weight, rows, cols, 1e-5).expect("valid");
        out.iter().zip(dout).map(|(o, w)| o * w).sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (rows, cols) = (5, 19);
        let (inp, weight, dout) =
            (random_vec::<f64>(1, rows * cols), random_vec::<f64>(2, cols), random_vec::<f64>(3, rows * cols));
        let (mut out, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows]);
        rms_norm_forward(&mut out, &mut rstd, &inp, &weight, rows, cols, 1e-5).expect("valid");
        let (mut dinp, mut dweight) = (vec![0.0; rows * cols], vec![0.0; cols]);
        rms_norm_backward(&mut dinp, &mut dweight, &dout, &inp, &weight, &rstd, rows, cols).expect("valid");
        check_gradients("rms_norm dinp", &inp, &dinp, 1e-6, |x| loss(x, &weight, &dout, rows, cols));
        check_gradients("rms_norm dweight", &weight, &dweight, 1e-6, |w| loss(&inp, w, &dout, rows, cols));
    }

    #[test]
    fn forward_matches_the_naive_formula() {
        let (rows, cols) = (3, 7);
        let (inp, weight) = (random_vec::<f64>(4, rows * cols), random_vec::<f64>(5, cols));
        let (mut out, mut rstd) = (vec![0.0; rows * cols], vec![0.0; rows]);
        rms_norm_forward(&mut out, &mut rstd, &inp, &weight, rows, cols, 1e-6).expect("valid");
        for r in 0..rows {
            let x = &inp[r * cols..(r + 1) * cols];
            let norm = (x.iter().map(|v| v * v).sum::<f64>() / cols as f64 + 1e-6).sqrt();
            for c in 0..cols {
                assert!((out[r * cols + c] - weight[c] * x[c] / norm).abs() < 1e-14);
            }
        }
    }
}
