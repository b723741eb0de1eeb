//! The CUDA C++ kernel source, its run-time compilation with NVRTC, and the
//! loaded functions.
//!
//! The source is split like [`crate::ops`]: `kernels/<op>.cu` holds the
//! kernels `ops/<op>.rs` launches, and `kernels/common.cu` the types and
//! helpers they share. [`KERNEL_SOURCE`] concatenates them in a fixed order
//! (common first, then alphabetical) into one translation unit, so a line
//! number in NVRTC's log counts from the top of that concatenation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::CudaError;

/// Every kernel of the backend, in one CUDA C++ translation unit with no
/// `#include` (so NVRTC needs no toolkit headers at run time): the files of
/// `src/kernels/`, `common.cu` first.
pub const KERNEL_SOURCE: &str = concat!(
    include_str!("kernels/common.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/attention_blocked.cu"),
    include_str!("kernels/elementwise.cu"),
    include_str!("kernels/embedding.cu"),
    include_str!("kernels/kv_cache.cu"),
    include_str!("kernels/logprob.cu"),
    include_str!("kernels/matmul.cu"),
    include_str!("kernels/matmul_bf16.cu"),
    include_str!("kernels/optim.cu"),
    include_str!("kernels/rms_norm.cu"),
    include_str!("kernels/rope.cu"),
    include_str!("kernels/sequence.cu"),
);

/// The targets CI compiles the source for (A100 and H100 class).
pub const CHECKED_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// Whether NVRTC's library can be loaded (`libnvrtc.so.13`, `.12`, … on the
/// library path). Compiling without it would panic inside cudarc.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to load the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`KERNEL_SOURCE`] to PTX for `arch` (such as `sm_90`).
///
/// # Errors
/// [`CudaError::Unavailable`] when NVRTC's library is missing,
/// [`CudaError::Compile`] with NVRTC's log when the source does not compile.
pub fn compile_kernels(arch: &str) -> Result<Ptx, CudaError> {
    compile_source(KERNEL_SOURCE, arch)
}

/// Compiles any CUDA C++ `source` to PTX for `arch`, as [`compile_kernels`]
/// compiles the backend's own (tests use it to check that NVRTC's errors
/// come back as [`CudaError::Compile`]).
///
/// # Errors
/// As [`compile_kernels`].
pub fn compile_source(source: &str, arch: &str) -> Result<Ptx, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::Unavailable(
            "NVRTC (libnvrtc.so) was not found on the library path; install the CUDA toolkit or the \
             `nvidia-cuda-nvrtc` wheel and add its lib folder to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some("sapo_kernels.cu".into()),
        ..CompileOptions::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source, options)
        .map_err(|error| CudaError::Compile { arch: arch.to_string(), log: format!("{error:?}") })
}

/// PTX per target, compiled once per process: every backend on a device of
/// the same compute capability reuses it.
fn cached_ptx(arch: &str) -> Result<Ptx, CudaError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Ptx>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(ptx) = cache.lock().map_err(|_| poisoned())?.get(arch) {
        return Ok(ptx.clone());
    }
    let ptx = compile_kernels(arch)?;
    cache.lock().map_err(|_| poisoned())?.insert(arch.to_string(), ptx.clone());
    Ok(ptx)
}

fn poisoned() -> CudaError {
    CudaError::InvalidDims { op: "compile_kernels", reason: "the PTX cache lock was poisoned".into() }
}

macro_rules! kernel_table {
    ($($name:ident),* $(,)?) => {
        /// The loaded kernels, one field per `extern "C"` function of the source.
        pub(crate) struct Kernels {
            $(pub(crate) $name: CudaFunction,)*
        }

        /// The names of every kernel the backend launches.
        pub const KERNEL_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Kernels {
            /// Compiles (or reuses) the PTX for `arch` and loads every kernel.
            pub(crate) fn load(context: &Arc<CudaContext>, arch: &str) -> Result<Self, CudaError> {
                let module = context.load_module(cached_ptx(arch)?)?;
                Ok(Kernels { $($name: module.load_function(stringify!($name))?,)* })
            }
        }
    };
}

kernel_table!(
    // attention.cu
    attention_forward,
    attention_delta,
    attention_backward_dq,
    attention_backward_dkv,
    // attention_blocked.cu
    attention_forward_blocked_d64,
    attention_backward_dq_blocked_d64,
    attention_backward_dkv_blocked_d64,
    attention_forward_blocked_d128,
    attention_backward_dq_blocked_d128,
    attention_backward_dkv_blocked_d128,
    // elementwise.cu
    add,
    add_assign,
    swiglu_forward,
    swiglu_backward,
    // embedding.cu
    embedding_forward,
    embedding_backward_grouped,
    // kv_cache.cu
    kv_cache_write,
    attention_cached,
    // logprob.cu
    gather_rows,
    scatter_add_rows,
    add_rows,
    logits_lse,
    logits_grad,
    // matmul.cu
    add_bias,
    column_sum,
    // matmul_bf16.cu
    round_to_bf16,
    // optim.cu
    adamw_step,
    rmsprop_step,
    ema_update,
    sum_of_squares_partials,
    scale,
    // rms_norm.cu
    rms_norm_forward,
    rms_norm_backward_input,
    // rope.cu
    rope,
    // sequence.cu
    sequence_logprobs,
    sequence_logprobs_backward,
);
