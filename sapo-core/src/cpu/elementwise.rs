//! SwiGLU and the residual additions.
//!
//! `silu(x) = x·σ(x)`, `silu′(x) = σ(x)·(1 + x·(1 − σ(x)))`.

use super::error::{CpuError, check_len};
use super::float::CpuFloat;
#[allow(unused_imports)]
use super::par::prelude::*;
use super::par::{CHUNK, chunks, chunks_mut};

fn sigmoid<F: CpuFloat>(x: F) -> F {
    F::one() / (F::one() + (-x).fast_exp())
}

/// `out = silu(gate) ⊙ up`.
///
/// ```
/// use sapo_core::cpu::ops::swiglu_forward;
/// let mut out = [0.0_f64];
/// swiglu_forward(&mut out, &[0.0], &[5.0])?;
/// assert_eq!(out, [0.0]); // silu(0) = 0
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch.
pub fn swiglu_forward<F: CpuFloat>(out: &mut [F], gate: &[F], up: &[F]) -> Result<(), CpuError> {
    check_len("swiglu_forward", "gate", gate.len(), out.len())?;
    check_len("swiglu_forward", "up", up.len(), out.len())?;
    chunks_mut!(out, CHUNK).zip(chunks!(gate, CHUNK)).zip(chunks!(up, CHUNK)).for_each(|((out, gate), up)| {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    });
    Ok(())
}

/// Accumulates `dgate += dout·up·silu′(gate)` and `dup += dout·silu(gate)`.
///
/// # Errors
/// A length mismatch.
pub fn swiglu_backward<F: CpuFloat>(
    dgate: &mut [F],
    dup: &mut [F],
    dout: &[F],
    gate: &[F],
    up: &[F],
) -> Result<(), CpuError> {
    const OP: &str = "swiglu_backward";
    for (name, len) in [("dgate", dgate.len()), ("dup", dup.len()), ("gate", gate.len()), ("up", up.len())] {
        check_len(OP, name, len, dout.len())?;
    }
    let inputs = chunks!(dout, CHUNK).zip(chunks!(gate, CHUNK)).zip(chunks!(up, CHUNK));
    chunks_mut!(dgate, CHUNK).zip(chunks_mut!(dup, CHUNK)).zip(inputs).for_each(
        |((dgate, dup), ((dout, gate), up))| {
            for i in 0..dout.len() {
                let s = sigmoid(gate[i]);
                let silu = gate[i] * s;
                let silu_grad = s * (F::one() + gate[i] * (F::one() - s));
                dgate[i] = dgate[i] + dout[i] * up[i] * silu_grad;
                dup[i] = dup[i] + dout[i] * silu;
            }
        },
    );
    Ok(())
}

/// `out = a + b`.
///
/// # Errors
/// A length mismatch.
pub fn add<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F]) -> Result<(), CpuError> {
    check_len("add", "a", a.len(), out.len())?;
    check_len("add", "b", b.len(), out.len())?;
    chunks_mut!(out, CHUNK).zip(chunks!(a, CHUNK)).zip(chunks!(b, CHUNK)).for_each(|((out, a), b)| {
        out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = x + y);
    });
    Ok(())
}

/// `acc += x`.
///
/// # Errors
/// A length mismatch.
pub fn add_assign<F: CpuFloat>(acc: &mut [F], x: &[F]) -> Result<(), CpuError> {
    check_len("add_assign", "x", x.len(), acc.len())?;
    chunks_mut!(acc, CHUNK).zip(chunks!(x, CHUNK)).for_each(|(acc, x)| {
        acc.iter_mut().zip(x).for_each(|(a, &b)| *a = *a + b);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};
    use alloc::vec;

    #[test]
    fn swiglu_backward_matches_finite_differences() {
        let n = 37;
        let (gate, up, dout) = (random_vec::<f64>(1, n), random_vec::<f64>(2, n), random_vec::<f64>(3, n));
        let (mut dgate, mut dup) = (vec![0.0; n], vec![0.0; n]);
        swiglu_backward(&mut dgate, &mut dup, &dout, &gate, &up).expect("valid");
        let loss = |g: &[f64], u: &[f64]| {
            let mut out = vec![0.0; n];
            swiglu_forward(&mut out, g, u).expect("valid");
            out.iter().zip(&dout).map(|(a, b)| a * b).sum::<f64>()
        };
        check_gradients("swiglu dgate", &gate, &dgate, 1e-6, |g| loss(g, &up));
        check_gradients("swiglu dup", &up, &dup, 1e-6, |u| loss(&gate, u));
    }
}
