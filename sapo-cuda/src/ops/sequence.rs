//! Per-sequence sums and means of token log-probs (`kernels/sequence.cu`), as
//! in sapo-core's `cpu/sequence.rs`.

use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, elementwise, per_row};
use crate::error::{Result, check_at_least, dim};

/// `sums[s]` and `means[s]` of `logps[r]` over the rows with `row_seqs[r] = s`
/// (summed in f64; a sequence with no rows has mean 0).
pub(crate) fn sequence_logprobs(
    backend: &CudaBackend,
    sums: &mut CudaBuf<f32>,
    means: &mut CudaBuf<f32>,
    logps: &CudaBuf<f32>,
    row_seqs: &CudaBuf<u32>,
    n_rows: usize,
    n_seqs: usize,
) -> Result {
    const OP: &str = "sequence_logprobs";
    check_at_least(OP, "logps", logps.len, n_rows)?;
    check_at_least(OP, "row_seqs", row_seqs.len, n_rows)?;
    check_at_least(OP, "sums", sums.len, n_seqs)?;
    check_at_least(OP, "means", means.len, n_seqs)?;
    if n_seqs == 0 {
        return Ok(());
    }
    let (r, s) = (dim(OP, "n_rows", n_rows)?, dim(OP, "n_seqs", n_seqs)?);
    let null = 0_u64;
    backend.launch(&backend.kernels().sequence_logprobs, per_row(n_seqs), |args| {
        args.buf_mut(sums).buf_mut(means).value(&null).buf(logps).buf(row_seqs).value(&r).value(&s);
    })
}

/// `dlogps[r] += dsums[s] + dmeans[s] / count[s]` for `s = row_seqs[r]`; the
/// counts come from the forward kernel run again into scratch.
pub(crate) fn sequence_logprobs_backward(
    backend: &CudaBackend,
    dlogps: &mut CudaBuf<f32>,
    dsums: &CudaBuf<f32>,
    dmeans: &CudaBuf<f32>,
    row_seqs: &CudaBuf<u32>,
    n_rows: usize,
    n_seqs: usize,
) -> Result {
    const OP: &str = "sequence_logprobs_backward";
    check_at_least(OP, "dlogps", dlogps.len, n_rows)?;
    check_at_least(OP, "row_seqs", row_seqs.len, n_rows)?;
    check_at_least(OP, "dsums", dsums.len, n_seqs)?;
    check_at_least(OP, "dmeans", dmeans.len, n_seqs)?;
    if n_rows == 0 || n_seqs == 0 {
        return Ok(());
    }
    let (r, s) = (dim(OP, "n_rows", n_rows)?, dim(OP, "n_seqs", n_seqs)?);
    let null = 0_u64;
    let kernels = backend.kernels();
    let mut scratch = backend.scratch()?;
    let counts = backend.grow(&mut scratch.sequence_counts, n_seqs)?;
    backend.launch(&kernels.sequence_logprobs, per_row(n_seqs), |args| {
        args.value(&null).value(&null).buf_mut(counts).buf(dlogps).buf(row_seqs).value(&r).value(&s);
    })?;
    let counts = &*counts;
    backend.launch(&kernels.sequence_logprobs_backward, elementwise(n_rows), |args| {
        args.buf_mut(dlogps).buf(dsums).buf(dmeans).buf(counts).buf(row_seqs).value(&r).value(&s);
    })
}
