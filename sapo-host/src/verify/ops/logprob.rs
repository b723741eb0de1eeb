//! The LM head's token log-probs (f32 and bf16 products) and the
//! per-sequence sums on both backends.

use anyhow::Result;
use half::bf16;
use sapo_core::backend::Backend;
use sapo_core::model::Precision;

use super::super::{BF16_TOLERANCE, on};
use super::{Harness, OpShapes};

/// The LM head's weights on one backend: f32, or bf16 for the `_bf16`
/// operations.
enum HeadWeights<'a, B: Backend> {
    F32(&'a B::Buf<f32>),
    Bf16(&'a B::Buf<bf16>),
}

/// What an LM-head check scores on one backend: the hidden states, the
/// rows' tokens and targets, and `(R, C, V)`.
struct HeadRows<'a, B: Backend> {
    hidden: &'a B::Buf<f32>,
    rows: &'a B::Buf<u32>,
    targets: &'a B::Buf<u32>,
    dims: (usize, usize, usize),
}

fn head_forward_on<B: Backend>(
    backend: &B,
    weights: HeadWeights<'_, B>,
    io: &HeadRows<'_, B>,
    logps: &mut B::Buf<f32>,
    lse: &mut B::Buf<f32>,
) -> Result<(), B::Error> {
    let (HeadRows { hidden, rows, targets, .. }, (r, c, v)) = (io, io.dims);
    match weights {
        HeadWeights::F32(w) => backend.token_logprobs_forward(logps, lse, hidden, w, rows, targets, r, c, v),
        HeadWeights::Bf16(w) => backend.token_logprobs_forward_bf16(logps, lse, hidden, w, rows, targets, r, c, v),
    }
}

fn head_backward_on<B: Backend>(
    backend: &B,
    weights: HeadWeights<'_, B>,
    io: &HeadRows<'_, B>,
    (dhidden, dlm_head): (&mut B::Buf<f32>, &mut B::Buf<f32>),
    dlogps: &B::Buf<f32>,
    lse: &B::Buf<f32>,
) -> Result<(), B::Error> {
    let (HeadRows { hidden, rows, targets, .. }, (r, c, v)) = (io, io.dims);
    match weights {
        HeadWeights::F32(w) => {
            backend.token_logprobs_backward(dhidden, dlm_head, dlogps, hidden, w, rows, targets, lse, r, c, v)
        }
        HeadWeights::Bf16(w) => {
            backend.token_logprobs_backward_bf16(dhidden, dlm_head, dlogps, hidden, w, rows, targets, lse, r, c, v)
        }
    }
}

/// The fused LM head with an f32 head, or with a bf16 head and bf16
/// products. In bf16 both sides round the same f32 inputs, so the forward
/// differs only in summation order (the f32 tolerance); the backward rounds
/// the logit gradients, where a last-bit difference can flip a rounding,
/// so it is held to the bf16 tolerance.
fn token_logprobs<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes, precision: Precision) -> Result<()> {
    let (t, c, v, r) = (s.tokens(), s.channels, s.vocab, s.rows.min(s.tokens()));
    let shape = format!("R={r} T={t} C={c} V={v}");
    let hidden = h.random(t * c, 1.0)?;
    let lm_head = h.random(v * c, 0.05)?;
    let head16 = match precision {
        Precision::F32 => None,
        Precision::Bf16 => Some(h.upload(lm_head.initial.iter().map(|&w| bf16::from_f32(w)).collect())?),
    };
    let weights_r = || head16.as_ref().map_or(HeadWeights::F32(&lm_head.r), |w| HeadWeights::Bf16(&w.r));
    let weights_c = || head16.as_ref().map_or(HeadWeights::F32(&lm_head.c), |w| HeadWeights::Bf16(&w.c));
    // Distinct rows, spread over the tokens.
    let rows: Vec<u32> = (0..r).map(|i| (i * t / r) as u32).collect();
    let targets: Vec<u32> = (0..r).map(|_| h.below(v)).collect();
    let (rows, targets) = (h.upload(rows)?, h.upload(targets)?);
    let dims = (r, c, v);
    let io_r = HeadRows { hidden: &hidden.r, rows: &rows.r, targets: &targets.r, dims };
    let io_c = HeadRows { hidden: &hidden.c, rows: &rows.c, targets: &targets.c, dims };
    let (mut logps, mut lse) = (h.poisoned(r)?, h.poisoned(r)?);
    let (reference, candidate) = (h.b.reference, h.b.candidate);
    on("reference", head_forward_on(reference, weights_r(), &io_r, &mut logps.r, &mut lse.r))?;
    on("candidate", head_forward_on(candidate, weights_c(), &io_c, &mut logps.c, &mut lse.c))?;
    // The rows are named after the operations.
    let (suffix, dtype, backward_tolerance) = match precision {
        Precision::F32 => ("", h.dtype, h.tolerance),
        Precision::Bf16 => ("_bf16", "bf16", BF16_TOLERANCE),
    };
    let forward = format!("token_logprobs_forward{suffix}");
    h.record_as(&forward, shape.clone(), &logps, r, false, dtype, h.tolerance)?;
    h.record_as(&format!("{forward} (lse)"), shape.clone(), &lse, r, false, dtype, h.tolerance)?;
    let dlogps = h.random(r, 1.0)?;
    let (mut dhidden, mut dlm_head) = (h.random(t * c, 1.0)?, h.random(v * c, 1.0)?);
    let grads_r = (&mut dhidden.r, &mut dlm_head.r);
    on("reference", head_backward_on(reference, weights_r(), &io_r, grads_r, &dlogps.r, &lse.r))?;
    let grads_c = (&mut dhidden.c, &mut dlm_head.c);
    on("candidate", head_backward_on(candidate, weights_c(), &io_c, grads_c, &dlogps.c, &lse.c))?;
    let label = |output: &str| format!("token_logprobs_backward{suffix} ({output})");
    h.record_as(&label("dhidden"), shape.clone(), &dhidden, t * c, true, dtype, backward_tolerance)?;
    h.record_as(&label("dlm_head"), shape, &dlm_head, v * c, true, dtype, backward_tolerance)
}

pub(super) fn logprobs<R: Backend, C: Backend>(h: &mut Harness<'_, R, C>, s: &OpShapes) -> Result<()> {
    token_logprobs(h, s, Precision::F32)?;
    token_logprobs(h, s, Precision::Bf16)?;
    let r = s.rows.min(s.tokens());
    let n_seqs = s.seq_lens.len() + 1; // the last sequence has no rows
    let row_seqs: Vec<u32> = (0..r).map(|i| (i * (n_seqs - 1) / r) as u32).collect();
    let row_seqs = h.upload(row_seqs)?;
    let logps = h.random(r, 3.0)?;
    let (mut sums, mut means) = (h.poisoned(n_seqs)?, h.poisoned(n_seqs)?);
    on("reference", h.b.reference.sequence_logprobs(&mut sums.r, &mut means.r, &logps.r, &row_seqs.r, r, n_seqs))?;
    on("candidate", h.b.candidate.sequence_logprobs(&mut sums.c, &mut means.c, &logps.c, &row_seqs.c, r, n_seqs))?;
    let seq_shape = format!("R={r} S={n_seqs}");
    h.record("sequence_logprobs (sums)", seq_shape.clone(), &sums, n_seqs, false)?;
    h.record("sequence_logprobs (means)", seq_shape.clone(), &means, n_seqs, false)?;
    let (dsums, dmeans) = (h.random(n_seqs, 1.0)?, h.random(n_seqs, 1.0)?);
    let mut dlogps = h.random(r, 1.0)?;
    on(
        "reference",
        h.b.reference.sequence_logprobs_backward(&mut dlogps.r, &dsums.r, &dmeans.r, &row_seqs.r, r, n_seqs),
    )?;
    on(
        "candidate",
        h.b.candidate.sequence_logprobs_backward(&mut dlogps.c, &dsums.c, &dmeans.c, &row_seqs.c, r, n_seqs),
    )?;
    h.record("sequence_logprobs_backward", seq_shape, &dlogps, r, true)
}
