//! The CUDA C++ kernel source, its run-time compilation with NVRTC, and the
//! loaded functions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::CudaError;

/// Every kernel of the backend, in one CUDA C++ translation unit with no
/// `#include` (so NVRTC needs no toolkit headers at run time).
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

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
    add_bias,
    add,
    add_assign,
    scale,
    round_to_bf16,
    swiglu_forward,
    swiglu_backward,
    column_sum,
    embedding_forward,
    rms_norm_forward,
    rms_norm_backward_input,
    rope,
    attention_forward,
    attention_delta,
    attention_backward_dq,
    attention_backward_dkv,
    attention_forward_tiled_d64,
    attention_backward_dq_tiled_d64,
    attention_backward_dkv_tiled_d64,
    attention_forward_tiled_d128,
    attention_backward_dq_tiled_d128,
    attention_backward_dkv_tiled_d128,
    kv_cache_write,
    attention_cached,
    gather_rows,
    scatter_add_rows,
    logits_lse,
    logits_grad,
    sequence_logprobs,
    sequence_logprobs_backward,
    adamw_step,
    rmsprop_step,
    ema_update,
    embedding_backward_grouped,
    add_rows,
    sum_of_squares_partials,
);
