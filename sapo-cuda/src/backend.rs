//! [`CudaBackend`]: sapo-core's `Backend` on one NVIDIA GPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use half::bf16;
use sapo_core::backend::{Backend, Element, HeadDims, MatmulSpec};
use sapo_core::optim::{AdamWParams, AdamWStep, RmspropParams, RmspropStep};

use crate::buffer::{CudaBuf, as_bytes, as_bytes_mut};
use crate::error::{CudaError, check_at_least, check_exact, dim};
use crate::kernels::Kernels;
use crate::matmul;

mod lm_head;

use lm_head::LmHead;

/// Threads per block of the elementwise and per-row kernels.
const BLOCK: u32 = 256;
/// Grid-stride kernels never launch more blocks than this (enough to fill
/// any current GPU several times over).
const MAX_BLOCKS: usize = 65_535;
/// The most logits one block of the fused LM head keeps (`rows × V` floats,
/// 128 MiB): bounds memory whatever the batch.
const MAX_LOGITS_PER_BLOCK: usize = 1 << 25;
/// The widest head the attention kernels hold in registers (32 lanes × 8).
const MAX_HEAD_DIM: usize = 256;
/// The widest head of the tiled attention kernels (32 lanes × 4); wider
/// heads take the one-warp-per-row kernels.
const MAX_TILED_HEAD_DIM: usize = 128;
/// Rows (queries or keys) per block of the tiled attention kernels.
const ATTENTION_TILE: usize = 32;

/// Scratch memory reused across operations (they run in order on one
/// stream, so one buffer of each kind suffices); grown on demand.
#[derive(Default)]
struct Scratch {
    /// Gathered hidden rows of one LM-head block `[rows, C]`.
    rows_hidden: Option<CudaBuf<f32>>,
    /// Their logits, then logit gradients `[rows, V]`.
    logits: Option<CudaBuf<f32>>,
    /// Hidden-row gradients of one block `[rows, C]`.
    rows_dhidden: Option<CudaBuf<f32>>,
    /// A bf16 LM head's rounded hidden rows and logit gradients.
    rows_hidden_bf16: Option<CudaBuf<bf16>>,
    logits_bf16: Option<CudaBuf<bf16>>,
    /// Attention's `dout·out` per (token, head).
    attention_delta: Option<CudaBuf<f32>>,
    /// Scored rows per sequence.
    sequence_counts: Option<CudaBuf<f32>>,
    /// Per-block f64 partial sums of `sum_of_squares`.
    sum_of_squares: Option<CudaSlice<f64>>,
    /// The embedding backward's tokens grouped by id: the distinct ids,
    /// their offsets, the token indices.
    group_ids: Option<CudaBuf<u32>>,
    group_offsets: Option<CudaBuf<u32>>,
    group_tokens: Option<CudaBuf<u32>>,
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

    /// Waits for the device when [`CudaBackend::set_synchronous`] is on.
    pub(crate) fn sync_if_profiling(&self) -> Result {
        if self.synchronous.load(Ordering::Relaxed) {
            self.stream.synchronize()?;
        }
        Ok(())
    }

    fn alloc_bytes(&self, bytes: usize) -> Result<CudaSlice<u8>, CudaError> {
        // A zero-byte allocation is still a distinct valid pointer.
        Ok(self.stream.alloc_zeros::<u8>(bytes.max(4))?)
    }

    fn scratch(&self) -> Result<MutexGuard<'_, Scratch>, CudaError> {
        self.scratch.lock().map_err(|_| CudaError::InvalidDims { op: "scratch", reason: "lock poisoned".into() })
    }

    /// A scratch buffer of at least `len` elements.
    fn grow<'s, T: Element>(
        &self,
        slot: &'s mut Option<CudaBuf<T>>,
        len: usize,
    ) -> Result<&'s mut CudaBuf<T>, CudaError> {
        if slot.as_ref().is_none_or(|buf| buf.len < len) {
            *slot = Some(CudaBuf::from_bytes(self.alloc_bytes(len * core::mem::size_of::<T>())?, len));
        }
        Ok(slot.as_mut().expect("just filled"))
    }

    /// A launch of `n` independent elements (grid-stride kernels).
    fn elementwise(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// One block per row.
    fn per_row(rows: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// One warp per item.
    fn per_warp(items: usize) -> LaunchConfig {
        let warps_per_block = (BLOCK / 32) as usize;
        let blocks = items.div_ceil(warps_per_block) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn launch<'a>(
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

    fn check_heads(op: &'static str, heads: HeadDims) -> Result {
        if heads.n_kv_heads == 0 || !heads.n_heads.is_multiple_of(heads.n_kv_heads) {
            return Err(CudaError::InvalidDims {
                op,
                reason: "query heads must be a positive multiple of key/value heads".into(),
            });
        }
        if heads.head_dim == 0 || heads.head_dim > MAX_HEAD_DIM {
            return Err(CudaError::InvalidDims {
                op,
                reason: format!("head_dim {} is outside 1..={MAX_HEAD_DIM}", heads.head_dim),
            });
        }
        Ok(())
    }

    /// The grid of the tiled attention kernels: tiles × heads × sequences,
    /// with `floats` of dynamic shared memory per block.
    fn attention_tiles(n_tokens: usize, heads: usize, n_starts: u32, floats: usize) -> LaunchConfig {
        let tiles = n_tokens.div_ceil(ATTENTION_TILE) as u32;
        LaunchConfig {
            grid_dim: (tiles, heads as u32, n_starts - 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: (floats * 4) as u32,
        }
    }

    fn attention_scale(head_dim: usize) -> f32 {
        (1.0 / (head_dim as f64).sqrt()) as f32
    }

    fn seq_starts_len(op: &'static str, seq_starts: &CudaBuf<u32>) -> Result<u32, CudaError> {
        if seq_starts.len < 2 {
            return Err(CudaError::InvalidDims { op, reason: "seq_starts needs at least one sequence".into() });
        }
        dim(op, "seq_starts", seq_starts.len)
    }
}

type Result<T = (), E = CudaError> = core::result::Result<T, E>;

/// A kernel's arguments, in order.
struct Args<'a>(cudarc::driver::LaunchArgs<'a>);

impl<'a> Args<'a> {
    fn buf<T>(&mut self, buf: &'a CudaBuf<T>) -> &mut Self {
        self.0.arg(&buf.bytes);
        self
    }
    fn buf_mut<T>(&mut self, buf: &'a mut CudaBuf<T>) -> &mut Self {
        self.0.arg(&mut buf.bytes);
        self
    }
    fn value<V: cudarc::driver::DeviceRepr>(&mut self, value: &'a V) -> &mut Self {
        self.0.arg(value);
        self
    }
}

impl Backend for CudaBackend {
    type Buf<T: Element> = CudaBuf<T>;
    type Error = CudaError;

    fn zeros<T: Element>(&self, len: usize) -> Result<CudaBuf<T>> {
        Ok(CudaBuf::from_bytes(self.alloc_bytes(len * core::mem::size_of::<T>())?, len))
    }

    fn upload<T: Element>(&self, data: &[T]) -> Result<CudaBuf<T>> {
        let mut buf = self.zeros::<T>(data.len())?;
        self.write(&mut buf, data)?;
        Ok(buf)
    }

    fn write<T: Element>(&self, buf: &mut CudaBuf<T>, data: &[T]) -> Result {
        check_at_least("write", "buf", buf.len, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let bytes = as_bytes(data);
        let mut destination = buf.bytes.slice_mut(..bytes.len());
        self.stream.memcpy_htod(bytes, &mut destination)?;
        Ok(())
    }

    fn download<T: Element>(&self, buf: &CudaBuf<T>) -> Result<Vec<T>> {
        let mut out = vec![T::default(); buf.len];
        if buf.len > 0 {
            let source = buf.bytes.slice(..buf.byte_len());
            self.stream.memcpy_dtoh(&source, as_bytes_mut(&mut out))?;
        }
        self.stream.synchronize()?;
        Ok(out)
    }

    fn len<T: Element>(&self, buf: &CudaBuf<T>) -> usize {
        buf.len
    }

    fn fill_zero(&self, buf: &mut CudaBuf<f32>) -> Result {
        let bytes = buf.byte_len();
        if bytes > 0 {
            self.stream.memset_zeros(&mut buf.bytes.slice_mut(..bytes))?;
        }
        Ok(())
    }

    fn copy(&self, dst: &mut CudaBuf<f32>, src: &CudaBuf<f32>) -> Result {
        check_exact("copy", "src", src.len, dst.len)?;
        let bytes = src.byte_len();
        if bytes > 0 {
            self.stream.memcpy_dtod(&src.bytes.slice(..bytes), &mut dst.bytes.slice_mut(..bytes))?;
        }
        Ok(())
    }

    fn matmul(&self, out: &mut CudaBuf<f32>, a: &CudaBuf<f32>, b: &CudaBuf<f32>, spec: MatmulSpec) -> Result {
        self.matmul_batched(out, a, b, spec, 1)
    }

    fn matmul_batched(
        &self,
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
        matmul::gemm(self, &mut out.view_mut(), &a.view(), &b.view(), spec, batch)
    }

    fn matmul_bf16(&self, out: &mut CudaBuf<f32>, a: &CudaBuf<bf16>, b: &CudaBuf<bf16>, spec: MatmulSpec) -> Result {
        const OP: &str = "matmul_bf16";
        check_at_least(OP, "a", a.len, spec.a_len())?;
        check_at_least(OP, "b", b.len, spec.b_len())?;
        check_at_least(OP, "out", out.len, spec.out_len())?;
        matmul::gemm_bf16(self, out, a, b, spec)
    }

    fn round_to_bf16(&self, out: &mut CudaBuf<bf16>, x: &CudaBuf<f32>, n: usize) -> Result {
        const OP: &str = "round_to_bf16";
        check_at_least(OP, "out", out.len, n)?;
        check_at_least(OP, "x", x.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.round_to_bf16, Self::elementwise(n), |args| {
            args.buf_mut(out).buf(x).value(&n64);
        })
    }

    fn add_bias(&self, out: &mut CudaBuf<f32>, bias: &CudaBuf<f32>, rows: usize, cols: usize) -> Result {
        const OP: &str = "add_bias";
        check_at_least(OP, "out", out.len, rows * cols)?;
        check_at_least(OP, "bias", bias.len, cols)?;
        if rows * cols == 0 {
            return Ok(());
        }
        let (r, c) = (dim(OP, "rows", rows)?, dim(OP, "cols", cols)?);
        self.launch(&self.kernels.add_bias, Self::elementwise(rows * cols), |args| {
            args.buf_mut(out).buf(bias).value(&r).value(&c);
        })
    }

    fn add_bias_backward(&self, dbias: &mut CudaBuf<f32>, dout: &CudaBuf<f32>, rows: usize, cols: usize) -> Result {
        const OP: &str = "add_bias_backward";
        check_at_least(OP, "dout", dout.len, rows * cols)?;
        check_at_least(OP, "dbias", dbias.len, cols)?;
        self.column_sum(OP, dbias, dout, None, rows, cols)
    }

    fn embedding_forward(
        &self,
        out: &mut CudaBuf<f32>,
        ids: &CudaBuf<u32>,
        table: &CudaBuf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result {
        const OP: &str = "embedding_forward";
        check_at_least(OP, "out", out.len, n_tokens * channels)?;
        check_at_least(OP, "ids", ids.len, n_tokens)?;
        if n_tokens * channels == 0 {
            return Ok(());
        }
        let vocab = dim(OP, "vocab", table.len / channels)?;
        let (t, c) = (dim(OP, "n_tokens", n_tokens)?, dim(OP, "channels", channels)?);
        self.launch(&self.kernels.embedding_forward, Self::elementwise(n_tokens * channels), |args| {
            args.buf_mut(out).buf(ids).buf(table).value(&t).value(&c).value(&vocab);
        })
    }

    fn embedding_backward(
        &self,
        dtable: &mut CudaBuf<f32>,
        ids: &CudaBuf<u32>,
        dout: &CudaBuf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result {
        const OP: &str = "embedding_backward";
        check_at_least(OP, "dout", dout.len, n_tokens * channels)?;
        check_at_least(OP, "ids", ids.len, n_tokens)?;
        if n_tokens * channels == 0 {
            return Ok(());
        }
        let vocab = dtable.len / channels;
        // Group the tokens by id on the host (one small download) so each
        // table row is summed by one block in token order: no float
        // atomics, so the gradient is the same bits on every run.
        let mut ids_host = self.download(ids)?;
        ids_host.truncate(n_tokens);
        if let Some(&id) = ids_host.iter().find(|&&id| id as usize >= vocab) {
            return Err(CudaError::InvalidDims { op: OP, reason: format!("token id {id} is not below {vocab}") });
        }
        let mut order: Vec<u32> = (0..n_tokens as u32).collect();
        order.sort_by_key(|&token| ids_host[token as usize]);
        let (mut unique, mut offsets) = (Vec::new(), Vec::new());
        for (position, &token) in order.iter().enumerate() {
            let id = ids_host[token as usize];
            if unique.last() != Some(&id) {
                unique.push(id);
                offsets.push(position as u32);
            }
        }
        offsets.push(n_tokens as u32);
        let mut scratch = self.scratch()?;
        let Scratch { group_ids, group_offsets, group_tokens, .. } = &mut *scratch;
        let group_ids = self.grow(group_ids, unique.len())?;
        let group_offsets = self.grow(group_offsets, offsets.len())?;
        let group_tokens = self.grow(group_tokens, order.len())?;
        self.write(group_ids, &unique)?;
        self.write(group_offsets, &offsets)?;
        self.write(group_tokens, &order)?;
        let (n_unique, c) = (dim(OP, "distinct ids", unique.len())?, dim(OP, "channels", channels)?);
        let config = LaunchConfig { grid_dim: (n_unique, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let (group_ids, group_offsets, group_tokens) = (&*group_ids, &*group_offsets, &*group_tokens);
        self.launch(&self.kernels.embedding_backward_grouped, config, |args| {
            args.buf_mut(dtable).buf(dout).buf(group_ids).buf(group_offsets).buf(group_tokens);
            args.value(&n_unique).value(&c);
        })
    }

    fn rms_norm_forward(
        &self,
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
        self.launch(&self.kernels.rms_norm_forward, Self::per_row(rows), |args| {
            args.buf_mut(out).buf_mut(rstd).buf(inp).buf(weight).value(&r).value(&c).value(&eps);
        })
    }

    fn rms_norm_backward(
        &self,
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
        self.launch(&self.kernels.rms_norm_backward_input, Self::per_row(rows), |args| {
            args.buf_mut(dinp).buf(dout).buf(inp).buf(weight).buf(rstd).value(&r).value(&c);
        })?;
        self.column_sum(OP, dweight, dout, Some((inp, rstd)), rows, cols)
    }

    fn rope_forward(
        &self,
        x: &mut CudaBuf<f32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result {
        self.rope("rope_forward", x, positions, n_tokens, n_heads, head_dim, theta, 1.0)
    }

    fn rope_backward(
        &self,
        dx: &mut CudaBuf<f32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result {
        self.rope("rope_backward", dx, positions, n_tokens, n_heads, head_dim, theta, -1.0)
    }

    fn attention_forward(
        &self,
        out: &mut CudaBuf<f32>,
        lse: &mut CudaBuf<f32>,
        q: &CudaBuf<f32>,
        k: &CudaBuf<f32>,
        v: &CudaBuf<f32>,
        seq_starts: &CudaBuf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result {
        const OP: &str = "attention_forward";
        Self::check_heads(OP, heads)?;
        let (h, kvh, d) = (heads.n_heads, heads.n_kv_heads, heads.head_dim);
        check_at_least(OP, "out", out.len, n_tokens * h * d)?;
        check_at_least(OP, "q", q.len, n_tokens * h * d)?;
        check_at_least(OP, "k", k.len, n_tokens * kvh * d)?;
        check_at_least(OP, "v", v.len, n_tokens * kvh * d)?;
        check_at_least(OP, "lse", lse.len, n_tokens * h)?;
        if n_tokens == 0 {
            return Ok(());
        }
        let n_starts = Self::seq_starts_len(OP, seq_starts)?;
        let (t, h32, kvh32, d32) = (dim(OP, "n_tokens", n_tokens)?, h as u32, kvh as u32, d as u32);
        let scale = Self::attention_scale(d);
        if d <= MAX_TILED_HEAD_DIM {
            let config = Self::attention_tiles(n_tokens, h, n_starts, ATTENTION_TILE * (2 * d + 1));
            let kernel = if d <= 64 {
                &self.kernels.attention_forward_tiled_d64
            } else {
                &self.kernels.attention_forward_tiled_d128
            };
            return self.launch(kernel, config, |args| {
                args.buf_mut(out).buf_mut(lse).buf(q).buf(k).buf(v).buf(seq_starts);
                args.value(&h32).value(&kvh32).value(&d32).value(&scale);
            });
        }
        self.launch(&self.kernels.attention_forward, Self::per_warp(n_tokens * h), |args| {
            args.buf_mut(out).buf_mut(lse).buf(q).buf(k).buf(v).buf(seq_starts);
            args.value(&n_starts).value(&t).value(&h32).value(&kvh32).value(&d32).value(&scale);
        })
    }

    fn attention_backward(
        &self,
        dq: &mut CudaBuf<f32>,
        dk: &mut CudaBuf<f32>,
        dv: &mut CudaBuf<f32>,
        dout: &CudaBuf<f32>,
        q: &CudaBuf<f32>,
        k: &CudaBuf<f32>,
        v: &CudaBuf<f32>,
        out: &CudaBuf<f32>,
        lse: &CudaBuf<f32>,
        seq_starts: &CudaBuf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result {
        const OP: &str = "attention_backward";
        Self::check_heads(OP, heads)?;
        let (h, kvh, d) = (heads.n_heads, heads.n_kv_heads, heads.head_dim);
        for (name, len) in [("dq", dq.len), ("dout", dout.len), ("q", q.len), ("out", out.len)] {
            check_at_least(OP, name, len, n_tokens * h * d)?;
        }
        for (name, len) in [("dk", dk.len), ("dv", dv.len), ("k", k.len), ("v", v.len)] {
            check_at_least(OP, name, len, n_tokens * kvh * d)?;
        }
        check_at_least(OP, "lse", lse.len, n_tokens * h)?;
        if n_tokens == 0 {
            return Ok(());
        }
        let n_starts = Self::seq_starts_len(OP, seq_starts)?;
        let (t, h32, kvh32, d32) = (dim(OP, "n_tokens", n_tokens)?, h as u32, kvh as u32, d as u32);
        let scale = Self::attention_scale(d);
        let mut scratch = self.scratch()?;
        let delta = self.grow(&mut scratch.attention_delta, n_tokens * h)?;
        self.launch(&self.kernels.attention_delta, Self::per_warp(n_tokens * h), |args| {
            args.buf_mut(delta).buf(dout).buf(out).value(&t).value(&h32).value(&d32);
        })?;
        let delta = &*delta;
        if d <= MAX_TILED_HEAD_DIM {
            let (dq_kernel, dkv_kernel) = if d <= 64 {
                (&self.kernels.attention_backward_dq_tiled_d64, &self.kernels.attention_backward_dkv_tiled_d64)
            } else {
                (&self.kernels.attention_backward_dq_tiled_d128, &self.kernels.attention_backward_dkv_tiled_d128)
            };
            let smem = ATTENTION_TILE * 2 * (d + 1);
            self.launch(dq_kernel, Self::attention_tiles(n_tokens, h, n_starts, smem), |args| {
                args.buf_mut(dq).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
                args.value(&h32).value(&kvh32).value(&d32).value(&scale);
            })?;
            let smem = ATTENTION_TILE * (2 * (d + 1) + 2);
            let config = Self::attention_tiles(n_tokens, kvh, n_starts, smem);
            return self.launch(dkv_kernel, config, |args| {
                args.buf_mut(dk).buf_mut(dv).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
                args.value(&h32).value(&kvh32).value(&d32).value(&scale);
            });
        }
        self.launch(&self.kernels.attention_backward_dq, Self::per_warp(n_tokens * h), |args| {
            args.buf_mut(dq).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
            args.value(&n_starts).value(&t).value(&h32).value(&kvh32).value(&d32).value(&scale);
        })?;
        self.launch(&self.kernels.attention_backward_dkv, Self::per_warp(n_tokens * kvh), |args| {
            args.buf_mut(dk).buf_mut(dv).buf(dout).buf(q).buf(k).buf(v).buf(lse).buf(delta).buf(seq_starts);
            args.value(&n_starts).value(&t).value(&h32).value(&kvh32).value(&d32).value(&scale);
        })
    }

    fn kv_cache_write(
        &self,
        cache: &mut CudaBuf<f32>,
        new: &CudaBuf<f32>,
        slots: &CudaBuf<u32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        max_len: usize,
        kv_dim: usize,
    ) -> Result {
        const OP: &str = "kv_cache_write";
        check_at_least(OP, "new", new.len, n_tokens * kv_dim)?;
        check_at_least(OP, "slots", slots.len, n_tokens)?;
        check_at_least(OP, "positions", positions.len, n_tokens)?;
        if n_tokens * kv_dim * max_len == 0 {
            return Ok(());
        }
        let n_slots = dim(OP, "slots", cache.len / (max_len * kv_dim))?;
        let (t, m, c) = (dim(OP, "n_tokens", n_tokens)?, dim(OP, "max_len", max_len)?, dim(OP, "kv_dim", kv_dim)?);
        self.launch(&self.kernels.kv_cache_write, Self::elementwise(n_tokens * kv_dim), |args| {
            args.buf_mut(cache).buf(new).buf(slots).buf(positions);
            args.value(&t).value(&n_slots).value(&m).value(&c);
        })
    }

    fn attention_cached(
        &self,
        out: &mut CudaBuf<f32>,
        q: &CudaBuf<f32>,
        k_cache: &CudaBuf<f32>,
        v_cache: &CudaBuf<f32>,
        slots: &CudaBuf<u32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        max_len: usize,
        heads: HeadDims,
    ) -> Result {
        const OP: &str = "attention_cached";
        Self::check_heads(OP, heads)?;
        let (h, kvh, d) = (heads.n_heads, heads.n_kv_heads, heads.head_dim);
        check_at_least(OP, "out", out.len, n_tokens * h * d)?;
        check_at_least(OP, "q", q.len, n_tokens * h * d)?;
        check_at_least(OP, "slots", slots.len, n_tokens)?;
        check_at_least(OP, "positions", positions.len, n_tokens)?;
        check_exact(OP, "v_cache", v_cache.len, k_cache.len)?;
        if n_tokens == 0 || max_len == 0 {
            return Ok(());
        }
        let n_slots = dim(OP, "slots", k_cache.len / (max_len * kvh * d))?;
        let (t, m) = (dim(OP, "n_tokens", n_tokens)?, dim(OP, "max_len", max_len)?);
        let (h32, kvh32, d32) = (h as u32, kvh as u32, d as u32);
        let scale = Self::attention_scale(d);
        self.launch(&self.kernels.attention_cached, Self::per_warp(n_tokens * h), |args| {
            args.buf_mut(out).buf(q).buf(k_cache).buf(v_cache).buf(slots).buf(positions);
            args.value(&t).value(&n_slots).value(&m).value(&h32).value(&kvh32).value(&d32).value(&scale);
        })
    }

    fn swiglu_forward(&self, out: &mut CudaBuf<f32>, gate: &CudaBuf<f32>, up: &CudaBuf<f32>, n: usize) -> Result {
        const OP: &str = "swiglu_forward";
        for (name, len) in [("out", out.len), ("gate", gate.len), ("up", up.len)] {
            check_at_least(OP, name, len, n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.swiglu_forward, Self::elementwise(n), |args| {
            args.buf_mut(out).buf(gate).buf(up).value(&n64);
        })
    }

    fn swiglu_backward(
        &self,
        dgate: &mut CudaBuf<f32>,
        dup: &mut CudaBuf<f32>,
        dout: &CudaBuf<f32>,
        gate: &CudaBuf<f32>,
        up: &CudaBuf<f32>,
        n: usize,
    ) -> Result {
        const OP: &str = "swiglu_backward";
        for (name, len) in
            [("dgate", dgate.len), ("dup", dup.len), ("dout", dout.len), ("gate", gate.len), ("up", up.len)]
        {
            check_at_least(OP, name, len, n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.swiglu_backward, Self::elementwise(n), |args| {
            args.buf_mut(dgate).buf_mut(dup).buf(dout).buf(gate).buf(up).value(&n64);
        })
    }

    fn add(&self, out: &mut CudaBuf<f32>, a: &CudaBuf<f32>, b: &CudaBuf<f32>, n: usize) -> Result {
        const OP: &str = "add";
        for (name, len) in [("out", out.len), ("a", a.len), ("b", b.len)] {
            check_at_least(OP, name, len, n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.add, Self::elementwise(n), |args| {
            args.buf_mut(out).buf(a).buf(b).value(&n64);
        })
    }

    fn add_assign(&self, acc: &mut CudaBuf<f32>, x: &CudaBuf<f32>, n: usize) -> Result {
        const OP: &str = "add_assign";
        check_at_least(OP, "acc", acc.len, n)?;
        check_at_least(OP, "x", x.len, n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.add_assign, Self::elementwise(n), |args| {
            args.buf_mut(acc).buf(x).value(&n64);
        })
    }

    fn token_logprobs_forward(
        &self,
        logps: &mut CudaBuf<f32>,
        lse: &mut CudaBuf<f32>,
        hidden: &CudaBuf<f32>,
        lm_head: &CudaBuf<f32>,
        rows: &CudaBuf<u32>,
        targets: &CudaBuf<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result {
        let head = LmHead::F32(lm_head);
        self.lm_head_forward("token_logprobs_forward", logps, lse, hidden, head, rows, targets, n_rows, channels, vocab)
    }

    fn token_logprobs_backward(
        &self,
        dhidden: &mut CudaBuf<f32>,
        dlm_head: &mut CudaBuf<f32>,
        dlogps: &CudaBuf<f32>,
        hidden: &CudaBuf<f32>,
        lm_head: &CudaBuf<f32>,
        rows: &CudaBuf<u32>,
        targets: &CudaBuf<u32>,
        lse: &CudaBuf<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result {
        self.lm_head_backward(
            "token_logprobs_backward",
            dhidden,
            dlm_head,
            dlogps,
            hidden,
            LmHead::F32(lm_head),
            rows,
            targets,
            lse,
            n_rows,
            channels,
            vocab,
        )
    }

    fn token_logprobs_forward_bf16(
        &self,
        logps: &mut CudaBuf<f32>,
        lse: &mut CudaBuf<f32>,
        hidden: &CudaBuf<f32>,
        lm_head: &CudaBuf<bf16>,
        rows: &CudaBuf<u32>,
        targets: &CudaBuf<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result {
        let (op, head) = ("token_logprobs_forward_bf16", LmHead::Bf16(lm_head));
        self.lm_head_forward(op, logps, lse, hidden, head, rows, targets, n_rows, channels, vocab)
    }

    fn token_logprobs_backward_bf16(
        &self,
        dhidden: &mut CudaBuf<f32>,
        dlm_head: &mut CudaBuf<f32>,
        dlogps: &CudaBuf<f32>,
        hidden: &CudaBuf<f32>,
        lm_head: &CudaBuf<bf16>,
        rows: &CudaBuf<u32>,
        targets: &CudaBuf<u32>,
        lse: &CudaBuf<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result {
        self.lm_head_backward(
            "token_logprobs_backward_bf16",
            dhidden,
            dlm_head,
            dlogps,
            hidden,
            LmHead::Bf16(lm_head),
            rows,
            targets,
            lse,
            n_rows,
            channels,
            vocab,
        )
    }

    fn sequence_logprobs(
        &self,
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
        self.launch(&self.kernels.sequence_logprobs, Self::per_row(n_seqs), |args| {
            args.buf_mut(sums).buf_mut(means).value(&null).buf(logps).buf(row_seqs).value(&r).value(&s);
        })
    }

    fn sequence_logprobs_backward(
        &self,
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
        let mut scratch = self.scratch()?;
        let counts = self.grow(&mut scratch.sequence_counts, n_seqs)?;
        self.launch(&self.kernels.sequence_logprobs, Self::per_row(n_seqs), |args| {
            args.value(&null).value(&null).buf_mut(counts).buf(dlogps).buf(row_seqs).value(&r).value(&s);
        })?;
        let counts = &*counts;
        self.launch(&self.kernels.sequence_logprobs_backward, Self::elementwise(n_rows), |args| {
            args.buf_mut(dlogps).buf(dsums).buf(dmeans).buf(counts).buf(row_seqs).value(&r).value(&s);
        })
    }

    fn adamw_step(
        &self,
        params: &mut CudaBuf<f32>,
        grads: &CudaBuf<f32>,
        exp_avg: &mut CudaBuf<f32>,
        exp_avg_sq: &mut CudaBuf<f32>,
        step: u64,
        lr: f64,
        hp: &AdamWParams,
    ) -> Result {
        const OP: &str = "adamw_step";
        let n = params.len;
        check_exact(OP, "grads", grads.len, n)?;
        check_exact(OP, "exp_avg", exp_avg.len, n)?;
        check_exact(OP, "exp_avg_sq", exp_avg_sq.len, n)?;
        let s = AdamWStep::new(step, lr, hp)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.adamw_step, Self::elementwise(n), |args| {
            args.buf_mut(params).buf(grads).buf_mut(exp_avg).buf_mut(exp_avg_sq);
            args.value(&s.weight_decay_factor).value(&s.one_minus_beta1).value(&s.beta2).value(&s.one_minus_beta2);
            args.value(&s.bias_correction2_sqrt).value(&s.eps).value(&s.neg_step_size).value(&n64);
        })
    }

    fn rmsprop_step(
        &self,
        params: &mut CudaBuf<f32>,
        grads: &CudaBuf<f32>,
        square_avg: &mut CudaBuf<f32>,
        lr: f64,
        hp: &RmspropParams,
    ) -> Result {
        const OP: &str = "rmsprop_step";
        let n = params.len;
        check_exact(OP, "grads", grads.len, n)?;
        check_exact(OP, "square_avg", square_avg.len, n)?;
        let s = RmspropStep::new(lr, hp)?;
        if hp.momentum != 0.0 || hp.centered {
            return Err(CudaError::InvalidDims {
                op: OP,
                reason: "momentum and centring need state this operation does not hold (as on the CPU)".into(),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(&self.kernels.rmsprop_step, Self::elementwise(n), |args| {
            args.buf_mut(params).buf(grads).buf_mut(square_avg);
            args.value(&s.weight_decay).value(&s.alpha).value(&s.one_minus_alpha).value(&s.eps).value(&s.neg_lr);
            args.value(&n64);
        })
    }

    fn ema_update(&self, ema: &mut CudaBuf<f32>, params: &CudaBuf<f32>, decay: f64) -> Result {
        if !(0.0..=1.0).contains(&decay) {
            return Err(sapo_core::ema::EmaError::InvalidDecay(decay).into());
        }
        check_exact("ema_update", "params", params.len, ema.len)?;
        if ema.len == 0 {
            return Ok(());
        }
        // The CPU reference's f32 scalars: decay rounded, then 1 − decay in f32.
        let decay = decay as f32;
        let keep = 1.0 - decay;
        let n64 = ema.len as u64;
        self.launch(&self.kernels.ema_update, Self::elementwise(ema.len), |args| {
            args.buf_mut(ema).buf(params).value(&decay).value(&keep).value(&n64);
        })
    }

    fn sum_of_squares(&self, x: &CudaBuf<f32>) -> Result<f64> {
        if x.len == 0 {
            return Ok(0.0);
        }
        // Per-block partial sums, added on the host in block order: the same
        // bits on every run (an atomic total would depend on block timing).
        let blocks = x.len.div_ceil(BLOCK as usize).clamp(1, 1024);
        let mut scratch = self.scratch()?;
        if scratch.sum_of_squares.is_none() {
            scratch.sum_of_squares = Some(self.stream.alloc_zeros::<f64>(1024)?);
        }
        let partials = scratch.sum_of_squares.as_mut().expect("just filled");
        let n64 = x.len as u64;
        let config = LaunchConfig { grid_dim: (blocks as u32, 1, 1), ..Self::elementwise(1) };
        let mut builder = self.stream.launch_builder(&self.kernels.sum_of_squares_partials);
        builder.arg(&mut *partials).arg(&x.bytes).arg(&n64);
        // SAFETY: the kernel reads `x.len` floats and writes `blocks` ≤ 1024 f64.
        unsafe { builder.launch(config) }?;
        let values = self.stream.clone_dtoh(&partials.slice(..blocks))?;
        self.stream.synchronize()?;
        Ok(values.iter().sum())
    }

    fn scale(&self, x: &mut CudaBuf<f32>, factor: f32) -> Result {
        if x.len == 0 {
            return Ok(());
        }
        let n64 = x.len as u64;
        self.launch(&self.kernels.scale, Self::elementwise(x.len), |args| {
            args.buf_mut(x).value(&factor).value(&n64);
        })
    }
}

impl CudaBackend {
    /// `dst[c] += Σ_r src[r, c]`, or `Σ_r src[r, c]·other[r, c]·row_scale[r]`.
    fn column_sum(
        &self,
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
        self.launch(&self.kernels.column_sum, config, |args| {
            args.buf_mut(dst).buf(src);
            match product {
                Some((other, row_scale)) => args.buf(other).buf(row_scale),
                None => args.value(&null).value(&null),
            };
            args.value(&r).value(&c);
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        op: &'static str,
        x: &mut CudaBuf<f32>,
        positions: &CudaBuf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
        direction: f32,
    ) -> Result {
        check_at_least(op, "x", x.len, n_tokens * n_heads * head_dim)?;
        check_at_least(op, "positions", positions.len, n_tokens)?;
        if !head_dim.is_multiple_of(2) {
            return Err(CudaError::InvalidDims { op, reason: "RoPE needs an even head dimension".into() });
        }
        let n = n_tokens * n_heads * head_dim / 2;
        if n == 0 {
            return Ok(());
        }
        let (t, h, d) = (dim(op, "n_tokens", n_tokens)?, dim(op, "n_heads", n_heads)?, dim(op, "head_dim", head_dim)?);
        let theta = f64::from(theta);
        self.launch(&self.kernels.rope, Self::elementwise(n), |args| {
            args.buf_mut(x).buf(positions).value(&t).value(&h).value(&d).value(&theta).value(&direction);
        })
    }
}

impl CudaBackend {
    pub(crate) fn stream(&self) -> &std::sync::Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn blas(&self) -> &CudaBlas {
        &self.blas
    }
}
