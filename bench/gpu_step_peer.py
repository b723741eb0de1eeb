#!/usr/bin/env python3
"""The PyTorch side of `bench/gpu_step.sh`: the DPO step that
`sapo-host/examples/gpu_step_bench.rs` times, in plain PyTorch eager on the
same device, shapes and precision, with transformers' `LlamaForCausalLM` and
random weights. Precision: f32 by default; `--tf32 true` allows TF32 tensor
cores; `--bf16 true` runs the forward passes under
`torch.autocast("cuda", dtype=torch.bfloat16)` (PyTorch's AMP: f32 master
weights and AdamW state, bf16 products; autocast also runs attention and the
LM head in bf16, which sapo keeps in f32).

    python3 bench/gpu_step_peer.py --model smollm2 --pairs 8 --prompt 64 --response 192 --steps 10

One step: the reference model's forward under `no_grad`, the policy's
forward on the same 2·pairs sequences (chosen and rejected interleaved), the
summed log-probs of the response tokens, the DPO sigmoid loss (β 0.1),
backward, gradient-norm clipping to 1, `torch.optim.AdamW.step()` and
`zero_grad`. Phases are separated with `torch.cuda.synchronize()`, as the
Rust side separates them. Prints one JSON object.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

MODELS = {
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True),
    "llama1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                    num_attention_heads=32, num_key_value_heads=4, head_dim=64, rope_theta=10000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=False),
}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device):
    return torch.cuda.get_device_name() if device.type == "cuda" else "cpu"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2", choices=MODELS)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--response", type=int, default=192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--tf32", default="false", choices=["true", "false"])
    parser.add_argument("--bf16", default="false", choices=["true", "false"])
    parser.add_argument("--mode", default="step", choices=["step", "decode"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a smoke test of this script on a machine without a GPU, not a benchmark")
    args = parser.parse_args()

    tf32 = args.tf32 == "true"
    bf16 = args.bf16 == "true"
    autocast = lambda: torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    device = torch.device(args.device)
    torch.manual_seed(7)
    config = LlamaConfig(**MODELS[args.model], attn_implementation=args.attn)
    policy = LlamaForCausalLM(config).to(device=device, dtype=torch.float32)
    if args.mode == "decode":
        return decode(args, config, policy, device)
    reference = LlamaForCausalLM(config).to(device=device, dtype=torch.float32)
    reference.load_state_dict(policy.state_dict())
    reference.eval().requires_grad_(False)
    policy.train()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)

    seq_len = args.prompt + args.response
    n_seq = 2 * args.pairs
    tokens = torch.randint(0, config.vocab_size, (n_seq, seq_len), device=device)
    labels = tokens[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, args.prompt - 1:] = True  # predicts response tokens prompt..seq_len-1

    def sequence_logps(model):
        with autocast():
            logits = model(input_ids=tokens).logits[:, :-1]
        logits = logits.float()
        logps = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(-1)).squeeze(-1)
        return (logps * mask).sum(-1)

    def sync_now():
        synchronize(device)
        return time.perf_counter()

    phases = []
    for step in range(args.warmup + args.steps):
        start = sync_now()
        with torch.no_grad():
            ref = sequence_logps(reference)
        after_reference = sync_now()
        pol = sequence_logps(policy)
        margin = (pol[0::2] - ref[0::2]) - (pol[1::2] - ref[1::2])
        loss = -F.logsigmoid(0.1 * margin).mean()
        loss.backward()
        after_policy = sync_now()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
        end = sync_now()
        if step >= args.warmup:
            phases.append((end - start, after_reference - start, after_policy - after_reference, end - after_policy))

    column = lambda k: statistics.median(p[k] for p in phases)
    step_seconds = column(0)
    print(json.dumps({
        "side": "pytorch", "device_name": device_name(device), "model": args.model, "attn": args.attn,
        "pairs": args.pairs, "prompt": args.prompt, "response": args.response, "tokens_per_step": n_seq * seq_len,
        "steps": args.steps, "step_seconds": step_seconds, "reference_seconds": column(1),
        "policy_seconds": column(2), "optimizer_seconds": column(3),
        "policy_tokens_per_second": n_seq * seq_len / step_seconds,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "tf32": tf32, "bf16": bf16,
    }))


def decode(args, config, model, device):
    """`generate`, greedy, exactly `response` new tokens per sequence after `prompt` random tokens."""
    model.eval()
    prompts = torch.randint(0, config.vocab_size, (args.pairs, args.prompt), device=device)
    attention_mask = torch.ones_like(prompts)
    times = []
    for run in range(1 + args.steps):
        synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=attention_mask, max_new_tokens=args.response,
                                 min_new_tokens=args.response, do_sample=False, pad_token_id=0)
        synchronize(device)
        times.append(time.perf_counter() - start)
        assert out.shape[1] == args.prompt + args.response
    seconds = statistics.median(times[1:])
    print(json.dumps({
        "side": "pytorch", "mode": "decode", "device_name": device_name(device), "model": args.model,
        "batch": args.pairs, "prompt": args.prompt, "new_tokens": args.response, "seconds": seconds,
        "new_tokens_per_second": args.pairs * args.response / seconds, "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
