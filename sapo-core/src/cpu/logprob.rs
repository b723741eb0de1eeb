//! The fused LM head: per-token log-probabilities of given targets straight
//! from the final hidden states, in blocks of rows, so that no `[rows, V]`
//! logits or probabilities outlive one block.
//!
//! For row `r` (token `t = rows[r]`, target `y = targets[r]`):
//! `logits = hidden[t]·Wᵀ`, `lse = log Σ_v e^{logits_v}`, `logp = logits_y − lse`.
//! Backward: `dlogits_v = dlogp·(1[v = y] − e^{logits_v − lse})`,
//! `dhidden[t] += dlogits·W`, `dW += dlogitsᵀ·hidden[t]`.
//!
//! The `_bf16` variants take a bf16 `W` and round the products' other
//! operands (the hidden rows, and `dlogits` in backward) to bf16; the
//! products run in [`super::matmul_bf16::matmul_bf16`] (exact products, f32
//! sums), and the logits and log-softmax stay f32.

use alloc::vec::Vec;

use half::bf16;

use super::error::{CpuError, check_index, check_len};
use super::float::CpuFloat;
use super::matmul::matmul;
use super::matmul_bf16::{matmul_bf16, round_to_bf16};
use crate::backend::MatmulSpec;

/// Logit elements per block: a block's `rows × V` logits (64 MiB of f32)
/// are the only vocabulary-sized buffer, reused from block to block.
pub const BLOCK_ELEMENTS: usize = 1 << 24;

/// Rows per block for a vocabulary of `vocab`: as many as fit
/// [`BLOCK_ELEMENTS`] (341 for SmolLM2's 49 152 tokens), between 16 and
/// 4096. Big blocks keep the LM head's products efficient: the weight
/// gradient `dW += dlogitsᵀ·h` contracts over the block's rows.
pub fn block_rows(vocab: usize) -> usize {
    (BLOCK_ELEMENTS / vocab.max(1)).clamp(16, 4096)
}

/// Scratch a caller keeps between calls so blocks reuse one allocation.
#[derive(Debug, Default)]
pub struct LogprobScratch<F> {
    /// Rows per block; `None` is [`block_rows`] of the vocabulary.
    block_rows: Option<usize>,
    hidden_rows: Vec<F>,
    logits: Vec<F>,
    dhidden_rows: Vec<F>,
    /// The bf16 variants' rounded hidden rows and logit gradients.
    hidden_rows_bf16: Vec<bf16>,
    dlogits_bf16: Vec<bf16>,
}

impl<F> LogprobScratch<F> {
    /// Scratch with a fixed number of rows per block (at least 1), e.g. to
    /// test block boundaries with a small vocabulary.
    pub fn with_block_rows(rows: usize) -> Self {
        LogprobScratch {
            block_rows: Some(rows.max(1)),
            hidden_rows: Vec::new(),
            logits: Vec::new(),
            dhidden_rows: Vec::new(),
            hidden_rows_bf16: Vec::new(),
            dlogits_bf16: Vec::new(),
        }
    }

    fn rows_per_block(&self, vocab: usize) -> usize {
        self.block_rows.unwrap_or_else(|| block_rows(vocab))
    }
}

fn ensure<F: CpuFloat>(buffer: &mut Vec<F>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, F::zero());
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    op: &'static str,
    hidden: usize,
    lm_head: usize,
    rows: &[u32],
    targets: &[u32],
    per_row: [(&'static str, usize); 2],
    channels: usize,
    vocab: usize,
) -> Result<usize, CpuError> {
    check_len(op, "lm_head", lm_head, vocab * channels)?;
    check_len(op, "targets", targets.len(), rows.len())?;
    for (name, len) in per_row {
        check_len(op, name, len, rows.len())?;
    }
    if channels == 0 || !hidden.is_multiple_of(channels) {
        return Err(CpuError::InvalidDims { op, reason: "hidden must be [tokens, channels]" });
    }
    let n_tokens = hidden / channels;
    for (&row, &target) in rows.iter().zip(targets) {
        check_index(op, "row", row as usize, n_tokens)?;
        check_index(op, "target", target as usize, vocab)?;
    }
    Ok(n_tokens)
}

/// The LM head's weights `[V, C]` and the products they run in: a slice
/// of `F` (products in `F`), or [`Bf16Head`].
trait Head<F: CpuFloat> {
    fn len(&self) -> usize;

    /// `logits[..n·V] = hidden_rows[..n·C] · Wᵀ`.
    fn logits(&self, scratch: &mut LogprobScratch<F>, n: usize, channels: usize, vocab: usize) -> Result<(), CpuError>;

    /// From the block's `dlogits` (in `scratch.logits`):
    /// `dhidden_rows = dlogits · W` and `dW += dlogitsᵀ · hidden_rows`.
    fn backward(
        &self,
        scratch: &mut LogprobScratch<F>,
        dlm_head: &mut [F],
        n: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError>;
}

fn to_logits(n: usize, channels: usize, vocab: usize) -> MatmulSpec {
    MatmulSpec { m: n, k: channels, n: vocab, transpose_a: false, transpose_b: true, accumulate: false }
}

fn to_hidden(n: usize, channels: usize, vocab: usize) -> MatmulSpec {
    MatmulSpec { m: n, k: vocab, n: channels, transpose_a: false, transpose_b: false, accumulate: false }
}

fn to_head(n: usize, channels: usize, vocab: usize) -> MatmulSpec {
    MatmulSpec { m: vocab, k: n, n: channels, transpose_a: true, transpose_b: false, accumulate: true }
}

impl<F: CpuFloat> Head<F> for [F] {
    fn len(&self) -> usize {
        <[F]>::len(self)
    }

    fn logits(&self, s: &mut LogprobScratch<F>, n: usize, channels: usize, vocab: usize) -> Result<(), CpuError> {
        let spec = to_logits(n, channels, vocab);
        matmul(&mut s.logits[..n * vocab], &s.hidden_rows[..n * channels], self, spec)
    }

    fn backward(
        &self,
        s: &mut LogprobScratch<F>,
        dlm_head: &mut [F],
        n: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError> {
        let dlogits = &s.logits[..n * vocab];
        matmul(&mut s.dhidden_rows[..n * channels], dlogits, self, to_hidden(n, channels, vocab))?;
        matmul(dlm_head, dlogits, &s.hidden_rows[..n * channels], to_head(n, channels, vocab))
    }
}

/// A bf16 LM head: the hidden rows and `dlogits` are rounded to bf16 before
/// their products.
struct Bf16Head<'a>(&'a [bf16]);

impl Head<f32> for Bf16Head<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn logits(&self, s: &mut LogprobScratch<f32>, n: usize, channels: usize, vocab: usize) -> Result<(), CpuError> {
        round_into(&mut s.hidden_rows_bf16, &s.hidden_rows[..n * channels]);
        matmul_bf16(&mut s.logits[..n * vocab], &s.hidden_rows_bf16, self.0, to_logits(n, channels, vocab))
    }

    fn backward(
        &self,
        s: &mut LogprobScratch<f32>,
        dlm_head: &mut [f32],
        n: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), CpuError> {
        round_into(&mut s.dlogits_bf16, &s.logits[..n * vocab]);
        // `hidden_rows_bf16` still holds this block's rows from `logits`.
        let (dlogits, rows) = (&s.dlogits_bf16, &s.hidden_rows_bf16);
        matmul_bf16(&mut s.dhidden_rows[..n * channels], dlogits, self.0, to_hidden(n, channels, vocab))?;
        matmul_bf16(dlm_head, dlogits, rows, to_head(n, channels, vocab))
    }
}

/// `dst = bf16(src)`, resized to fit.
fn round_into(dst: &mut Vec<bf16>, src: &[f32]) {
    dst.resize(src.len(), bf16::ZERO);
    round_to_bf16(dst, src);
}

/// Gathers a block's hidden rows and computes its logits into the scratch.
fn block_logits<F: CpuFloat, H: Head<F> + ?Sized>(
    scratch: &mut LogprobScratch<F>,
    hidden: &[F],
    lm_head: &H,
    block_rows: &[u32],
    channels: usize,
    vocab: usize,
) -> Result<(), CpuError> {
    let n = block_rows.len();
    ensure(&mut scratch.hidden_rows, n * channels);
    ensure(&mut scratch.logits, n * vocab);
    for (slot, &row) in block_rows.iter().enumerate() {
        let source = &hidden[row as usize * channels..][..channels];
        scratch.hidden_rows[slot * channels..][..channels].copy_from_slice(source);
    }
    lm_head.logits(scratch, n, channels, vocab)
}

/// Calls `f` on each `vocab`-long row of `logits` with its item of
/// `per_row`: across threads with feature `fast`, in order without.
fn for_each_row<F: CpuFloat, T: Send>(
    logits: &mut [F],
    per_row: &mut [T],
    vocab: usize,
    f: impl Fn(&mut [F], &mut T) + Sync + Send,
) {
    #[cfg(feature = "fast")]
    {
        use rayon::prelude::*;
        logits.par_chunks_mut(vocab).zip(per_row.par_iter_mut()).for_each(|(row, item)| f(row, item));
    }
    #[cfg(not(feature = "fast"))]
    logits.chunks_mut(vocab).zip(per_row.iter_mut()).for_each(|(row, item)| f(row, item));
}

/// `log Σ_v e^{x_v}`, the sum accumulated in f64.
fn log_sum_exp<F: CpuFloat>(row: &[F]) -> F {
    let max = row.iter().copied().fold(F::neg_infinity(), F::max);
    F::from_f64(max.widen() + libm::log(F::sum_exp_shifted(row, max)))
}

/// Forward: `logps[r]` and `lse[r]` for every row.
///
/// ```
/// use sapo_core::cpu::ops::{token_logprobs_forward, LogprobScratch};
/// // One token, hidden [1, 1] = [1], vocabulary of 2 with logits [0, ln 3].
/// let lm_head = [0.0_f64, 3.0_f64.ln()];
/// let (mut logps, mut lse) = ([0.0], [0.0]);
/// let mut scratch = LogprobScratch::default();
/// token_logprobs_forward(&mut logps, &mut lse, &[1.0], &lm_head, &[0], &[1], 1, 2, &mut scratch)?;
/// assert!((logps[0] - 0.75_f64.ln()).abs() < 1e-15);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch, a row ≥ T or a target ≥ V.
#[allow(clippy::too_many_arguments)]
pub fn token_logprobs_forward<F: CpuFloat>(
    logps: &mut [F],
    lse: &mut [F],
    hidden: &[F],
    lm_head: &[F],
    rows: &[u32],
    targets: &[u32],
    channels: usize,
    vocab: usize,
    scratch: &mut LogprobScratch<F>,
) -> Result<(), CpuError> {
    forward("token_logprobs_forward", logps, lse, hidden, lm_head, rows, targets, channels, vocab, scratch)
}

/// [`token_logprobs_forward`] with a bf16 LM head and the hidden rows
/// rounded to bf16 (see the module docs).
///
/// ```
/// use half::bf16;
/// use sapo_core::cpu::ops::{token_logprobs_forward, token_logprobs_forward_bf16, LogprobScratch};
/// // 1.003 is not a bf16 value: it is rounded to 1.0 before the product.
/// let lm_head = [bf16::from_f32(0.0), bf16::from_f32(3.0_f32.ln())];
/// let (mut logps, mut lse) = ([0.0_f32], [0.0_f32]);
/// let mut scratch = LogprobScratch::default();
/// token_logprobs_forward_bf16(&mut logps, &mut lse, &[1.003], &lm_head, &[0], &[1], 1, 2, &mut scratch)?;
/// let widened = [0.0, lm_head[1].to_f32()];
/// let (mut expected, mut expected_lse) = ([0.0_f32], [0.0_f32]);
/// token_logprobs_forward(&mut expected, &mut expected_lse, &[1.0], &widened, &[0], &[1], 1, 2, &mut scratch)?;
/// assert_eq!(logps, expected);
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
///
/// # Errors
/// A length mismatch, a row ≥ T or a target ≥ V.
#[allow(clippy::too_many_arguments)]
pub fn token_logprobs_forward_bf16(
    logps: &mut [f32],
    lse: &mut [f32],
    hidden: &[f32],
    lm_head: &[bf16],
    rows: &[u32],
    targets: &[u32],
    channels: usize,
    vocab: usize,
    scratch: &mut LogprobScratch<f32>,
) -> Result<(), CpuError> {
    let op = "token_logprobs_forward_bf16";
    forward(op, logps, lse, hidden, &Bf16Head(lm_head), rows, targets, channels, vocab, scratch)
}

#[allow(clippy::too_many_arguments)]
fn forward<F: CpuFloat, H: Head<F> + ?Sized>(
    op: &'static str,
    logps: &mut [F],
    lse: &mut [F],
    hidden: &[F],
    lm_head: &H,
    rows: &[u32],
    targets: &[u32],
    channels: usize,
    vocab: usize,
    scratch: &mut LogprobScratch<F>,
) -> Result<(), CpuError> {
    check(
        op,
        hidden.len(),
        lm_head.len(),
        rows,
        targets,
        [("logps", logps.len()), ("lse", lse.len())],
        channels,
        vocab,
    )?;
    let per_block = scratch.rows_per_block(vocab);
    for start in (0..rows.len()).step_by(per_block) {
        let end = (start + per_block).min(rows.len());
        block_logits(scratch, hidden, lm_head, &rows[start..end], channels, vocab)?;
        let block_lse = &mut lse[start..end];
        for_each_row(&mut scratch.logits[..(end - start) * vocab], block_lse, vocab, |row_logits, log_sum| {
            *log_sum = log_sum_exp(row_logits);
        });
        for (slot, r) in (start..end).enumerate() {
            logps[r] = scratch.logits[slot * vocab + targets[r] as usize] - lse[r];
        }
    }
    Ok(())
}

/// Backward: accumulates `dhidden` at the rows' tokens and `dlm_head`.
///
/// # Errors
/// A length mismatch, a row ≥ T or a target ≥ V.
#[allow(clippy::too_many_arguments)]
pub fn token_logprobs_backward<F: CpuFloat>(
    dhidden: &mut [F],
    dlm_head: &mut [F],
    dlogps: &[F],
    hidden: &[F],
    lm_head: &[F],
    rows: &[u32],
    targets: &[u32],
    lse: &[F],
    channels: usize,
    vocab: usize,
    scratch: &mut LogprobScratch<F>,
) -> Result<(), CpuError> {
    let op = "token_logprobs_backward";
    backward(op, dhidden, dlm_head, dlogps, hidden, lm_head, rows, targets, lse, channels, vocab, scratch)
}

/// [`token_logprobs_backward`] with a bf16 LM head: the hidden rows and
/// `dlogits` are rounded to bf16 before their products (see the module
/// docs); `dhidden` and `dlm_head` stay f32.
///
/// # Errors
/// A length mismatch, a row ≥ T or a target ≥ V.
#[allow(clippy::too_many_arguments)]
pub fn token_logprobs_backward_bf16(
    dhidden: &mut [f32],
    dlm_head: &mut [f32],
    dlogps: &[f32],
    hidden: &[f32],
    lm_head: &[bf16],
    rows: &[u32],
    targets: &[u32],
    lse: &[f32],
    channels: usize,
    vocab: usize,
    scratch: &mut LogprobScratch<f32>,
) -> Result<(), CpuError> {
    let (op, head) = ("token_logprobs_backward_bf16", &Bf16Head(lm_head));
    backward(op, dhidden, dlm_head, dlogps, hidden, head, rows, targets, lse, channels, vocab, scratch)
}

#[allow(clippy::too_many_arguments)]
fn backward<F: CpuFloat, H: Head<F> + ?Sized>(
    op: &'static str,
    dhidden: &mut [F],
    dlm_head: &mut [F],
    dlogps: &[F],
    hidden: &[F],
    lm_head: &H,
    rows: &[u32],
    targets: &[u32],
    lse: &[F],
    channels: usize,
    vocab: usize,
    scratch: &mut LogprobScratch<F>,
) -> Result<(), CpuError> {
    check(
        op,
        hidden.len(),
        lm_head.len(),
        rows,
        targets,
        [("dlogps", dlogps.len()), ("lse", lse.len())],
        channels,
        vocab,
    )?;
    check_len(op, "dhidden", dhidden.len(), hidden.len())?;
    check_len(op, "dlm_head", dlm_head.len(), lm_head.len())?;
    let per_block = scratch.rows_per_block(vocab);
    for start in (0..rows.len()).step_by(per_block) {
        let end = (start + per_block).min(rows.len());
        let n = end - start;
        block_logits(scratch, hidden, lm_head, &rows[start..end], channels, vocab)?;
        // Logits become dlogits in place.
        let mut row_inputs: Vec<(F, F, usize)> =
            (start..end).map(|r| (dlogps[r], lse[r], targets[r] as usize)).collect();
        for_each_row(&mut scratch.logits[..n * vocab], &mut row_inputs, vocab, |row, &mut (scale, shift, target)| {
            for value in row.iter_mut() {
                *value = -scale * (*value - shift).fast_exp();
            }
            row[target] = row[target] + scale;
        });
        ensure(&mut scratch.dhidden_rows, n * channels);
        lm_head.backward(scratch, dlm_head, n, channels, vocab)?;
        for (slot, &row) in rows[start..end].iter().enumerate() {
            let target = &mut dhidden[row as usize * channels..][..channels];
            target.iter_mut().zip(&scratch.dhidden_rows[slot * channels..][..channels]).for_each(|(d, &g)| *d = *d + g);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_support::{check_gradients, random_vec};
    use alloc::vec;

    #[test]
    fn backward_matches_finite_differences_across_blocks_and_repeated_rows() {
        // 70 rows in blocks of 16 cross four block boundaries; some tokens
        // appear in several rows.
        let (tokens, channels, vocab) = (9, 5, 11);
        let rows: Vec<u32> = (0..70).map(|i| (i * 7 % tokens) as u32).collect();
        let targets: Vec<u32> = (0..70).map(|i| (i * 5 % vocab) as u32).collect();
        let hidden = random_vec::<f64>(1, tokens * channels);
        let lm_head = random_vec::<f64>(2, vocab * channels);
        let weights = random_vec::<f64>(3, rows.len());
        let mut scratch = LogprobScratch::with_block_rows(16);
        let loss = |h: &[f64], w: &[f64], scratch: &mut LogprobScratch<f64>| {
            let (mut logps, mut lse) = (vec![0.0; rows.len()], vec![0.0; rows.len()]);
            token_logprobs_forward(&mut logps, &mut lse, h, w, &rows, &targets, channels, vocab, scratch)
                .expect("valid");
            (logps.iter().zip(&weights).map(|(a, b)| a * b).sum::<f64>(), lse)
        };
        let (_, lse) = loss(&hidden, &lm_head, &mut scratch);
        let (mut dhidden, mut dlm_head) = (vec![0.0; hidden.len()], vec![0.0; lm_head.len()]);
        token_logprobs_backward(
            &mut dhidden,
            &mut dlm_head,
            &weights,
            &hidden,
            &lm_head,
            &rows,
            &targets,
            &lse,
            channels,
            vocab,
            &mut scratch,
        )
        .expect("valid");
        let mut scratch_h = LogprobScratch::with_block_rows(16);
        check_gradients("logprob dhidden", &hidden, &dhidden, 1e-6, |h| loss(h, &lm_head, &mut scratch_h).0);
        let mut scratch_w = LogprobScratch::with_block_rows(16);
        check_gradients("logprob dlm_head", &lm_head, &dlm_head, 1e-6, |w| loss(&hidden, w, &mut scratch_w).0);
    }

    /// ‖a − b‖ / ‖b‖.
    fn relative(a: &[f32], b: &[f32]) -> f64 {
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
        norm(&mut a.iter().zip(b).map(|(x, y)| f64::from(x - y))) / norm(&mut b.iter().map(|&y| f64::from(y)))
    }

    #[test]
    fn bf16_variants_round_the_hidden_rows_and_the_logit_gradients() {
        // Blocks of 8 over 30 rows, tokens repeated; hidden values that are
        // not bf16 values, so the rounding shows.
        let (tokens, channels, vocab) = (11, 24, 53);
        let rows: Vec<u32> = (0..30).map(|i| (i * 7 % tokens) as u32).collect();
        let targets: Vec<u32> = (0..30).map(|i| (i * 5 % vocab) as u32).collect();
        let hidden: Vec<f32> = random_vec::<f32>(6, tokens * channels).iter().map(|x| 3.0 * x).collect();
        let head: Vec<bf16> = random_vec::<f32>(7, vocab * channels).into_iter().map(bf16::from_f32).collect();
        let widened: Vec<f32> = head.iter().map(|x| x.to_f32()).collect();
        let rounded: Vec<f32> = hidden.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert!(rounded != hidden);
        let dlogps: Vec<f32> = random_vec(8, rows.len());
        let (n, mut scratch) = (rows.len(), LogprobScratch::with_block_rows(8));

        // Forward: the f32 op on the rounded hidden states and the widened
        // head (the products of bf16 values are exact in f32), up to the
        // order of the f32 sums (the AVX-512 BF16 kernel adds in pairs).
        let (mut logps, mut lse) = (vec![0.0; n], vec![0.0; n]);
        token_logprobs_forward_bf16(
            &mut logps,
            &mut lse,
            &hidden,
            &head,
            &rows,
            &targets,
            channels,
            vocab,
            &mut scratch,
        )
        .expect("valid");
        let (mut logps_f32, mut lse_f32) = (vec![0.0; n], vec![0.0; n]);
        token_logprobs_forward(
            &mut logps_f32,
            &mut lse_f32,
            &rounded,
            &widened,
            &rows,
            &targets,
            channels,
            vocab,
            &mut scratch,
        )
        .expect("valid");
        for (name, a, b) in [("logps", &logps, &logps_f32), ("lse", &lse, &lse_f32)] {
            let error = relative(a, b);
            assert!(error < 1e-6, "{name}: relative difference {error:e}");
        }

        // Backward: the f32 op on the same inputs but for the rounding of
        // the logit gradients, which moves the results by about bf16's
        // precision (2⁻⁹ relative per element; 1.9e-3 and 2.0e-3 here), not more.
        let mut backward = |bf16_head: bool| {
            let (mut dhidden, mut dhead) = (vec![0.0; hidden.len()], vec![0.0; head.len()]);
            let result = if bf16_head {
                let (h, w) = (&hidden, &head);
                token_logprobs_backward_bf16(
                    &mut dhidden,
                    &mut dhead,
                    &dlogps,
                    h,
                    w,
                    &rows,
                    &targets,
                    &lse,
                    channels,
                    vocab,
                    &mut scratch,
                )
            } else {
                let (h, w) = (&rounded, &widened);
                token_logprobs_backward(
                    &mut dhidden,
                    &mut dhead,
                    &dlogps,
                    h,
                    w,
                    &rows,
                    &targets,
                    &lse,
                    channels,
                    vocab,
                    &mut scratch,
                )
            };
            result.expect("valid");
            (dhidden, dhead)
        };
        let ((dhidden, dhead), (dhidden_f32, dhead_f32)) = (backward(true), backward(false));
        for (name, a, b) in [("dhidden", &dhidden, &dhidden_f32), ("dlm_head", &dhead, &dhead_f32)] {
            let error = relative(a, b);
            std::println!("{name}: bf16 against f32 logit gradients: relative difference {error:.1e}");
            assert!(error > 0.0 && error < 1e-2, "{name}: relative difference {error:e}");
        }
    }

    #[test]
    fn forward_matches_a_naive_log_softmax() {
        let (channels, vocab) = (3, 4);
        let hidden = random_vec::<f64>(4, 2 * channels);
        let lm_head = random_vec::<f64>(5, vocab * channels);
        let (mut logps, mut lse) = ([0.0; 2], [0.0; 2]);
        let mut scratch = LogprobScratch::default();
        token_logprobs_forward(
            &mut logps,
            &mut lse,
            &hidden,
            &lm_head,
            &[1, 0],
            &[3, 2],
            channels,
            vocab,
            &mut scratch,
        )
        .expect("valid");
        for (r, (&row, &target)) in [1usize, 0].iter().zip(&[3usize, 2]).enumerate() {
            let logits: Vec<f64> = (0..vocab)
                .map(|v| (0..channels).map(|c| hidden[row * channels + c] * lm_head[v * channels + c]).sum())
                .collect();
            let log_sum = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
            assert!((logps[r] - (logits[target] - log_sum)).abs() < 1e-14);
        }
    }
}
