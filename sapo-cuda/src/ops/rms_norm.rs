//! RMSNorm (`kernels/rms_norm.cu`), as in sapo-core's `cpu/rms_norm.rs`; the
//! weight gradient is [`super::matmul::column_sum`]'s product form.

use super::matmul::column_sum;
use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, per_row};
use crate::error::{Result, check_at_least, dim};

/// `out[r] = weight ⊙ inp[r] · rstd[r]`, `rstd[r] = 1/√(mean(inp[r]²) + eps)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rms_norm_forward(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    rstd: &mut CudaBuf<f32>,
    inp: &CudaBuf<f32>,
    weight: &CudaBuf<f32>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result {
    const OP: &str = "rms_norm_forward";
    check_at_least(OP, "out", out.len, rows * cols)?;
    check_at_least(OP, "rstd", rstd.len, rows)?;
    check_at_least(OP, "inp", inp.len, rows * cols)?;
    check_at_least(OP, "weight", weight.len, cols)?;
    if rows * cols == 0 {
        return Ok(());
    }
    let (r, c) = (dim(OP, "rows", rows)?, dim(OP, "cols", cols)?);
    backend.launch(&backend.kernels().rms_norm_forward, per_row(rows), |args| {
        args.buf_mut(out).buf_mut(rstd).buf(inp).buf(weight).value(&r).value(&c).value(&eps);
    })
}

/// Accumulates `dinp` and `dweight` from `dout`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rms_norm_backward(
    backend: &CudaBackend,
    dinp: &mut CudaBuf<f32>,
    dweight: &mut CudaBuf<f32>,
    dout: &CudaBuf<f32>,
    inp: &CudaBuf<f32>,
    weight: &CudaBuf<f32>,
    rstd: &CudaBuf<f32>,
    rows: usize,
    cols: usize,
) -> Result {
    const OP: &str = "rms_norm_backward";
    for (name, len) in [("dinp", dinp.len), ("dout", dout.len), ("inp", inp.len)] {
        check_at_least(OP, name, len, rows * cols)?;
    }
    check_at_least(OP, "rstd", rstd.len, rows)?;
    check_at_least(OP, "weight", weight.len, cols)?;
    check_at_least(OP, "dweight", dweight.len, cols)?;
    if rows * cols == 0 {
        return Ok(());
    }
    let (r, c) = (dim(OP, "rows", rows)?, dim(OP, "cols", cols)?);
    backend.launch(&backend.kernels().rms_norm_backward_input, per_row(rows), |args| {
        args.buf_mut(dinp).buf(dout).buf(inp).buf(weight).buf(rstd).value(&r).value(&c);
    })?;
    column_sum(backend, OP, dweight, dout, Some((inp, rstd)), rows, cols)
}
