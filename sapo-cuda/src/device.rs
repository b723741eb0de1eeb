//! [`CudaBackend`] itself: opening a device, its settings, and the plumbing
//! every operation in [`crate::ops`] shares (scratch memory, launch shapes,
//! kernel launches).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use half::bf16;
use sapo_core::backend::Element;

use crate::buffer::CudaBuf;
use crate::error::{CudaError, Result};
use crate::kernels::Kernels;

/// Threads per block of the elementwise and per-row kernels.
pub(crate) const BLOCK: u32 = 256;
/// Grid-stride kernels never launch more blocks than this (enough to fill
/// any current GPU several times over).
const MAX_BLOCKS: usize = 65_535;

/// Scratch memory reused across operations (they run in order on one
/// stream, so one buffer of each kind suffices); grown on demand with
/// [`CudaBackend::grow`]. Each field belongs to the operation named.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Log-probs: gathered hidden rows of one block `[rows, C]`.
    pub(crate) rows_hidden: Option<CudaBuf<f32>>,
    /// Log-probs: their logits, then logit gradients `[rows, V]`.
    pub(crate) logits: Option<CudaBuf<f32>>,
    /// Log-probs: hidden-row gradients of one block `[rows, C]`.
    pub(crate) rows_dhidden: Option<CudaBuf<f32>>,
    /// Log-probs with a bf16 LM head: the rounded hidden rows.
    pub(crate) rows_hidden_bf16: Option<CudaBuf<bf16>>,
    /// Log-probs with a bf16 LM head: the rounded logit gradients.
    pub(crate) logits_bf16: Option<CudaBuf<bf16>>,
    /// Attention backward: `dout·out` per (token, head).
    pub(crate) attention_delta: Option<CudaBuf<f32>>,
    /// Sequence log-probs backward: scored rows per sequence.
    pub(crate) sequence_counts: Option<CudaBuf<f32>>,
    /// `sum_of_squares`: per-block f64 partial sums.
    pub(crate) sum_of_squares: Option<CudaSlice<f64>>,
    /// Embedding backward: the distinct ids of the tokens grouped by id.
    pub(crate) group_ids: Option<CudaBuf<u32>>,
    /// Embedding backward: each group's offset into `group_tokens`.
    pub(crate) group_offsets: Option<CudaBuf<u32>>,
    /// Embedding backward: the token indices, grouped by id.
    pub(crate) group_tokens: Option<CudaBuf<u32>>,
}

/// The `Backend` on one CUDA device: kernels compiled by NVRTC for the
/// device's compute capability, matrix products through cuBLAS (full f32:
/// cuBLAS's default math mode, no TF32), everything on one stream.
///
/// [`CudaBackend::new`] checks for the driver, NVRTC and cuBLAS libraries
/// before touching them (cudarc panics on a missing library), so a machine
/// without a GPU gets [`CudaError::Unavailable`]:
///
/// ```
/// match sapo_cuda::CudaBackend::new(0) {
///     Ok(backend) => println!("{}", backend.device_name()),
///     Err(error) => println!("skipped: {error}"),
/// }
/// ```
pub struct CudaBackend {
    /// The one stream (it holds the device context alive).
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    scratch: Mutex<Scratch>,
    name: String,
    arch: String,
    /// Wait for the device after every launch and product (profiling only).
    synchronous: AtomicBool,
}

impl core::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CudaBackend({}, {})", self.name, self.arch)
    }
}

/// Why no device can be used, or `None` when the libraries load and a device
/// is present. Never panics.
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: each call only tries to load a library.
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    if !driver {
        return Some("the CUDA driver library (libcuda.so.1) was not found".into());
    }
    if !nvrtc {
        return Some("NVRTC (libnvrtc.so) was not found on the library path".into());
    }
    if !cublas {
        return Some("cuBLAS (libcublas.so) was not found on the library path".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the driver reports no GPU".into()),
        Ok(_) => None,
        Err(error) => Some(format!("the driver could not count devices: {error}")),
    }
}

impl CudaBackend {
    /// Opens device `ordinal`, compiles (or reuses) the kernels for its
    /// compute capability and creates the cuBLAS handle.
    ///
    /// # Errors
    /// [`CudaError::Unavailable`] without a driver, NVRTC, cuBLAS or such a
    /// device; a driver, compile or cuBLAS error otherwise.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        if let Some(reason) = unavailable_reason() {
            return Err(CudaError::Unavailable(reason));
        }
        let count = CudaContext::device_count()? as usize;
        if ordinal >= count {
            return Err(CudaError::Unavailable(format!("device {ordinal} requested, the driver reports {count}")));
        }
        let context = CudaContext::new(ordinal)?;
        // One stream: cudarc's per-buffer events (for ordering across
        // streams) would only cost two event creations per allocation.
        // SAFETY: no buffer is ever used on another stream.
        unsafe { context.disable_event_tracking() };
        let (major, minor) = context.compute_capability()?;
        let arch = format!("sm_{major}{minor}");
        let name = context.name()?;
        let stream = context.default_stream();
        let blas = CudaBlas::new(stream.clone())?;
        let kernels = Kernels::load(&context, &arch)?;
        Ok(CudaBackend {
            stream,
            blas,
            kernels,
            scratch: Mutex::new(Scratch::default()),
            name,
            arch,
            synchronous: AtomicBool::new(false),
        })
    }

    /// The device's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The compile target, such as `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Waits for all queued work (for timing).
    ///
    /// # Errors
    /// A driver error, such as a fault in an earlier kernel.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        Ok(self.stream.synchronize()?)
    }

    /// Makes every operation wait for the device before it returns, so that
    /// host timers around operations (`sapo_core::profile::Profiled`)
    /// measure device time. Slows training; for profiling only.
    pub fn set_synchronous(&self, synchronous: bool) {
        self.synchronous.store(synchronous, Ordering::Relaxed);
    }

    /// Lets cuBLAS run f32 products on the tensor cores in TF32 (10-bit
    /// mantissa inputs, f32 accumulation): several times faster, relative
    /// error about 5e-4 instead of 1e-6. Off by default (full f32, the
    /// reference-comparable mode); PyTorch's `allow_tf32` is the same switch.
    ///
    /// # Errors
    /// A cuBLAS error.
    pub fn set_tf32(&self, tf32: bool) -> Result {
        use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode, cublasStatus_t};
        let mode = if tf32 { cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH } else { cublasMath_t::CUBLAS_DEFAULT_MATH };
        // SAFETY: the handle is live for the backend's lifetime; the call only sets a mode.
        let status = unsafe { cublasSetMathMode(*self.blas.handle(), mode) };
        if status != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(CudaError::Cublas(cudarc::cublas::result::CublasError(status)));
        }
        Ok(())
    }

    /// The one stream every operation runs on.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle, on [`CudaBackend::stream`].
    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// The loaded kernels.
    pub(crate) fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    /// Waits for the device when [`CudaBackend::set_synchronous`] is on.
    pub(crate) fn sync_if_profiling(&self) -> Result {
        if self.synchronous.load(Ordering::Relaxed) {
            self.stream.synchronize()?;
        }
        Ok(())
    }

    /// `bytes` of zeroed device memory.
    pub(crate) fn alloc_bytes(&self, bytes: usize) -> Result<CudaSlice<u8>, CudaError> {
        // A zero-byte allocation is still a distinct valid pointer.
        Ok(self.stream.alloc_zeros::<u8>(bytes.max(4))?)
    }

    /// The scratch memory, locked for one operation.
    pub(crate) fn scratch(&self) -> Result<MutexGuard<'_, Scratch>, CudaError> {
        self.scratch.lock().map_err(|_| CudaError::InvalidDims { op: "scratch", reason: "lock poisoned".into() })
    }

    /// A scratch buffer of at least `len` elements.
    pub(crate) fn grow<'s, T: Element>(
        &self,
        slot: &'s mut Option<CudaBuf<T>>,
        len: usize,
    ) -> Result<&'s mut CudaBuf<T>, CudaError> {
        if slot.as_ref().is_none_or(|buf| buf.len < len) {
            *slot = Some(CudaBuf::from_bytes(self.alloc_bytes(len * core::mem::size_of::<T>())?, len));
        }
        Ok(slot.as_mut().expect("just filled"))
    }

    /// Launches `function` with the arguments `push` gives, then waits when
    /// profiling.
    pub(crate) fn launch<'a>(
        &'a self,
        function: &'a CudaFunction,
        config: LaunchConfig,
        push: impl FnOnce(&mut Args<'a>),
    ) -> Result {
        let mut args = Args(self.stream.launch_builder(function));
        push(&mut args);
        // SAFETY: every caller checks its buffers' lengths against the
        // dimensions it passes, and the kernels index only within them.
        unsafe { args.0.launch(config) }?;
        self.sync_if_profiling()
    }
}

/// A launch of `n` independent elements (grid-stride kernels).
pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// One block per row.
pub(crate) fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// One warp per item.
pub(crate) fn per_warp(items: usize) -> LaunchConfig {
    let warps_per_block = (BLOCK / 32) as usize;
    let blocks = items.div_ceil(warps_per_block) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// A kernel's arguments, in order.
pub(crate) struct Args<'a>(cudarc::driver::LaunchArgs<'a>);

impl<'a> Args<'a> {
    /// A buffer the kernel reads.
    pub(crate) fn buf<T>(&mut self, buf: &'a CudaBuf<T>) -> &mut Self {
        self.0.arg(&buf.bytes);
        self
    }
    /// A buffer the kernel writes.
    pub(crate) fn buf_mut<T>(&mut self, buf: &'a mut CudaBuf<T>) -> &mut Self {
        self.0.arg(&mut buf.bytes);
        self
    }
    /// A value passed by copy (a dimension, a scalar, a null pointer).
    pub(crate) fn value<V: cudarc::driver::DeviceRepr>(&mut self, value: &'a V) -> &mut Self {
        self.0.arg(value);
        self
    }
}
