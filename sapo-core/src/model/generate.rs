//! Generation with a key/value cache: prefill and decode are one forward
//! over "new tokens per cache slot", returning the logits of each slot's
//! last new token. A slot can be filled from any token prefix (SAPO
//! regenerates from the middle of a response) and extended one token at a
//! time.

use alloc::vec::Vec;

use super::activations::LayerActivations;
use super::config::LlamaConfig;
use super::llama::{Attention, Tokens, layer_forward, linear};
use super::params::LlamaParams;
use crate::backend::Backend;

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
    layer: LayerActivations<B>,
    projected: B::Buf<f32>,
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
        let c = config.hidden_size;
        Ok(DecodeBuffers {
            max_tokens,
            residual: backend.zeros(max_tokens * c)?,
            residual_next: backend.zeros(max_tokens * c)?,
            layer: LayerActivations::new(backend, config, max_tokens)?,
            projected: backend.zeros(max_tokens * c)?,
            last_rows: backend.zeros(max_entries * c)?,
            logits: backend.zeros(max_entries * config.vocab_size)?,
        })
    }
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
    let c = config.hidden_size;
    let ids_buf = backend.upload(&ids).map_err(be)?;
    let slots_buf = backend.upload(&slots).map_err(be)?;
    let positions_buf = backend.upload(&positions).map_err(be)?;
    let tokens = Tokens { n: t, positions: &positions_buf };
    let b = buffers;
    backend.embedding_forward(&mut b.residual, &ids_buf, &params.embed_tokens, t, c).map_err(be)?;
    for ((weights, keys), values) in params.layers.iter().zip(&mut cache.keys).zip(&mut cache.values) {
        let attention = Attention::Cached { keys, values, slots: &slots_buf, max_len: cache.max_len };
        let (input, output) = (&b.residual, &mut b.residual_next);
        layer_forward(
            backend,
            config,
            weights,
            input,
            &mut b.layer,
            output,
            &mut b.projected,
            &tokens,
            attention,
            None,
        )
        .map_err(be)?;
        core::mem::swap(&mut b.residual, &mut b.residual_next);
    }
    // The final norm reuses the layer workspace's first norm buffers.
    let (normed, rstd) = (&mut b.layer.ln1, &mut b.layer.rstd1);
    backend.rms_norm_forward(normed, rstd, &b.residual, &params.norm, t, c, config.rms_norm_eps).map_err(be)?;
    // Gather each entry's last row (the embedding gather works on any table).
    let n = entries.len();
    let last_buf = backend.upload(&last).map_err(be)?;
    backend.embedding_forward(&mut b.last_rows, &last_buf, &b.layer.ln1, n, c).map_err(be)?;
    let vocab = config.vocab_size;
    linear(backend, &mut b.logits, &b.last_rows, params.lm_head(), n, c, vocab).map_err(be)?;
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
