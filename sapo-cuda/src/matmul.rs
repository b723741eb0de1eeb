//! Row-major matrix products through cuBLAS's column-major SGEMM.
//!
//! A row-major `[r, c]` array read column-major is its transpose, so
//! `out = op(a)·op(b)` (row-major) is computed as the column-major product
//! `outᵀ = op(b)ᵀ · op(a)ᵀ`: cuBLAS's first operand is `b`, its second `a`,
//! with the dimensions swapped and no copies.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaView, CudaViewMut};
use sapo_core::backend::MatmulSpec;

use crate::backend::CudaBackend;
use crate::error::CudaError;

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
    const OP: &str = "matmul";
    let largest = spec.m.max(spec.n).max(spec.k).max(batch);
    if largest > i32::MAX as usize {
        return Err(CudaError::InvalidDims { op: OP, reason: format!("dimension {largest} exceeds cuBLAS's i32") });
    }
    if spec.m == 0 || spec.n == 0 || batch == 0 {
        return Ok(());
    }
    if spec.k == 0 {
        // An empty sum: zeros, or nothing to add.
        if !spec.accumulate {
            let len = spec.out_len() * batch;
            backend.stream().memset_zeros(&mut out.slice_mut(..len))?;
        }
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
