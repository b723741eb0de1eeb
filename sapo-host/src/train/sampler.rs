//! Batched KV-cache generation for the trainer (SAPO's EMA segments, SPIN's
//! rejected responses, the task evaluation), with the cache and decode
//! buffers kept between calls and grown when a call needs more.

use super::TrainBackend;
use anyhow::{Result, anyhow};
use sapo_core::model::{self, DecodeBuffers, GenerationConfig, KvCache, LlamaConfig, LlamaParams};
use sapo_core::rng::SapoRng;
use sapo_core::sampling::SamplingParams;

/// Generation buffers reused across calls.
#[derive(Debug)]
pub struct Sampler<B: TrainBackend> {
    cache: Option<(KvCache<B>, usize, usize)>,
    buffers: Option<(DecodeBuffers<B>, usize, usize)>,
}

impl<B: TrainBackend> Default for Sampler<B> {
    fn default() -> Self {
        Sampler { cache: None, buffers: None }
    }
}

impl<B: TrainBackend> Sampler<B> {
    /// Continues each prefix by at most `max_new_tokens`, stopping at any of
    /// `stop_ids`; prefix `i` draws from `rngs[i]` only.
    ///
    /// # Errors
    /// A backend or generation error.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &mut self,
        backend: &B,
        config: &LlamaConfig,
        params: &LlamaParams<B>,
        prefixes: &[&[u32]],
        max_new_tokens: usize,
        stop_ids: &[u32],
        sampling: SamplingParams,
        rngs: &mut [SapoRng],
    ) -> Result<Vec<Vec<u32>>> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let slots = prefixes.len();
        let max_len = prefixes.iter().map(|p| p.len()).max().unwrap_or(0) + max_new_tokens;
        let prefill: usize = prefixes.iter().map(|p| p.len()).sum::<usize>().max(slots);
        if !self.cache.as_ref().is_some_and(|(_, s, l)| *s >= slots && *l >= max_len) {
            let (s, l) = self.cache.as_ref().map_or((slots, max_len), |(_, s, l)| ((*s).max(slots), (*l).max(max_len)));
            self.cache = None;
            self.cache = Some((KvCache::new(backend, config, s, l)?, s, l));
        }
        if !self.buffers.as_ref().is_some_and(|(_, t, e)| *t >= prefill && *e >= slots) {
            let (t, e) =
                self.buffers.as_ref().map_or((prefill, slots), |(_, t, e)| ((*t).max(prefill), (*e).max(slots)));
            self.buffers = None;
            self.buffers = Some((DecodeBuffers::new(backend, config, t, e)?, t, e));
        }
        let (cache, _, _) = self.cache.as_mut().expect("allocated above");
        let (buffers, _, _) = self.buffers.as_mut().expect("allocated above");
        let generation = GenerationConfig { max_new_tokens, stop_ids: stop_ids.to_vec(), sampling };
        model::generate(backend, config, params, cache, buffers, prefixes, &generation, rngs)
            .map_err(|error| anyhow!("generating: {error}"))
    }
}
