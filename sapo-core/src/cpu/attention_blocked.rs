//! The fast path of attention (feature `fast`): for each sequence and
//! key/value head, the scores of all its query heads as matrix products on
//! contiguous copies, tasks spread over threads with rayon. Same maths as
//! [`super::attention`]'s loops, which stay as the reference it is tested
//! against.

use alloc::vec;
use alloc::vec::Vec;

use rayon::prelude::*;

use super::float::CpuFloat;
use super::matmul::gemm_product;
use crate::backend::{HeadDims, MatmulSpec};

/// One (sequence, key/value head) unit of work.
#[derive(Clone, Copy)]
struct Task {
    start: usize,
    len: usize,
    kv_head: usize,
}

fn tasks(ranges: &[(usize, usize)], heads: HeadDims) -> Vec<Task> {
    ranges
        .iter()
        .filter(|(start, end)| end > start)
        .flat_map(|&(start, end)| (0..heads.n_kv_heads).map(move |kv_head| Task { start, len: end - start, kv_head }))
        .collect()
}

/// Copies the `[len, D]` slice of head `head` (of `n` heads per token) from
/// token `start` on into the contiguous `out`.
fn gather<F: CpuFloat>(out: &mut [F], source: &[F], start: usize, n: usize, head: usize, d: usize) {
    for (i, row) in out.chunks_exact_mut(d).enumerate() {
        row.copy_from_slice(&source[((start + i) * n + head) * d..][..d]);
    }
}

/// Splits this thread's scratch into buffers of the given lengths, zeroed.
fn with_buffers<F: CpuFloat, const N: usize, R>(lens: [usize; N], f: impl FnOnce([&mut [F]; N]) -> R) -> R {
    F::with_thread_scratch(|scratch| {
        let total: usize = lens.iter().sum();
        scratch.clear();
        scratch.resize(total, F::zero());
        let mut rest: &mut [F] = scratch;
        let buffers = lens.map(|len| {
            let (head, tail) = core::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            head
        });
        f(buffers)
    })
}

#[allow(clippy::too_many_arguments)]
fn product<F: CpuFloat>(out: &mut [F], a: &[F], b: &[F], m: usize, k: usize, n: usize, ta: bool, tb: bool, acc: bool) {
    let spec = MatmulSpec { m, k, n, transpose_a: ta, transpose_b: tb, accumulate: acc };
    gemm_product(out, a, b, spec, gemm::Parallelism::None);
}

/// Masked row softmax of `scores` `[len, len]` in place (row `i` over
/// columns `≤ i`, zeros beyond); returns each row's log-sum-exp.
fn causal_softmax<F: CpuFloat>(scores: &mut [F], len: usize) -> Vec<F> {
    let mut lse = Vec::with_capacity(len);
    for (i, row) in scores.chunks_exact_mut(len).enumerate() {
        let (visible, hidden) = row.split_at_mut(i + 1);
        let max = visible.iter().copied().fold(F::neg_infinity(), F::max);
        let log_sum = max + F::from_f64(libm::log(F::sum_exp_shifted(visible, max)));
        visible.iter_mut().for_each(|x| *x = (*x - log_sum).fast_exp());
        hidden.iter_mut().for_each(|x| *x = F::zero());
        lse.push(log_sum);
    }
    lse
}

/// Output and log-sum-exp of one head within a task.
struct HeadForward<F> {
    head: usize,
    out: Vec<F>,
    lse: Vec<F>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<F: CpuFloat>(
    out: &mut [F],
    lse: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    ranges: &[(usize, usize)],
    heads: HeadDims,
) {
    let HeadDims { n_heads, n_kv_heads, head_dim: d } = heads;
    let group = heads.group_size();
    let scale = F::from_f64(1.0 / libm::sqrt(d as f64));
    let results: Vec<(Task, Vec<HeadForward<F>>)> = tasks(ranges, heads)
        .into_par_iter()
        .map(|task| {
            let Task { start, len, kv_head } = task;
            let per_head = with_buffers([len * d, len * d, len * d, len * len], |[keys, values, queries, scores]| {
                gather(keys, k, start, n_kv_heads, kv_head, d);
                gather(values, v, start, n_kv_heads, kv_head, d);
                (kv_head * group..(kv_head + 1) * group)
                    .map(|head| {
                        gather(queries, q, start, n_heads, head, d);
                        product(scores, queries, keys, len, d, len, false, true, false);
                        scores.iter_mut().for_each(|s| *s = *s * scale);
                        let lse = causal_softmax(scores, len);
                        let mut head_out = vec![F::zero(); len * d];
                        product(&mut head_out, scores, values, len, len, d, false, false, false);
                        HeadForward { head, out: head_out, lse }
                    })
                    .collect::<Vec<_>>()
            });
            (task, per_head)
        })
        .collect();
    for (task, per_head) in results {
        for HeadForward { head, out: head_out, lse: head_lse } in per_head {
            for i in 0..task.len {
                let t = task.start + i;
                out[(t * n_heads + head) * d..][..d].copy_from_slice(&head_out[i * d..][..d]);
                lse[t * n_heads + head] = head_lse[i];
            }
        }
    }
}

/// Gradients of one task: each query head's `dq`, and the shared `dk`, `dv`.
struct TaskBackward<F> {
    task: Task,
    dq: Vec<(usize, Vec<F>)>,
    dk: Vec<F>,
    dv: Vec<F>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<F: CpuFloat>(
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    ranges: &[(usize, usize)],
    heads: HeadDims,
) {
    let HeadDims { n_heads, n_kv_heads, head_dim: d } = heads;
    let group = heads.group_size();
    let scale = F::from_f64(1.0 / libm::sqrt(d as f64));
    let results: Vec<TaskBackward<F>> = tasks(ranges, heads)
        .into_par_iter()
        .map(|task| {
            let Task { start, len, kv_head } = task;
            let (mut dkeys, mut dvalues) = (vec![F::zero(); len * d], vec![F::zero(); len * d]);
            let (rows, square) = (len * d, len * len);
            let dq_heads = with_buffers(
                [rows, rows, rows, rows, rows, square, square],
                |[keys, values, queries, grad_out, outputs, probs, dprobs]| {
                    gather(keys, k, start, n_kv_heads, kv_head, d);
                    gather(values, v, start, n_kv_heads, kv_head, d);
                    let mut dq_heads = Vec::with_capacity(group);
                    for head in kv_head * group..(kv_head + 1) * group {
                        gather(queries, q, start, n_heads, head, d);
                        gather(grad_out, dout, start, n_heads, head, d);
                        gather(outputs, out, start, n_heads, head, d);
                        // P = exp(Q Kᵀ/√D − lse), zero above the diagonal.
                        product(probs, queries, keys, len, d, len, false, true, false);
                        for (i, row) in probs.chunks_exact_mut(len).enumerate() {
                            let log_sum = lse[(start + i) * n_heads + head];
                            let (visible, hidden) = row.split_at_mut(i + 1);
                            visible.iter_mut().for_each(|s| *s = (*s * scale - log_sum).fast_exp());
                            hidden.iter_mut().for_each(|s| *s = F::zero());
                        }
                        // dP = dO Vᵀ; dS = P ⊙ (dP − δ)·scale with δ_i = dO_i·O_i.
                        product(dprobs, grad_out, values, len, d, len, false, true, false);
                        for i in 0..len {
                            let delta = (0..d).fold(F::zero(), |acc, c| acc + grad_out[i * d + c] * outputs[i * d + c]);
                            for j in 0..len {
                                let index = i * len + j;
                                dprobs[index] = probs[index] * (dprobs[index] - delta) * scale;
                            }
                        }
                        let mut dqueries = vec![F::zero(); len * d];
                        product(&mut dqueries, dprobs, keys, len, len, d, false, false, false);
                        product(&mut dkeys, dprobs, queries, len, len, d, true, false, true);
                        product(&mut dvalues, probs, grad_out, len, len, d, true, false, true);
                        dq_heads.push((head, dqueries));
                    }
                    dq_heads
                },
            );
            TaskBackward { task, dq: dq_heads, dk: dkeys, dv: dvalues }
        })
        .collect();
    for TaskBackward { task, dq: dq_heads, dk: dkeys, dv: dvalues } in results {
        for i in 0..task.len {
            let t = task.start + i;
            for (head, dqueries) in &dq_heads {
                let target = &mut dq[(t * n_heads + head) * d..][..d];
                target.iter_mut().zip(&dqueries[i * d..][..d]).for_each(|(a, &b)| *a = *a + b);
            }
            let row = (t * n_kv_heads + task.kv_head) * d;
            dk[row..row + d].iter_mut().zip(&dkeys[i * d..][..d]).for_each(|(a, &b)| *a = *a + b);
            dv[row..row + d].iter_mut().zip(&dvalues[i * d..][..d]).for_each(|(a, &b)| *a = *a + b);
        }
    }
}
