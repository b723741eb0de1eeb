#!/usr/bin/env python3
"""The peer of `generate.rs`: transformers' `generate` on SmolLM2-135M's
shape with random weights, float32, 2 threads, 64-token prompts, 128 new
tokens, temperature 0.7, top-k 50, top-p 0.95, no EOS stop. Run:

    /tmp/venv/bin/python sapo-core/benches/generate_peer.py
"""

import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_num_threads(2)
PROMPT, NEW = 64, 128

config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=2048)
torch.manual_seed(0)
model = LlamaForCausalLM(config).float().eval()
print(f"transformers {transformers.__version__}, torch {torch.__version__}")
for batch in [1, 4, 8]:
    prompts = torch.randint(100, 49000, (batch, PROMPT))
    kwargs = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=True, temperature=0.7, top_k=50, top_p=0.95,
                  eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        model.generate(prompts, **kwargs)  # warm-up
        start = time.perf_counter()
        model(prompts)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(prompts, **kwargs)
        total = time.perf_counter() - start
    generated = (out.shape[1] - PROMPT) * batch
    print(f"batch {batch}: prefill {batch * PROMPT / prefill:.0f} tok/s ({prefill:.3f} s), generate {generated} new tokens "
          f"in {total:.2f} s = {generated / total:.1f} new tok/s", flush=True)
