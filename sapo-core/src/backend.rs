//! The `Backend` trait: every numeric operation the trainer needs, so that
//! the model and the training step are written once and run on the CPU
//! reference or a GPU.
//!
//! # Design
//!
//! sapo's backends follow llm.c, not a tensor library. There is no general
//! tensor type, no broadcasting and no autograd tape: the model knows its
//! computation, owns flat buffers sized once for the largest batch
//! (weights, gradients, activations kept for backward, scratch), and calls
//! coarse operations with explicit dimensions. Each operation has its
//! backward beside it where training needs one.
//!
//! Conventions every implementation follows:
//! - **Outputs first**, then inputs, then dimensions.
//! - Buffers are row-major. Dimension names: `T` tokens of a packed batch,
//!   `C` hidden channels, `H` query heads, `KVH` key/value heads, `D` head
//!   dimension, `I` MLP channels, `V` vocabulary, `S` sequences, `R` rows
//!   whose log-probs are wanted.
//! - **Backward operations accumulate** (`+=`) into every gradient they
//!   write, activation gradients included; the caller zeroes gradients
//!   before a backward pass. Forward operations overwrite their outputs.
//! - Batches are **packed**: several sequences of different lengths lie
//!   end to end in one token dimension, described by [`Packing`]; attention
//!   stays inside each sequence and no work is spent on padding.
//! - Activation buffers may be **longer** than an operation's dimensions
//!   require: the operation reads and writes their leading elements, so
//!   buffers sized once for the largest batch serve every batch. Parameter
//!   buffers (weights, embedding table, LM head) have exact lengths.
//! - Every operation checks its buffer lengths against its dimensions and
//!   returns an error naming the operation instead of reading out of bounds.
//! - There are no default method bodies: a backend implements every
//!   operation, so a cross-check between two backends never compares a
//!   function with itself.

use alloc::vec::Vec;

use half::bf16;

use crate::optim::{AdamWParams, RmspropParams};

/// A type a backend buffer can hold.
///
/// ```
/// fn takes<T: sapo_core::backend::Element>(_: T) {}
/// takes(1.0_f32);
/// takes(7_u32);
/// ```
pub trait Element: Copy + Default + core::fmt::Debug + Send + Sync + 'static + sealed::Sealed {}
impl Element for f32 {}
impl Element for u32 {}
impl Element for bf16 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u32 {}
    impl Sealed for half::bf16 {}
}

/// The shape of one matrix product `out (=|+=) op(a) · op(b)`.
///
/// `op(a)` is `[m, k]`: `a` is stored `[m, k]`, or `[k, m]` when
/// `transpose_a`. `op(b)` is `[k, n]`: `b` is stored `[k, n]`, or `[n, k]`
/// when `transpose_b` (a linear layer's `x · Wᵀ` with Hugging Face's
/// `[out, in]` weights). `out` is `[m, n]`; with `accumulate` the product is
/// added to it.
///
/// ```
/// use sapo_core::backend::MatmulSpec;
/// // y[T, out] = x[T, in] · W[out, in]ᵀ
/// let linear = MatmulSpec { m: 4, k: 8, n: 16, transpose_a: false, transpose_b: true, accumulate: false };
/// assert_eq!((linear.a_len(), linear.b_len(), linear.out_len()), (32, 128, 64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulSpec {
    /// Rows of `out` and of `op(a)`.
    pub m: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Columns of `out` and of `op(b)`.
    pub n: usize,
    /// `a` is stored `[k, m]`.
    pub transpose_a: bool,
    /// `b` is stored `[n, k]`.
    pub transpose_b: bool,
    /// Add to `out` instead of overwriting it.
    pub accumulate: bool,
}

impl MatmulSpec {
    /// Elements of `a`.
    pub fn a_len(&self) -> usize {
        self.m * self.k
    }
    /// Elements of `b`.
    pub fn b_len(&self) -> usize {
        self.k * self.n
    }
    /// Elements of `out`.
    pub fn out_len(&self) -> usize {
        self.m * self.n
    }
}

/// How the sequences of a packed batch lie in its token dimension.
///
/// ```
/// use sapo_core::backend::Packing;
/// // Two sequences of 3 and 2 tokens.
/// let packing = Packing::from_lengths(&[3, 2]);
/// assert_eq!(packing.seq_starts, vec![0, 3, 5]);
/// assert_eq!(packing.positions, vec![0, 1, 2, 0, 1]);
/// assert_eq!((packing.n_tokens(), packing.max_seq_len()), (5, 3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packing {
    /// `S + 1` offsets: sequence `s` is tokens `seq_starts[s]..seq_starts[s+1]`.
    pub seq_starts: Vec<u32>,
    /// `T` positions: each token's index within its own sequence (RoPE).
    pub positions: Vec<u32>,
}

impl Packing {
    /// The packing of sequences with these lengths, in order.
    pub fn from_lengths(lengths: &[usize]) -> Self {
        let mut seq_starts = Vec::with_capacity(lengths.len() + 1);
        let mut positions = Vec::with_capacity(lengths.iter().sum());
        seq_starts.push(0);
        for &length in lengths {
            positions.extend((0..length).map(|position| position as u32));
            seq_starts.push(positions.len() as u32);
        }
        Packing { seq_starts, positions }
    }

    /// `S`.
    pub fn n_seqs(&self) -> usize {
        self.seq_starts.len().saturating_sub(1)
    }

    /// `T`.
    pub fn n_tokens(&self) -> usize {
        self.positions.len()
    }

    /// The longest sequence.
    pub fn max_seq_len(&self) -> usize {
        self.seq_starts.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0)
    }
}

/// The head layout of attention: `H` query heads of `D` channels sharing
/// `KVH` key/value heads (grouped-query attention; `H` a multiple of `KVH`).
///
/// ```
/// use sapo_core::backend::HeadDims;
/// let smollm2 = HeadDims { n_heads: 9, n_kv_heads: 3, head_dim: 64 };
/// assert_eq!(smollm2.group_size(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    /// `H`.
    pub n_heads: usize,
    /// `KVH`.
    pub n_kv_heads: usize,
    /// `D`.
    pub head_dim: usize,
}

impl HeadDims {
    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }
}

/// Every numeric operation of a training step, on one device.
///
/// See the [module docs](self) for the conventions. Implementations: the CPU
/// reference in [`crate::cpu`] (feature `cpu`) and the CUDA backend in the
/// `sapo-cuda` crate.
///
/// ```
/// # #[cfg(feature = "cpu")] {
/// use sapo_core::backend::{Backend, MatmulSpec};
/// use sapo_core::cpu::CpuBackend;
/// let backend = CpuBackend::new();
/// let a = backend.upload(&[1.0_f32, 2.0, 3.0, 4.0])?; // [2, 2]
/// let b = backend.upload(&[1.0_f32, 0.0, 0.0, 1.0])?; // identity
/// let mut out = backend.zeros::<f32>(4)?;
/// let spec = MatmulSpec { m: 2, k: 2, n: 2, transpose_a: false, transpose_b: false, accumulate: false };
/// backend.matmul(&mut out, &a, &b, spec)?;
/// assert_eq!(backend.download(&out)?, vec![1.0, 2.0, 3.0, 4.0]);
/// # }
/// # Ok::<(), sapo_core::cpu::CpuError>(())
/// ```
pub trait Backend {
    /// A buffer of `T` on the device.
    type Buf<T: Element>: core::fmt::Debug;
    /// What an operation returns when it fails: a shape mismatch, a device
    /// error.
    type Error: core::fmt::Debug + core::fmt::Display;

    // --- Buffers -----------------------------------------------------------

    /// A buffer of `len` zeros.
    fn zeros<T: Element>(&self, len: usize) -> Result<Self::Buf<T>, Self::Error>;
    /// A buffer holding a copy of `data`.
    fn upload<T: Element>(&self, data: &[T]) -> Result<Self::Buf<T>, Self::Error>;
    /// Overwrites the first `data.len()` elements of `buf` (for per-step
    /// inputs such as token ids, without reallocating).
    fn write<T: Element>(&self, buf: &mut Self::Buf<T>, data: &[T]) -> Result<(), Self::Error>;
    /// A host copy of `buf`.
    fn download<T: Element>(&self, buf: &Self::Buf<T>) -> Result<Vec<T>, Self::Error>;
    /// The number of elements of `buf`.
    fn len<T: Element>(&self, buf: &Self::Buf<T>) -> usize;
    /// Sets every element of `buf` to zero.
    fn fill_zero(&self, buf: &mut Self::Buf<f32>) -> Result<(), Self::Error>;
    /// `dst ← src` (equal lengths): the reference refresh.
    fn copy(&self, dst: &mut Self::Buf<f32>, src: &Self::Buf<f32>) -> Result<(), Self::Error>;

    // --- Linear algebra ----------------------------------------------------

    /// `out (=|+=) op(a) · op(b)`, shapes per [`MatmulSpec`].
    fn matmul(
        &self,
        out: &mut Self::Buf<f32>,
        a: &Self::Buf<f32>,
        b: &Self::Buf<f32>,
        spec: MatmulSpec,
    ) -> Result<(), Self::Error>;
    /// `batch` independent products: `a`, `b` and `out` each hold `batch`
    /// matrices back to back, shaped per `spec`.
    fn matmul_batched(
        &self,
        out: &mut Self::Buf<f32>,
        a: &Self::Buf<f32>,
        b: &Self::Buf<f32>,
        spec: MatmulSpec,
        batch: usize,
    ) -> Result<(), Self::Error>;
    /// `out (=|+=) op(a) · op(b)` with bf16 operands: each product of two
    /// bf16 values is exact in f32, and the sums run in f32, as tensor cores
    /// do (cuBLAS's bf16 GEMM with `CUBLAS_COMPUTE_32F`). `out` stays f32.
    /// The matrix products of bf16 mixed precision
    /// ([`crate::model::Precision::Bf16`]).
    fn matmul_bf16(
        &self,
        out: &mut Self::Buf<f32>,
        a: &Self::Buf<bf16>,
        b: &Self::Buf<bf16>,
        spec: MatmulSpec,
    ) -> Result<(), Self::Error>;
    /// `out[i] = bf16(x[i])` for the first `n` elements, rounded to nearest
    /// even (NaN stays NaN), exactly as `half::bf16::from_f32`.
    fn round_to_bf16(&self, out: &mut Self::Buf<bf16>, x: &Self::Buf<f32>, n: usize) -> Result<(), Self::Error>;
    /// `out[r, c] += bias[c]`, out `[rows, cols]` (Qwen2's q/k/v biases).
    fn add_bias(
        &self,
        out: &mut Self::Buf<f32>,
        bias: &Self::Buf<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), Self::Error>;
    /// `dbias[c] += Σ_r dout[r, c]`.
    fn add_bias_backward(
        &self,
        dbias: &mut Self::Buf<f32>,
        dout: &Self::Buf<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), Self::Error>;

    // --- Embedding ---------------------------------------------------------

    /// `out[t, :] = table[ids[t], :]`; out `[T, C]`, table `[V, C]`.
    fn embedding_forward(
        &self,
        out: &mut Self::Buf<f32>,
        ids: &Self::Buf<u32>,
        table: &Self::Buf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result<(), Self::Error>;
    /// `dtable[ids[t], :] += dout[t, :]` (scatter-add).
    fn embedding_backward(
        &self,
        dtable: &mut Self::Buf<f32>,
        ids: &Self::Buf<u32>,
        dout: &Self::Buf<f32>,
        n_tokens: usize,
        channels: usize,
    ) -> Result<(), Self::Error>;

    // --- RMSNorm -----------------------------------------------------------

    /// `rstd[r] = 1/√(mean_c inp[r,c]² + eps)`, `out[r,c] = weight[c]·inp[r,c]·rstd[r]`.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_forward(
        &self,
        out: &mut Self::Buf<f32>,
        rstd: &mut Self::Buf<f32>,
        inp: &Self::Buf<f32>,
        weight: &Self::Buf<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<(), Self::Error>;
    /// Accumulates `dinp` and `dweight` from `dout` and the forward's `rstd`.
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_backward(
        &self,
        dinp: &mut Self::Buf<f32>,
        dweight: &mut Self::Buf<f32>,
        dout: &Self::Buf<f32>,
        inp: &Self::Buf<f32>,
        weight: &Self::Buf<f32>,
        rstd: &Self::Buf<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(), Self::Error>;

    // --- RoPE --------------------------------------------------------------

    /// Rotates each head of `x` `[T, heads, D]` in place by its token's
    /// position, in Hugging Face's half-split layout: channel `i` pairs with
    /// `i + D/2`, frequency `θ^(−2i/D)`.
    fn rope_forward(
        &self,
        x: &mut Self::Buf<f32>,
        positions: &Self::Buf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), Self::Error>;
    /// The backward of a rotation is the inverse rotation: rotates the
    /// gradient `dx` in place by minus the angle (the only in-place
    /// backward: the forward's input is not kept).
    fn rope_backward(
        &self,
        dx: &mut Self::Buf<f32>,
        positions: &Self::Buf<u32>,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), Self::Error>;

    // --- Attention ---------------------------------------------------------

    /// Causal grouped-query attention inside each packed sequence:
    /// `out[t,h] = Σ_{u ≤ t, same sequence} softmax_u(q[t,h]·k[u,h/g] / √D) v[u,h/g]`.
    /// `q`, `out` `[T, H, D]`; `k`, `v` `[T, KVH, D]`; `lse` `[T, H]` keeps
    /// each row's log-sum-exp of scaled scores for the backward.
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        &self,
        out: &mut Self::Buf<f32>,
        lse: &mut Self::Buf<f32>,
        q: &Self::Buf<f32>,
        k: &Self::Buf<f32>,
        v: &Self::Buf<f32>,
        seq_starts: &Self::Buf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result<(), Self::Error>;
    /// Accumulates `dq`, `dk`, `dv` from `dout`, recomputing the
    /// probabilities from `q`, `k` and the forward's `lse`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dq: &mut Self::Buf<f32>,
        dk: &mut Self::Buf<f32>,
        dv: &mut Self::Buf<f32>,
        dout: &Self::Buf<f32>,
        q: &Self::Buf<f32>,
        k: &Self::Buf<f32>,
        v: &Self::Buf<f32>,
        out: &Self::Buf<f32>,
        lse: &Self::Buf<f32>,
        seq_starts: &Self::Buf<u32>,
        n_tokens: usize,
        heads: HeadDims,
    ) -> Result<(), Self::Error>;

    /// Writes new keys or values `new` `[T, KVH·D]` into a cache of
    /// `slots × max_len` rows of `KVH·D` (`[slot, position, KVH·D]`): token
    /// `t` goes to row `(slots[t], positions[t])`. For generation.
    #[allow(clippy::too_many_arguments)]
    fn kv_cache_write(
        &self,
        cache: &mut Self::Buf<f32>,
        new: &Self::Buf<f32>,
        slots: &Self::Buf<u32>,
        positions: &Self::Buf<u32>,
        n_tokens: usize,
        max_len: usize,
        kv_dim: usize,
    ) -> Result<(), Self::Error>;
    /// Attention of `T` query tokens over a key/value cache: token `t` of
    /// cache slot `slots[t]` at position `positions[t]` attends to that
    /// slot's cached positions `0..=positions[t]` (so prefill, with many
    /// tokens per slot, and decode, with one, are the same operation).
    /// `q`, `out` `[T, H, D]`; caches `[slots, max_len, KVH, D]`.
    #[allow(clippy::too_many_arguments)]
    fn attention_cached(
        &self,
        out: &mut Self::Buf<f32>,
        q: &Self::Buf<f32>,
        k_cache: &Self::Buf<f32>,
        v_cache: &Self::Buf<f32>,
        slots: &Self::Buf<u32>,
        positions: &Self::Buf<u32>,
        n_tokens: usize,
        max_len: usize,
        heads: HeadDims,
    ) -> Result<(), Self::Error>;

    // --- Elementwise -------------------------------------------------------

    /// SwiGLU: `out = silu(gate) ⊙ up`, `silu(x) = x·σ(x)`, `n` elements.
    fn swiglu_forward(
        &self,
        out: &mut Self::Buf<f32>,
        gate: &Self::Buf<f32>,
        up: &Self::Buf<f32>,
        n: usize,
    ) -> Result<(), Self::Error>;
    /// Accumulates `dgate` and `dup` from `dout`.
    fn swiglu_backward(
        &self,
        dgate: &mut Self::Buf<f32>,
        dup: &mut Self::Buf<f32>,
        dout: &Self::Buf<f32>,
        gate: &Self::Buf<f32>,
        up: &Self::Buf<f32>,
        n: usize,
    ) -> Result<(), Self::Error>;
    /// `out = a + b` over `n` elements (the residual connection; its
    /// backward is the identity to both inputs, done with [`Backend::add_assign`]).
    fn add(
        &self,
        out: &mut Self::Buf<f32>,
        a: &Self::Buf<f32>,
        b: &Self::Buf<f32>,
        n: usize,
    ) -> Result<(), Self::Error>;
    /// `acc += x` over `n` elements.
    fn add_assign(&self, acc: &mut Self::Buf<f32>, x: &Self::Buf<f32>, n: usize) -> Result<(), Self::Error>;

    // --- Log-probabilities -------------------------------------------------

    /// The fused LM head: for each of `R` rows `r`, token `t = rows[r]`,
    /// `logps[r] = logits[t, targets[r]] − logsumexp_v logits[t, v]` with
    /// `logits[t] = hidden[t] · lm_head[V, C]ᵀ`, computed in blocks of rows
    /// so that no `[R, V]` tensor is kept. `lse` `[R]` is kept for backward.
    #[allow(clippy::too_many_arguments)]
    fn token_logprobs_forward(
        &self,
        logps: &mut Self::Buf<f32>,
        lse: &mut Self::Buf<f32>,
        hidden: &Self::Buf<f32>,
        lm_head: &Self::Buf<f32>,
        rows: &Self::Buf<u32>,
        targets: &Self::Buf<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), Self::Error>;
    /// Accumulates `dhidden` (at the rows' tokens) and `dlm_head` from
    /// `dlogps[r]`: `dlogits = dlogps·(onehot(target) − softmax)`, recomputed
    /// block by block.
    #[allow(clippy::too_many_arguments)]
    fn token_logprobs_backward(
        &self,
        dhidden: &mut Self::Buf<f32>,
        dlm_head: &mut Self::Buf<f32>,
        dlogps: &Self::Buf<f32>,
        hidden: &Self::Buf<f32>,
        lm_head: &Self::Buf<f32>,
        rows: &Self::Buf<u32>,
        targets: &Self::Buf<u32>,
        lse: &Self::Buf<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), Self::Error>;
    /// [`Backend::token_logprobs_forward`] with the products in bf16, as
    /// [`crate::model::Precision::Bf16`] runs the LM head: each gathered
    /// hidden row is rounded to bf16, `lm_head` is already bf16, and the
    /// logits are their [`Backend::matmul_bf16`] product, summed and kept in
    /// f32, as is the log-softmax. (PyTorch autocast rounds the logits
    /// themselves to bf16; keeping them f32 costs nothing on the tensor
    /// cores and keeps log-probs near 30 nats from losing 0.125 to rounding.)
    #[allow(clippy::too_many_arguments)]
    fn token_logprobs_forward_bf16(
        &self,
        logps: &mut Self::Buf<f32>,
        lse: &mut Self::Buf<f32>,
        hidden: &Self::Buf<f32>,
        lm_head: &Self::Buf<bf16>,
        rows: &Self::Buf<u32>,
        targets: &Self::Buf<u32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), Self::Error>;
    /// [`Backend::token_logprobs_backward`] with the products in bf16: the
    /// logits are recomputed as in [`Backend::token_logprobs_forward_bf16`],
    /// `dlogits` is computed in f32 and rounded to bf16, and both of its
    /// products (with the bf16 `lm_head` and the rounded hidden rows) sum in
    /// f32 into the f32 `dhidden` and `dlm_head`.
    #[allow(clippy::too_many_arguments)]
    fn token_logprobs_backward_bf16(
        &self,
        dhidden: &mut Self::Buf<f32>,
        dlm_head: &mut Self::Buf<f32>,
        dlogps: &Self::Buf<f32>,
        hidden: &Self::Buf<f32>,
        lm_head: &Self::Buf<bf16>,
        rows: &Self::Buf<u32>,
        targets: &Self::Buf<u32>,
        lse: &Self::Buf<f32>,
        n_rows: usize,
        channels: usize,
        vocab: usize,
    ) -> Result<(), Self::Error>;
    /// Per-sequence sums and means of row log-probs: `sums[s] = Σ_{r: row_seqs[r] = s} logps[r]`,
    /// `means[s] = sums[s] / count_s` (0 for a sequence with no rows);
    /// accumulated in f64.
    fn sequence_logprobs(
        &self,
        sums: &mut Self::Buf<f32>,
        means: &mut Self::Buf<f32>,
        logps: &Self::Buf<f32>,
        row_seqs: &Self::Buf<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result<(), Self::Error>;
    /// `dlogps[r] += dsums[s] + dmeans[s] / count_s` with `s = row_seqs[r]`.
    #[allow(clippy::too_many_arguments)]
    fn sequence_logprobs_backward(
        &self,
        dlogps: &mut Self::Buf<f32>,
        dsums: &Self::Buf<f32>,
        dmeans: &Self::Buf<f32>,
        row_seqs: &Self::Buf<u32>,
        n_rows: usize,
        n_seqs: usize,
    ) -> Result<(), Self::Error>;

    // --- Optimizer and weight averaging --------------------------------------

    /// One AdamW update as `torch.optim.AdamW` ([`crate::optim::adamw_update`]).
    #[allow(clippy::too_many_arguments)]
    fn adamw_step(
        &self,
        params: &mut Self::Buf<f32>,
        grads: &Self::Buf<f32>,
        exp_avg: &mut Self::Buf<f32>,
        exp_avg_sq: &mut Self::Buf<f32>,
        step: u64,
        lr: f64,
        hp: &AdamWParams,
    ) -> Result<(), Self::Error>;
    /// One RMSprop update as `torch.optim.RMSprop` without momentum or
    /// centring ([`crate::optim::rmsprop_update`]); those options keep their
    /// extra state on the host path.
    fn rmsprop_step(
        &self,
        params: &mut Self::Buf<f32>,
        grads: &Self::Buf<f32>,
        square_avg: &mut Self::Buf<f32>,
        lr: f64,
        hp: &RmspropParams,
    ) -> Result<(), Self::Error>;
    /// `ema ← decay·ema + (1−decay)·params` ([`crate::ema::ema_update`]).
    fn ema_update(&self, ema: &mut Self::Buf<f32>, params: &Self::Buf<f32>, decay: f64) -> Result<(), Self::Error>;
    /// `Σ x²` in f64, for the global gradient norm.
    fn sum_of_squares(&self, x: &Self::Buf<f32>) -> Result<f64, Self::Error>;
    /// `x *= factor` (gradient clipping, loss scaling).
    fn scale(&self, x: &mut Self::Buf<f32>, factor: f32) -> Result<(), Self::Error>;
}
