//! Causal grouped-query attention over packed sequences.
//!
//! For query token `t` of sequence `s` and head `h` (key/value head
//! `h / g`, `g = H / KVH`), with scores `a_u = q_t·k_u / √D` over the keys
//! `u` of the same sequence with `u ≤ t`:
//!
//! ```text
//! lse_t = log Σ_u e^{a_u}      p_u = e^{a_u − lse_t}      out_t = Σ_u p_u v_u
//! ```
//!
//! Backward recomputes `p` from `lse` (nothing `[T, T]` is kept):
//! `dp_u = dout_t·v_u`, `δ_t = dout_t·out_t`, `da_u = p_u (dp_u − δ_t)`,
//! `dq_t += Σ_u da_u k_u / √D`, `dk_u += da_u q_t / √D`, `dv_u += p_u dout_t`.

use alloc::vec::Vec;

use super::error::{CpuError, check_index, check_len};
use super::float::CpuFloat;
use crate::backend::HeadDims;

fn dot<F: CpuFloat>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).fold(F::zero(), |acc, (&x, &y)| acc + x * y)
}

/// Checks dimensions and the packing; returns the sequence ranges.
fn sequences(
    op: &'static str,
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<Vec<(usize, usize)>, CpuError> {
    if heads.n_kv_heads == 0 || !heads.n_heads.is_multiple_of(heads.n_kv_heads) {
        return Err(CpuError::InvalidDims { op, reason: "query heads must be a positive multiple of key/value heads" });
    }
    if seq_starts.first() != Some(&0) {
        return Err(CpuError::InvalidDims { op, reason: "seq_starts must begin at 0" });
    }
    let mut ranges = Vec::with_capacity(seq_starts.len().saturating_sub(1));
    for pair in seq_starts.windows(2) {
        let (start, end) = (pair[0] as usize, pair[1] as usize);
        if end < start {
            return Err(CpuError::InvalidDims { op, reason: "seq_starts must not decrease" });
        }
        check_index(op, "sequence end", end, n_tokens + 1)?;
        ranges.push((start, end));
    }
    if ranges.last().map_or(0, |r| r.1) != n_tokens {
        return Err(CpuError::InvalidDims { op, reason: "the last sequence must end at n_tokens" });
    }
    Ok(ranges)
}

/// Forward attention; `out` `[T, H, D]`, `lse` `[T, H]`. With feature
/// `fast`, per-(sequence, head) matrix products across threads; otherwise
/// [`attention_forward_reference`].
///
/// ```
/// use sapo_core::backend::HeadDims;
/// use sapo_core::cpu::ops::attention_forward;
/// // One sequence of one token: the output is its own value.
/// let heads = HeadDims { n_heads: 1, n_kv_heads: 1, head_dim: 2 };
/// let (mut out, mut lse) = ([0.0_f64; 2], [0.0; 1]);
/// attention_forward(&mut out, &mut lse, &[1.0, 0.0], &[0.5, 0.5], &[3.0, 4.0], &[0, 1], 1, heads)?;
/// assert_eq!(out, [3.0, 4.0]);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch or an inconsistent packing.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<F: CpuFloat>(
    out: &mut [F],
    lse: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<(), CpuError> {
    #[cfg(feature = "fast")]
    {
        let ranges = check_forward("attention_forward", out, lse, q, k, v, seq_starts, n_tokens, heads)?;
        super::attention_blocked::forward(out, lse, q, k, v, &ranges, heads);
        Ok(())
    }
    #[cfg(not(feature = "fast"))]
    attention_forward_reference(out, lse, q, k, v, seq_starts, n_tokens, heads)
}

/// Checks the forward's buffers; returns the sequence ranges.
#[allow(clippy::too_many_arguments)]
fn check_forward<F: CpuFloat>(
    op: &'static str,
    out: &[F],
    lse: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<Vec<(usize, usize)>, CpuError> {
    let HeadDims { n_heads, n_kv_heads, head_dim } = heads;
    check_len(op, "q", q.len(), n_tokens * n_heads * head_dim)?;
    check_len(op, "out", out.len(), n_tokens * n_heads * head_dim)?;
    check_len(op, "lse", lse.len(), n_tokens * n_heads)?;
    check_len(op, "k", k.len(), n_tokens * n_kv_heads * head_dim)?;
    check_len(op, "v", v.len(), n_tokens * n_kv_heads * head_dim)?;
    sequences(op, seq_starts, n_tokens, heads)
}

/// The textbook loops: one query, one head, one key at a time, the reference
/// for the fast path.
///
/// # Errors
/// A length mismatch or an inconsistent packing.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_reference<F: CpuFloat>(
    out: &mut [F],
    lse: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<(), CpuError> {
    let HeadDims { n_heads, n_kv_heads, head_dim } = heads;
    let ranges = check_forward("attention_forward", out, lse, q, k, v, seq_starts, n_tokens, heads)?;
    let group = heads.group_size();
    let scale = F::from_f64(1.0 / libm::sqrt(head_dim as f64));
    let mut scores: Vec<F> = Vec::new();
    for (start, end) in ranges {
        for t in start..end {
            for h in 0..n_heads {
                let kv = h / group;
                let query = &q[(t * n_heads + h) * head_dim..][..head_dim];
                scores.clear();
                scores.extend(
                    (start..=t).map(|u| dot(query, &k[(u * n_kv_heads + kv) * head_dim..][..head_dim]) * scale),
                );
                let max = scores.iter().copied().fold(F::neg_infinity(), F::max);
                let total: F = scores.iter().map(|&a| (a - max).exp()).sum();
                let log_sum = max + total.ln();
                lse[t * n_heads + h] = log_sum;
                let row = &mut out[(t * n_heads + h) * head_dim..][..head_dim];
                row.iter_mut().for_each(|o| *o = F::zero());
                for (offset, &a) in scores.iter().enumerate() {
                    let p = (a - log_sum).exp();
                    let value = &v[((start + offset) * n_kv_heads + kv) * head_dim..][..head_dim];
                    row.iter_mut().zip(value).for_each(|(o, &x)| *o = *o + p * x);
                }
            }
        }
    }
    Ok(())
}

/// Backward attention; accumulates `dq`, `dk`, `dv`. With feature `fast`,
/// per-(sequence, head) matrix products across threads; otherwise
/// [`attention_backward_reference`].
///
/// # Errors
/// A length mismatch or an inconsistent packing.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<F: CpuFloat>(
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<(), CpuError> {
    #[cfg(feature = "fast")]
    {
        let ranges = check_backward(dq, dk, dv, dout, q, k, v, out, lse, seq_starts, n_tokens, heads)?;
        super::attention_blocked::backward(dq, dk, dv, dout, q, k, v, out, lse, &ranges, heads);
        Ok(())
    }
    #[cfg(not(feature = "fast"))]
    attention_backward_reference(dq, dk, dv, dout, q, k, v, out, lse, seq_starts, n_tokens, heads)
}

#[allow(clippy::too_many_arguments)]
fn check_backward<F: CpuFloat>(
    dq: &[F],
    dk: &[F],
    dv: &[F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<Vec<(usize, usize)>, CpuError> {
    const OP: &str = "attention_backward";
    let HeadDims { n_heads, n_kv_heads, head_dim } = heads;
    let query_len = n_tokens * n_heads * head_dim;
    let kv_len = n_tokens * n_kv_heads * head_dim;
    for (name, got, expected) in [
        ("dq", dq.len(), query_len),
        ("dout", dout.len(), query_len),
        ("q", q.len(), query_len),
        ("out", out.len(), query_len),
        ("dk", dk.len(), kv_len),
        ("dv", dv.len(), kv_len),
        ("k", k.len(), kv_len),
        ("v", v.len(), kv_len),
        ("lse", lse.len(), n_tokens * n_heads),
    ] {
        check_len(OP, name, got, expected)?;
    }
    sequences(OP, seq_starts, n_tokens, heads)
}

/// The textbook loops for the backward, the reference for the fast path.
///
/// # Errors
/// A length mismatch or an inconsistent packing.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_reference<F: CpuFloat>(
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    seq_starts: &[u32],
    n_tokens: usize,
    heads: HeadDims,
) -> Result<(), CpuError> {
    let HeadDims { n_heads, n_kv_heads, head_dim } = heads;
    let ranges = check_backward(dq, dk, dv, dout, q, k, v, out, lse, seq_starts, n_tokens, heads)?;
    let group = heads.group_size();
    let scale = F::from_f64(1.0 / libm::sqrt(head_dim as f64));
    for (start, end) in ranges {
        for t in start..end {
            for h in 0..n_heads {
                let kv = h / group;
                let row = (t * n_heads + h) * head_dim;
                let (query, grad_out) = (&q[row..row + head_dim], &dout[row..row + head_dim]);
                let delta = dot(grad_out, &out[row..row + head_dim]);
                let log_sum = lse[t * n_heads + h];
                for u in start..=t {
                    let key_row = (u * n_kv_heads + kv) * head_dim;
                    let key = &k[key_row..key_row + head_dim];
                    let p = (dot(query, key) * scale - log_sum).exp();
                    let dp = dot(grad_out, &v[key_row..key_row + head_dim]);
                    let da = p * (dp - delta) * scale;
                    for c in 0..head_dim {
                        dq[row + c] = dq[row + c] + da * key[c];
                        dk[key_row + c] = dk[key_row + c] + da * query[c];
                        dv[key_row + c] = dv[key_row + c] + p * grad_out[c];
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};
    use alloc::vec;

    const HEADS: HeadDims = HeadDims { n_heads: 4, n_kv_heads: 2, head_dim: 3 };
    const SEQ_STARTS: [u32; 4] = [0, 3, 4, 9];
    const TOKENS: usize = 9;

    fn loss(q: &[f64], k: &[f64], v: &[f64], weights: &[f64]) -> f64 {
        let mut out = vec![0.0; q.len()];
        let mut lse = vec![0.0; TOKENS * HEADS.n_heads];
        attention_forward(&mut out, &mut lse, q, k, v, &SEQ_STARTS, TOKENS, HEADS).expect("valid");
        out.iter().zip(weights).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn backward_matches_finite_differences_over_packed_sequences_with_gqa() {
        let q = random_vec::<f64>(1, TOKENS * 4 * 3);
        let k = random_vec::<f64>(2, TOKENS * 2 * 3);
        let v = random_vec::<f64>(3, TOKENS * 2 * 3);
        let weights = random_vec::<f64>(4, q.len());
        let mut out = vec![0.0; q.len()];
        let mut lse = vec![0.0; TOKENS * 4];
        attention_forward(&mut out, &mut lse, &q, &k, &v, &SEQ_STARTS, TOKENS, HEADS).expect("valid");
        let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        attention_backward(&mut dq, &mut dk, &mut dv, &weights, &q, &k, &v, &out, &lse, &SEQ_STARTS, TOKENS, HEADS)
            .expect("valid");
        check_gradients("attention dq", &q, &dq, 1e-6, |x| loss(x, &k, &v, &weights));
        check_gradients("attention dk", &k, &dk, 1e-6, |x| loss(&q, x, &v, &weights));
        check_gradients("attention dv", &v, &dv, 1e-6, |x| loss(&q, &k, x, &weights));
    }

    #[test]
    fn public_path_matches_the_reference_loops_in_f32_and_f64() {
        let (q, k, v) =
            (random_vec::<f64>(11, TOKENS * 12), random_vec::<f64>(12, TOKENS * 6), random_vec::<f64>(13, TOKENS * 6));
        let dout = random_vec::<f64>(14, TOKENS * 12);
        let run = |fast: bool| {
            let (mut out, mut lse) = (vec![0.0; TOKENS * 12], vec![0.0; TOKENS * 4]);
            let (mut dq, mut dk, mut dv) = (vec![0.0; TOKENS * 12], vec![0.0; TOKENS * 6], vec![0.0; TOKENS * 6]);
            if fast {
                attention_forward(&mut out, &mut lse, &q, &k, &v, &SEQ_STARTS, TOKENS, HEADS).expect("valid");
                attention_backward(
                    &mut dq,
                    &mut dk,
                    &mut dv,
                    &dout,
                    &q,
                    &k,
                    &v,
                    &out,
                    &lse,
                    &SEQ_STARTS,
                    TOKENS,
                    HEADS,
                )
                .expect("valid");
            } else {
                attention_forward_reference(&mut out, &mut lse, &q, &k, &v, &SEQ_STARTS, TOKENS, HEADS).expect("valid");
                attention_backward_reference(
                    &mut dq,
                    &mut dk,
                    &mut dv,
                    &dout,
                    &q,
                    &k,
                    &v,
                    &out,
                    &lse,
                    &SEQ_STARTS,
                    TOKENS,
                    HEADS,
                )
                .expect("valid");
            }
            [out, lse, dq, dk, dv]
        };
        let (fast, reference) = (run(true), run(false));
        for (name, (a, b)) in ["out", "lse", "dq", "dk", "dv"].iter().zip(fast.iter().zip(&reference)) {
            crate::cpu::test_support::assert_close(a, b, 1e-13, name);
        }
        let single = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (q32, k32, v32) = (single(&q), single(&k), single(&v));
        let (mut out32, mut lse32) = (vec![0.0_f32; TOKENS * 12], vec![0.0_f32; TOKENS * 4]);
        attention_forward(&mut out32, &mut lse32, &q32, &k32, &v32, &SEQ_STARTS, TOKENS, HEADS).expect("valid");
        crate::cpu::test_support::assert_close(&out32, &single(&reference[0]), 1e-6, "out f32");
    }

    #[test]
    fn sequences_do_not_see_each_other() {
        // Changing the keys and values of the first sequence leaves the others' outputs alone.
        let q = random_vec::<f64>(5, TOKENS * 12);
        let (k, v) = (random_vec::<f64>(6, TOKENS * 6), random_vec::<f64>(7, TOKENS * 6));
        let (mut k2, mut v2) = (k.clone(), v.clone());
        k2[..18].iter_mut().chain(v2[..18].iter_mut()).for_each(|x| *x += 1.0);
        let run = |k: &[f64], v: &[f64]| {
            let (mut out, mut lse) = (vec![0.0; TOKENS * 12], vec![0.0; TOKENS * 4]);
            attention_forward(&mut out, &mut lse, &q, k, v, &SEQ_STARTS, TOKENS, HEADS).expect("valid");
            out
        };
        assert_eq!(run(&k, &v)[36..], run(&k2, &v2)[36..]);
    }

    #[test]
    fn forward_matches_a_naive_softmax() {
        let heads = HeadDims { n_heads: 1, n_kv_heads: 1, head_dim: 2 };
        let (q, k, v) = ([0.3, -0.2, 1.0, 0.5], [0.7, 0.1, -0.4, 0.9], [1.0, 2.0, 3.0, 4.0]);
        let (mut out, mut lse) = ([0.0_f64; 4], [0.0; 2]);
        attention_forward(&mut out, &mut lse, &q, &k, &v, &[0, 2], 2, heads).expect("valid");
        let scale = 1.0 / 2f64.sqrt();
        let a0 = (1.0 * 0.7 + 0.5 * 0.1) * scale;
        let a1 = (1.0 * -0.4 + 0.5 * 0.9) * scale;
        let p0 = a0.exp() / (a0.exp() + a1.exp());
        assert!((out[2] - (p0 * 1.0 + (1.0 - p0) * 3.0)).abs() < 1e-14);
        assert!((out[0] - 1.0).abs() < 1e-15 && (out[1] - 2.0).abs() < 1e-15);
    }

    #[test]
    fn inconsistent_packing_is_an_error() {
        let (mut out, mut lse) = ([0.0_f32; 12], [0.0; 4]);
        let heads = HeadDims { n_heads: 1, n_kv_heads: 1, head_dim: 3 };
        let error = attention_forward(&mut out, &mut lse, &[0.0; 12], &[0.0; 12], &[0.0; 12], &[0, 3], 4, heads)
            .expect_err("sequences cover 3 of 4 tokens");
        assert!(matches!(error, CpuError::InvalidDims { .. }));
    }
}
