//! Generation with a key/value cache: prefill and decode are one forward
//! over "new tokens per cache slot", returning the logits of each slot's
//! last new token. A slot can be filled from any token prefix (SAPO
//! regenerates from the middle of a response) and extended one token at a
//! time.

use alloc::vec::Vec;

use super::config::LlamaConfig;
use super::params::LlamaParams;
use crate::backend::{Backend, MatmulSpec};

/// Keys and values of every layer for `slots` sequences of up to `max_len`
/// tokens each.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    keys: Vec<B::Buf<f32>>,
    values: Vec<B::Buf<f32>>,
    slots: usize,
    max_len: usize,
    lens: Vec<usize>,
}

/// Why a cached forward was refused.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError<E> {
    /// A backend operation failed.
    #[error("backend: {0}")]
    Backend(E),
    /// A slot index beyond the cache.
    #[error("slot {slot} is beyond the cache's {slots} slots")]
    NoSuchSlot {
        /// The slot asked for.
        slot: usize,
        /// Slots in the cache.
        slots: usize,
    },
    /// The new tokens do not fit the slot.
    #[error("slot {slot} holds {cached} tokens; {new} more exceed its {max_len}")]
    SlotFull {
        /// The slot.
        slot: usize,
        /// Tokens already cached.
        cached: usize,
        /// Tokens to add.
        new: usize,
        /// The cache's length per slot.
        max_len: usize,
    },
    /// More new tokens in one call than the buffers were sized for.
    #[error("{tokens} new tokens in one call exceed the buffers' {capacity}")]
    TooManyTokens {
        /// Tokens asked for.
        tokens: usize,
        /// Capacity.
        capacity: usize,
    },
    /// A call with no tokens for some slot, or a slot named twice.
    #[error("each entry needs at least one new token and a distinct slot")]
    EmptyOrRepeated,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn new(backend: &B, config: &LlamaConfig, slots: usize, max_len: usize) -> Result<Self, B::Error> {
        let size = slots * max_len * config.kv_dim();
        let mut keys = Vec::with_capacity(config.num_hidden_layers);
        let mut values = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            keys.push(backend.zeros(size)?);
            values.push(backend.zeros(size)?);
        }
        Ok(KvCache { keys, values, slots, max_len, lens: alloc::vec![0; slots] })
    }

    /// Tokens cached in `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    /// Whether every slot is empty.
    pub fn is_empty(&self) -> bool {
        self.lens.iter().all(|&len| len == 0)
    }

    /// Forgets `slot`'s tokens so it can take a new sequence.
    pub fn clear(&mut self, slot: usize) {
        if let Some(len) = self.lens.get_mut(slot) {
            *len = 0;
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Tokens each slot can hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// Work buffers of [`forward_cached`], sized for `max_tokens` new tokens
/// per call and `max_entries` slots per call; reused across calls.
#[derive(Debug)]
pub struct DecodeBuffers<B: Backend> {
    max_tokens: usize,
    residual: B::Buf<f32>,
    residual_next: B::Buf<f32>,
    normed: B::Buf<f32>,
    rstd: B::Buf<f32>,
    q: B::Buf<f32>,
    k: B::Buf<f32>,
    v: B::Buf<f32>,
    att: B::Buf<f32>,
    projected: B::Buf<f32>,
    gate: B::Buf<f32>,
    up: B::Buf<f32>,
    act: B::Buf<f32>,
    last_rows: B::Buf<f32>,
    logits: B::Buf<f32>,
}

impl<B: Backend> DecodeBuffers<B> {
    /// Buffers for up to `max_tokens` new tokens over up to `max_entries`
    /// slots per call.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn new(backend: &B, config: &LlamaConfig, max_tokens: usize, max_entries: usize) -> Result<Self, B::Error> {
        let t = max_tokens;
        let (c, i, q, kv) = (config.hidden_size, config.intermediate_size, config.q_dim(), config.kv_dim());
        let z = |len: usize| backend.zeros::<f32>(len);
        Ok(DecodeBuffers {
            max_tokens,
            residual: z(t * c)?,
            residual_next: z(t * c)?,
            normed: z(t * c)?,
            rstd: z(t)?,
            q: z(t * q)?,
            k: z(t * kv)?,
            v: z(t * kv)?,
            att: z(t * q)?,
            projected: z(t * c)?,
            gate: z(t * i)?,
            up: z(t * i)?,
            act: z(t * i)?,
            last_rows: z(max_entries * c)?,
            logits: z(max_entries * config.vocab_size)?,
        })
    }
}

fn linear<B: Backend>(
    backend: &B,
    y: &mut B::Buf<f32>,
    x: &B::Buf<f32>,
    w: &B::Buf<f32>,
    (rows, d_in, d_out): (usize, usize, usize),
) -> Result<(), B::Error> {
    backend.matmul(
        y,
        x,
        w,
        MatmulSpec { m: rows, k: d_in, n: d_out, transpose_a: false, transpose_b: true, accumulate: false },
    )
}

/// Appends `entries` (`(slot, new tokens)`) to the cache and returns the
/// logits `[entries, V]` (row-major) of each entry's last new token.
///
/// # Errors
/// [`GenerateError`].
pub fn forward_cached<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    cache: &mut KvCache<B>,
    buffers: &mut DecodeBuffers<B>,
    entries: &[(usize, &[u32])],
) -> Result<Vec<f32>, GenerateError<B::Error>> {
    let be = GenerateError::Backend;
    let (mut ids, mut slots, mut positions, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, &(slot, tokens)) in entries.iter().enumerate() {
        if slot >= cache.slots {
            return Err(GenerateError::NoSuchSlot { slot, slots: cache.slots });
        }
        if tokens.is_empty() || entries[..index].iter().any(|&(other, _)| other == slot) {
            return Err(GenerateError::EmptyOrRepeated);
        }
        let cached = cache.lens[slot];
        if cached + tokens.len() > cache.max_len {
            return Err(GenerateError::SlotFull { slot, cached, new: tokens.len(), max_len: cache.max_len });
        }
        ids.extend_from_slice(tokens);
        slots.extend(core::iter::repeat_n(slot as u32, tokens.len()));
        positions.extend((cached..cached + tokens.len()).map(|p| p as u32));
        last.push((ids.len() - 1) as u32);
    }
    let t = ids.len();
    if t > buffers.max_tokens {
        return Err(GenerateError::TooManyTokens { tokens: t, capacity: buffers.max_tokens });
    }
    let (c, i, q_dim, kv_dim) = (config.hidden_size, config.intermediate_size, config.q_dim(), config.kv_dim());
    let (h, kvh, d, theta, eps) = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.rope_theta,
        config.rms_norm_eps,
    );
    let ids_buf = backend.upload(&ids).map_err(be)?;
    let slots_buf = backend.upload(&slots).map_err(be)?;
    let positions_buf = backend.upload(&positions).map_err(be)?;
    let b = buffers;
    backend.embedding_forward(&mut b.residual, &ids_buf, &params.embed_tokens, t, c).map_err(be)?;
    for (layer, weights) in params.layers.iter().enumerate() {
        backend
            .rms_norm_forward(&mut b.normed, &mut b.rstd, &b.residual, &weights.input_layernorm, t, c, eps)
            .map_err(be)?;
        linear(backend, &mut b.q, &b.normed, &weights.q_proj, (t, c, q_dim)).map_err(be)?;
        linear(backend, &mut b.k, &b.normed, &weights.k_proj, (t, c, kv_dim)).map_err(be)?;
        linear(backend, &mut b.v, &b.normed, &weights.v_proj, (t, c, kv_dim)).map_err(be)?;
        if let Some([q_bias, k_bias, v_bias]) = &weights.qkv_bias {
            backend.add_bias(&mut b.q, q_bias, t, q_dim).map_err(be)?;
            backend.add_bias(&mut b.k, k_bias, t, kv_dim).map_err(be)?;
            backend.add_bias(&mut b.v, v_bias, t, kv_dim).map_err(be)?;
        }
        backend.rope_forward(&mut b.q, &positions_buf, t, h, d, theta).map_err(be)?;
        backend.rope_forward(&mut b.k, &positions_buf, t, kvh, d, theta).map_err(be)?;
        let max_len = cache.max_len;
        backend
            .kv_cache_write(&mut cache.keys[layer], &b.k, &slots_buf, &positions_buf, t, max_len, kv_dim)
            .map_err(be)?;
        backend
            .kv_cache_write(&mut cache.values[layer], &b.v, &slots_buf, &positions_buf, t, max_len, kv_dim)
            .map_err(be)?;
        let (keys, values) = (&cache.keys[layer], &cache.values[layer]);
        backend
            .attention_cached(&mut b.att, &b.q, keys, values, &slots_buf, &positions_buf, t, max_len, config.heads())
            .map_err(be)?;
        linear(backend, &mut b.projected, &b.att, &weights.o_proj, (t, q_dim, c)).map_err(be)?;
        backend.add(&mut b.residual_next, &b.residual, &b.projected, t * c).map_err(be)?;
        core::mem::swap(&mut b.residual, &mut b.residual_next);
        let norm = &weights.post_attention_layernorm;
        backend.rms_norm_forward(&mut b.normed, &mut b.rstd, &b.residual, norm, t, c, eps).map_err(be)?;
        linear(backend, &mut b.gate, &b.normed, &weights.gate_proj, (t, c, i)).map_err(be)?;
        linear(backend, &mut b.up, &b.normed, &weights.up_proj, (t, c, i)).map_err(be)?;
        backend.swiglu_forward(&mut b.act, &b.gate, &b.up, t * i).map_err(be)?;
        linear(backend, &mut b.projected, &b.act, &weights.down_proj, (t, i, c)).map_err(be)?;
        backend.add(&mut b.residual_next, &b.residual, &b.projected, t * c).map_err(be)?;
        core::mem::swap(&mut b.residual, &mut b.residual_next);
    }
    backend.rms_norm_forward(&mut b.normed, &mut b.rstd, &b.residual, &params.norm, t, c, eps).map_err(be)?;
    // Gather each entry's last row (the embedding gather works on any table).
    let n = entries.len();
    let last_buf = backend.upload(&last).map_err(be)?;
    backend.embedding_forward(&mut b.last_rows, &last_buf, &b.normed, n, c).map_err(be)?;
    let vocab = config.vocab_size;
    linear(backend, &mut b.logits, &b.last_rows, params.lm_head(), (n, c, vocab)).map_err(be)?;
    for &(slot, tokens) in entries {
        cache.lens[slot] += tokens.len();
    }
    let mut logits = backend.download(&b.logits).map_err(be)?;
    logits.truncate(n * vocab);
    Ok(logits)
}

/// When a generated sequence stops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationConfig {
    /// Most tokens generated per sequence.
    pub max_new_tokens: usize,
    /// Token ids that end a sequence (kept as its last token): the model's
    /// EOS and any extra stop ids.
    pub stop_ids: Vec<u32>,
    /// How each token is chosen.
    pub sampling: crate::sampling::SamplingParams,
}

/// Why generation stopped.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError<E> {
    /// The cached forward failed.
    #[error(transparent)]
    Forward(#[from] GenerateError<E>),
    /// The logits could not be sampled (non-finite logits).
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    /// One RNG per prefix is needed.
    #[error("{prefixes} prefixes but {rngs} random generators")]
    RngCount {
        /// Prefixes given.
        prefixes: usize,
        /// RNGs given.
        rngs: usize,
    },
}

/// Continues each token prefix (batched: one prefill, then one decode step
/// per new token for the sequences still running) and returns the new
/// tokens of each, ending with a stop id where one was produced. Prefix `i`
/// uses slot `i` of `cache` (cleared first) and draws only from `rngs[i]`,
/// so its continuation does not depend on which others share the batch.
///
/// # Errors
/// [`GenerationError`]: a prefix longer than the cache, more tokens than the
/// buffers hold, non-finite logits.
#[allow(clippy::too_many_arguments)]
pub fn generate<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    cache: &mut KvCache<B>,
    buffers: &mut DecodeBuffers<B>,
    prefixes: &[&[u32]],
    generation: &GenerationConfig,
    rngs: &mut [crate::rng::SapoRng],
) -> Result<Vec<Vec<u32>>, GenerationError<B::Error>> {
    generate_streaming(backend, config, params, cache, buffers, prefixes, generation, rngs, |_, _| {})
}

/// [`generate`], calling `on_token(sequence, token)` as each token is
/// chosen (for streaming output).
///
/// # Errors
/// As [`generate`].
#[allow(clippy::too_many_arguments)]
pub fn generate_streaming<B: Backend>(
    backend: &B,
    config: &LlamaConfig,
    params: &LlamaParams<B>,
    cache: &mut KvCache<B>,
    buffers: &mut DecodeBuffers<B>,
    prefixes: &[&[u32]],
    generation: &GenerationConfig,
    rngs: &mut [crate::rng::SapoRng],
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerationError<B::Error>> {
    if rngs.len() != prefixes.len() {
        return Err(GenerationError::RngCount { prefixes: prefixes.len(), rngs: rngs.len() });
    }
    let vocab = config.vocab_size;
    let mut outputs: Vec<Vec<u32>> = alloc::vec![Vec::new(); prefixes.len()];
    if generation.max_new_tokens == 0 || prefixes.is_empty() {
        return Ok(outputs);
    }
    for slot in 0..prefixes.len() {
        cache.clear(slot);
    }
    let entries: Vec<(usize, &[u32])> = prefixes.iter().copied().enumerate().collect();
    let mut logits = forward_cached(backend, config, params, cache, buffers, &entries)?;
    let mut running: Vec<usize> = (0..prefixes.len()).collect();
    loop {
        let mut next_tokens = Vec::with_capacity(running.len());
        for (row, &slot) in running.iter().enumerate() {
            let token =
                crate::sampling::sample_token(&logits[row * vocab..][..vocab], &generation.sampling, &mut rngs[slot])?;
            outputs[slot].push(token);
            on_token(slot, token);
            next_tokens.push(token);
        }
        let still: Vec<(usize, u32)> = running
            .iter()
            .zip(&next_tokens)
            .filter(|&(&slot, token)| {
                !generation.stop_ids.contains(token) && outputs[slot].len() < generation.max_new_tokens
            })
            .map(|(&slot, &token)| (slot, token))
            .collect();
        if still.is_empty() {
            return Ok(outputs);
        }
        let singles: Vec<[u32; 1]> = still.iter().map(|&(_, token)| [token]).collect();
        let entries: Vec<(usize, &[u32])> =
            still.iter().zip(&singles).map(|(&(slot, _), one)| (slot, &one[..])).collect();
        logits = forward_cached(backend, config, params, cache, buffers, &entries)?;
        running = still.into_iter().map(|(slot, _)| slot).collect();
    }
}
