//! Matrix products on bf16 operands with f32 output and sums, through
//! `cublasGemmEx`, and the rounding to bf16 that prepares their operands
//! (`kernels/matmul_bf16.cu`), as in sapo-core's `cpu/matmul_bf16.rs`.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType_t};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use half::bf16;
use sapo_core::backend::MatmulSpec;

use super::matmul::{gemm_config, needs_product};
use crate::buffer::CudaBuf;
use crate::device::{CudaBackend, elementwise};
use crate::error::{CudaError, Result, check_at_least};

/// `out (=|+=) op(a)·op(b)` with bf16 `a` and `b`.
pub(crate) fn matmul_bf16(
    backend: &CudaBackend,
    out: &mut CudaBuf<f32>,
    a: &CudaBuf<bf16>,
    b: &CudaBuf<bf16>,
    spec: MatmulSpec,
) -> Result {
    const OP: &str = "matmul_bf16";
    check_at_least(OP, "a", a.len, spec.a_len())?;
    check_at_least(OP, "b", b.len, spec.b_len())?;
    check_at_least(OP, "out", out.len, spec.out_len())?;
    gemm_bf16(backend, out, a, b, spec)
}

/// `out[i] = bf16(x[i])` for `i < n`, rounded to nearest even as
/// `half::bf16::from_f32` rounds.
pub(crate) fn round_to_bf16(backend: &CudaBackend, out: &mut CudaBuf<bf16>, x: &CudaBuf<f32>, n: usize) -> Result {
    const OP: &str = "round_to_bf16";
    check_at_least(OP, "out", out.len, n)?;
    check_at_least(OP, "x", x.len, n)?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    backend.launch(&backend.kernels().round_to_bf16, elementwise(n), |args| {
        args.buf_mut(out).buf(x).value(&n64);
    })
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
