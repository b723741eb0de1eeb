//! Row-major matrix products through cuBLAS's column-major SGEMM.
//!
//! A row-major `[r, c]` array read column-major is its transpose, so
//! `out = op(a)·op(b)` (row-major) is computed as the column-major product
//! `outᵀ = op(b)ᵀ · op(a)ᵀ`: cuBLAS's first operand is `b`, its second `a`,
//! with the dimensions swapped and no copies. bf16 products go through
//! `cublasGemmEx` the same way, with bf16 operands and f32 output and sums.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};
use half::bf16;
use sapo_core::backend::MatmulSpec;

use crate::backend::CudaBackend;
use crate::buffer::CudaBuf;
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
fn needs_product(
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

/// `out (=|+=) op(a)·op(b)` with bf16 `a` and `b`, f32 `out`, and f32 sums
/// on the tensor cores (`CUBLAS_COMPUTE_32F`). Lengths are the caller's to
/// check.
pub(crate) fn gemm_bf16(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<bf16>,
    b: &CudaBuf<bf16>,
    spec: MatmulSpec,
) -> Result<(), CudaError> {
    let zero = |len: usize| -> Result<(), CudaError> {
        Ok(backend.stream().memset_zeros(&mut out.bytes.slice_mut(..len * core::mem::size_of::<f32>()))?)
    };
    if !needs_product("matmul_bf16", spec, 1, zero)? {
        return Ok(());
    }
    let config = gemm_config(spec);
    let stream = backend.stream();
    // The guards record the stream's use of each buffer when dropped, after the call.
    let (a_ptr, _a_read) = a.bytes.device_ptr(stream);
    let (b_ptr, _b_read) = b.bytes.device_ptr(stream);
    let (out_ptr, _out_write) = out.bytes.device_ptr_mut(stream);
    // SAFETY: the caller checked that `a`, `b` and `out` hold matrices of the
    // spec's shapes (bf16, bf16, f32), which is all cuBLAS reads or writes;
    // alpha and beta are f32 as CUBLAS_COMPUTE_32F requires, and outlive the
    // call; the handle runs on the backend's stream.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *backend.blas().handle(),
            config.transa,
            config.transb,
            config.m,
            config.n,
            config.k,
            (&config.alpha as *const f32).cast(),
            b_ptr as *const core::ffi::c_void,
            cudaDataType_t::CUDA_R_16BF,
            config.lda,
            a_ptr as *const core::ffi::c_void,
            cudaDataType_t::CUDA_R_16BF,
            config.ldb,
            (&config.beta as *const f32).cast(),
            out_ptr as *mut core::ffi::c_void,
            cudaDataType_t::CUDA_R_32F,
            config.ldc,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )?;
    }
    backend.sync_if_profiling()
}
