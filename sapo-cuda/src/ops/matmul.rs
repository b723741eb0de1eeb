//! Row-major matrix products through cuBLAS's column-major SGEMM, and a
//! linear layer's bias (`kernels/matmul.cu`), as in sapo-core's
//! `cpu/matmul.rs`.
//!
//! A row-major `[r, c]` array read column-major is its transpose, so
//! `out = op(a)·op(b)` (row-major) is computed as the column-major product
//! `outᵀ = op(b)ᵀ · op(a)ᵀ`: cuBLAS's first operand is `b`, its second `a`,
//! with the dimensions swapped and no copies. The products on bf16 operands
//! (`matmul_bf16.rs`) go through cuBLAS the same way.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};
use sapo_core::backend::MatmulSpec;

use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, elementwise};
use crate::error::{CudaError, Result, check_at_least, dim};

/// `out (=|+=) op(a)·op(b)`.
pub(crate) fn matmul(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<f32>,
    b: &CudaBuf<f32>,
    spec: MatmulSpec,
) -> Result {
    matmul_batched(backend, out, a, b, spec, 1)
}

/// `out (=|+=) op(a)·op(b)` for `batch` matrices of each stored back to back.
pub(crate) fn matmul_batched(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<f32>,
    b: &CudaBuf<f32>,
    spec: MatmulSpec,
    batch: usize,
) -> Result {
    const OP: &str = "matmul";
    check_at_least(OP, "a", a.len, spec.a_len() * batch)?;
    check_at_least(OP, "b", b.len, spec.b_len() * batch)?;
    check_at_least(OP, "out", out.len, spec.out_len() * batch)?;
    gemm(backend, &mut out.view_mut(), &a.view(), &b.view(), spec, batch)
}

/// The cuBLAS configuration of one row-major product.
pub(crate) fn gemm_config(spec: MatmulSpec) -> GemmConfig<f32> {
    let op =
        |transposed: bool| if transposed { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    let (m, k, n) = (spec.m as i32, spec.k as i32, spec.n as i32);
    GemmConfig {
        // cuBLAS's A is op(b)ᵀ [n, k]: `b` stored [k, n] row-major is that
        // matrix column-major (ld n); stored [n, k] it needs a transpose (ld k).
        transa: op(spec.transpose_b),
        transb: op(spec.transpose_a),
        m: n,
        n: m,
        k,
        alpha: 1.0,
        lda: if spec.transpose_b { k } else { n },
        ldb: if spec.transpose_a { m } else { k },
        beta: if spec.accumulate { 1.0 } else { 0.0 },
        ldc: n,
    }
}

/// `out (=|+=) op(a)·op(b)` for `batch` matrices back to back. Lengths are
/// the caller's to check.
pub(crate) fn gemm(
    backend: &CudaBackend,
    out: &mut CudaViewMut<'_, f32>,
    a: &CudaView<'_, f32>,
    b: &CudaView<'_, f32>,
    spec: MatmulSpec,
    batch: usize,
) -> Result<(), CudaError> {
    if !needs_product("matmul", spec, batch, |len| Ok(backend.stream().memset_zeros(&mut out.slice_mut(..len))?))? {
        return Ok(());
    }
    let config = gemm_config(spec);
    let blas = backend.blas();
    // SAFETY: the caller checked that `a`, `b` and `out` hold `batch`
    // matrices of the spec's shapes, which is all cuBLAS reads or writes.
    unsafe {
        if batch == 1 {
            blas.gemm(config, b, a, out)?;
        } else {
            let strided = StridedBatchedConfig {
                gemm: config,
                batch_size: batch as i32,
                stride_a: spec.b_len() as i64,
                stride_b: spec.a_len() as i64,
                stride_c: spec.out_len() as i64,
            };
            blas.gemm_strided_batched(strided, b, a, out)?;
        }
    }
    backend.sync_if_profiling()
}

/// Checks the dimensions against cuBLAS's `i32` and handles the products
/// with nothing to compute; `zero(len)` clears the first `len` outputs (an
/// empty sum overwriting them). Returns whether cuBLAS must run.
pub(crate) fn needs_product(
    op: &'static str,
    spec: MatmulSpec,
    batch: usize,
    zero: impl FnOnce(usize) -> Result<(), CudaError>,
) -> Result<bool, CudaError> {
    let largest = spec.m.max(spec.n).max(spec.k).max(batch);
    if largest > i32::MAX as usize {
        return Err(CudaError::InvalidDims { op, reason: format!("dimension {largest} exceeds cuBLAS's i32") });
    }
    if spec.m == 0 || spec.n == 0 || batch == 0 {
        return Ok(false);
    }
    if spec.k == 0 {
        // An empty sum: zeros, or nothing to add.
        if !spec.accumulate {
            zero(spec.out_len() * batch)?;
        }
        return Ok(false);
    }
    Ok(true)
}

/// `out[r, c] += bias[c]` for the first `rows × cols` elements.
pub(crate) fn add_bias(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    bias: &CudaBuf<f32>,
    rows: usize,
    cols: usize,
) -> Result {
    const OP: &str = "add_bias";
    check_at_least(OP, "out", out.len, rows * cols)?;
    check_at_least(OP, "bias", bias.len, cols)?;
    if rows * cols == 0 {
        return Ok(());
    }
    let (r, c) = (dim(OP, "rows", rows)?, dim(OP, "cols", cols)?);
    backend.launch(&backend.kernels().add_bias, elementwise(rows * cols), |args| {
        args.buf_mut(out).buf(bias).value(&r).value(&c);
    })
}

/// `dbias[c] += Σ_r dout[r, c]`.
pub(crate) fn add_bias_backward(
    backend: &CudaBackend,
    dbias: &mut CudaBuf<f32>,
    dout: &CudaBuf<f32>,
    rows: usize,
    cols: usize,
) -> Result {
    const OP: &str = "add_bias_backward";
    check_at_least(OP, "dout", dout.len, rows * cols)?;
    check_at_least(OP, "dbias", dbias.len, cols)?;
    column_sum(backend, OP, dbias, dout, None, rows, cols)
}

/// `dst[c] += Σ_r src[r, c]`, or `Σ_r src[r, c]·other[r, c]·row_scale[r]`
/// (the RMSNorm weight gradient, `rms_norm.rs`). Lengths are the
/// caller's to check.
pub(crate) fn column_sum(
    backend: &CudaBackend,
    op: &'static str,
    dst: &mut CudaBuf<f32>,
    src: &CudaBuf<f32>,
    product: Option<(&CudaBuf<f32>, &CudaBuf<f32>)>,
    rows: usize,
    cols: usize,
) -> Result {
    if rows * cols == 0 {
        return Ok(());
    }
    let (r, c) = (dim(op, "rows", rows)?, dim(op, "cols", cols)?);
    let config =
        LaunchConfig { grid_dim: (cols.div_ceil(32) as u32, 1, 1), block_dim: (32, 16, 1), shared_mem_bytes: 0 };
    let null = 0_u64;
    backend.launch(&backend.kernels().column_sum, config, |args| {
        args.buf_mut(dst).buf(src);
        match product {
            Some((other, row_scale)) => args.buf(other).buf(row_scale),
            None => args.value(&null).value(&null),
        };
        args.value(&r).value(&c);
    })
}
