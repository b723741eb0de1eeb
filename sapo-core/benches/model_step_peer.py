#!/usr/bin/env python3
"""The peer of `model_step.rs`: one DPO step in plain PyTorch on the same
shapes (4 sequences x 256 tokens, 64 prompt + 192 response), float32, 2
threads, eager attention off (SDPA, PyTorch's fastest CPU path), timed by
phase. Run beside the Rust bench, with the allocator settings FACTS.md
gives (PyTorch returns freed memory to the system otherwise and a step
takes 9-49 s):

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 \\
        /tmp/venv/bin/python sapo-core/benches/model_step_peer.py [tiny|smollm2]

The step: reference forward (no grad), policy forward, DPO loss (beta 0.1)
on summed response log-probs, backward, AdamW (torch.optim defaults, lr
1e-5). Log-probs come from full logits and log_softmax, as a plain PyTorch
trainer (and TRL without a fused head) computes them; `--response-logits`
computes the LM head only on the response positions, as sapo's fused head
does, for an equal-work comparison.

`--bf16` times the response-logits step in float32 and then under
`torch.autocast("cpu", dtype=torch.bfloat16)` (PyTorch's mixed precision:
bf16 products through oneDNN, which uses AVX-512 BF16 where the CPU has it;
float32 master weights and AdamW), the peer of `model_step -- bf16`.
"""

import contextlib

import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_num_threads(2)
SEQUENCES, SEQ_LEN, PROMPT = 4, 256, 64

SHAPES = {
    "tiny": dict(vocab_size=49152, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0, tie_word_embeddings=True),
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0, tie_word_embeddings=True),
}


def sequence_logps(model, input_ids, response_only):
    hidden = model.model(input_ids=input_ids).last_hidden_state  # [B, T, C]
    if response_only:
        hidden = hidden[:, PROMPT - 1 : -1]
        targets = input_ids[:, PROMPT:]
    else:
        hidden = hidden[:, :-1]
        targets = input_ids[:, 1:]
    logits = model.lm_head(hidden)
    logps = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not response_only:
        logps = logps[:, PROMPT - 1 :]
    return logps.sum(-1)


def run(name, response_only, steps, bf16=False):
    config = LlamaConfig(**SHAPES[name], rms_norm_eps=1e-5, max_position_embeddings=512)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config).float().train()
    reference = LlamaForCausalLM(config).float().eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    input_ids = torch.randint(0, config.vocab_size, (SEQUENCES, SEQ_LEN))
    times = []
    for step in range(steps + 1):
        phases = {}
        mixed = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        start = time.perf_counter()
        with torch.no_grad(), mixed:
            ref = sequence_logps(reference, input_ids, response_only).float()
        phases["ref"] = time.perf_counter() - start
        mixed = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        start = time.perf_counter()
        with mixed:
            pol = sequence_logps(policy, input_ids, response_only).float()
        phases["fwd"] = time.perf_counter() - start
        z = (pol[0::2] - ref[0::2]) - (pol[1::2] - ref[1::2])
        loss = -F.logsigmoid(0.1 * z).mean()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        phases["bwd"] = time.perf_counter() - start
        start = time.perf_counter()
        optimizer.step()
        phases["adamw"] = time.perf_counter() - start
        if step > 0:
            times.append(phases)
    pick = lambda key: statistics.median(t[key] for t in times)
    total = statistics.median(sum(t.values()) for t in times)
    tokens = SEQUENCES * SEQ_LEN
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    label = ("response logits" if response_only else "full logits") + (" bf16" if bf16 else "")
    print(f"pytorch {torch.__version__} {name:<8} {label:<21} step {total:7.3f} s  {tokens / total:7.0f} tok/s  "
          f"policy fwd {pick('fwd'):.3f} s  bwd {pick('bwd'):.3f} s  ref fwd {pick('ref'):.3f} s  "
          f"adamw {pick('adamw'):.3f} s  peak RSS {peak:.0f} MB", flush=True)


if __name__ == "__main__":
    wanted = [a for a in sys.argv[1:] if not a.startswith("--")] or ["tiny", "smollm2"]
    for name in wanted:
        steps = 5 if name == "tiny" else 3
        if "--bf16" in sys.argv[1:]:
            run(name, response_only=True, steps=steps)
            run(name, response_only=True, steps=steps, bf16=True)
            continue
        run(name, response_only=False, steps=steps)
        run(name, response_only=True, steps=steps)
