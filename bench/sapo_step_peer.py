#!/usr/bin/env python3
"""The PyTorch/TRL side of `bench/sapo_step.sh`: one SAPO step's work done the
way a TRL-based SAPO implementation does it, timed phase by phase, on the
model, batch shape and hyper-parameters of a finished `sapo train` run.

    /work/venv/bin/python bench/sapo_step_peer.py --sapo-run /tmp/run --steps 8 --out peer.json

Everything that decides the work is read from the sapo run, never restated:
`<run>/config.toml` (model, data, batch size B, optimizer, learning rate, β,
clipping, sampling temperature / top-k / top-p, threads) and
`<run>/metrics.jsonl` (the mean EMA segment length, which becomes the peer's
number of new tokens). The report (`sapo_step_report.py`) puts sapo's tokens
per step beside the peer's.

A SAPO step (sapo-host/src/train/run.rs, `train_sapo`) is: EMA update,
sampling of the rejected segments by the EMA model, a DPO update on
replay-buffer pairs. TRL has no SAPO trainer, so the peer step is composed of
the two timed parts below; it has no EMA update (sapo's falls in "other"):

  sampling   `model.generate` on the step's B prompts (chat template with the
             generation prompt, left padding, KV cache, do_sample, sapo's
             temperature / top-k / top-p), exactly ⌈mean segment length⌉ new
             tokens per sequence (`min_new_tokens` = `max_new_tokens`, so the
             work does not depend on when EOS happens to be drawn).
  DPO step   `DPOTrainer.train()` (sigmoid loss, float32, CPU, no gradient
             checkpointing, batch B, no accumulation, torch RMSprop or AdamW as
             sapo used), split with hooks and callbacks, no profiler:
               reference  forward hooks on the reference model (a second copy,
                          TRL's default when `precompute_ref_log_probs` is off);
               policy     `training_step` minus the reference forward inside it
                          (policy forward, DPO loss, backward);
               optimizer  end of `training_step` to `on_optimizer_step`
                          (gradient-norm clipping + `optimizer.step()`), as
                          sapo's `time/optimizer` (clip + update);
               step       `on_step_begin` to `on_step_end` (adds the scheduler
                          step and `zero_grad`).

Approximations, all stated in bench/README.md: the peer's pairs are records
of the data file with their *dataset* rejected response, while sapo's
rejected responses are the chosen prefix plus an EMA segment of about the same
length; sapo prompts its sampler with the prompt plus a chosen prefix, the
peer with the prompt alone. Token counts of both sides are reported so the
shapes can be compared.

Writes one JSON object: per-step timings of every phase, the token counts,
the versions and the settings used.
"""

import argparse
import copy
import json
import math
import os
import sys
import time
import tomllib

import torch
import transformers
import trl
from datasets import Dataset
from torch.utils.data import SequentialSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer


def read_sapo_run(run_dir):
    """The resolved config and the step lines (lines with an "event" key are not steps)."""
    with open(os.path.join(run_dir, "config.toml"), "rb") as f:
        config = tomllib.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    steps = [line for line in lines if "event" not in line]
    if not steps:
        sys.exit(f"{run_dir}/metrics.jsonl has no step lines")
    return config, steps


def load_model_and_tokenizer(model_path):
    """A Hugging Face directory, or a .gguf file (transformers dequantises it to f32)."""
    if model_path.endswith(".gguf"):
        directory, name = os.path.split(model_path)
        model = AutoModelForCausalLM.from_pretrained(directory or ".", gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(directory or ".", gguf_file=name)
        # Every weight is already plain f32; the leftover GGUF quantizer would make the Trainer refuse to
        # fine-tune a "quantized" model (fixtures FACTS: same fix as before save_pretrained).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer.chat_template is not None, f"{model_path}: no chat template"
    return model, tokenizer


class StepClock(TrainerCallback):
    """Timestamps the phases of each optimizer step (see the module doc)."""

    def __init__(self):
        self.steps = []
        self.reference_seconds = 0.0
        self.training_step_seconds = 0.0
        self.training_step_end = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_start = time.perf_counter()
        self.reference_seconds = 0.0
        self.training_step_seconds = 0.0

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_seconds = time.perf_counter() - self.training_step_end

    def on_step_end(self, args, state, control, **kwargs):
        step_seconds = time.perf_counter() - self.step_start
        self.steps.append(
            {
                "dpo_step_seconds": step_seconds,
                "time/reference": self.reference_seconds,
                "time/policy": self.training_step_seconds - self.reference_seconds,
                "time/optimizer": self.optimizer_seconds,
            }
        )


def attach_clock(trainer, clock):
    """Hooks on the reference model's forward and a wrapper around `training_step`."""
    state = {}

    def before(module, inputs):
        state["reference_start"] = time.perf_counter()

    def after(module, inputs, output):
        clock.reference_seconds += time.perf_counter() - state["reference_start"]

    trainer.ref_model.register_forward_pre_hook(before)
    trainer.ref_model.register_forward_hook(after)
    inner = trainer.training_step

    def timed_training_step(*args, **kwargs):
        start = time.perf_counter()
        loss = inner(*args, **kwargs)
        clock.training_step_end = time.perf_counter()
        clock.training_step_seconds += clock.training_step_end - start
        return loss

    trainer.training_step = timed_training_step


def time_sampling(model, tokenizer, batches, sapo_config, new_tokens):
    """`generate` on each batch of prompts; seconds per batch."""
    tokenizer.padding_side = "left"
    model.eval()
    seconds = []
    for rows in batches:
        texts = [tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False) for row in rows]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        start = time.perf_counter()
        with torch.no_grad():
            output = model.generate(
                **encoded,
                do_sample=True,
                temperature=sapo_config["temperature"],
                top_k=sapo_config["top_k"],
                top_p=sapo_config["top_p"],
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        seconds.append(time.perf_counter() - start)
        assert output.shape[1] == encoded["input_ids"].shape[1] + new_tokens, output.shape
    model.train()
    return seconds, int(encoded["input_ids"].shape[1])


def dpo_config(sapo_config, output_dir, n_steps):
    """TRL's config with sapo's hyper-parameters; TRL 1.16 defaults bf16 and checkpointing on."""
    optimizer = sapo_config["optimizer"]
    if optimizer == "rmsprop":
        optim = dict(
            optim="rmsprop",
            optim_args=f"alpha={sapo_config['rmsprop_alpha']},eps={sapo_config['rmsprop_epsilon']}",
        )
    elif optimizer == "adamw":
        optim = dict(
            optim="adamw_torch",
            adam_beta1=sapo_config["adam_beta1"],
            adam_beta2=sapo_config["adam_beta2"],
            adam_epsilon=sapo_config["adam_epsilon"],
        )
    else:
        sys.exit(f"unknown optimizer {optimizer!r}")
    # sapo's `precision = "bf16"` runs against TRL's bf16 mixed precision
    # (autocast on the CPU); f32 against plain float32.
    bf16 = sapo_config.get("precision", "f32") == "bf16"
    return DPOConfig(
        output_dir=output_dir,
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        loss_type=["sigmoid"],
        beta=sapo_config["beta"],
        learning_rate=sapo_config["learning_rate"],
        weight_decay=sapo_config["weight_decay"],
        lr_scheduler_type="linear",
        max_grad_norm=sapo_config["max_grad_norm"],
        per_device_train_batch_size=sapo_config["per_device_train_batch_size"],
        gradient_accumulation_steps=1,
        max_steps=n_steps,
        max_length=1024,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=sapo_config["seed"],
        train_sampling_strategy="sequential",
        dataloader_drop_last=True,
        **optim,
    )


def batch_tokens(dataset, batch_size, n_steps):
    """Real and padded tokens (chosen + rejected sequences) of each step's batch."""
    real, padded = [], []
    for step in range(n_steps):
        rows = [dataset[i] for i in range(step * batch_size, (step + 1) * batch_size)]
        lengths = [len(r["prompt_ids"]) + len(r[side]) for r in rows for side in ("chosen_ids", "rejected_ids")]
        real.append(sum(lengths))
        padded.append(len(lengths) * max(lengths))
    return real, padded


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sapo-run", required=True, help="output_dir of a finished `sapo train` SAPO run")
    parser.add_argument("--steps", type=int, default=8, help="DPO steps and sampling batches to time")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    sapo_config, sapo_steps = read_sapo_run(args.sapo_run)
    threads = sapo_config["threads"] or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(sapo_config["seed"])
    batch_size = sapo_config["per_device_train_batch_size"]
    mean_segment = sum(s["samples/mean_length"] for s in sapo_steps) / len(sapo_steps)
    new_tokens = max(1, math.ceil(mean_segment))

    with open(sapo_config["data"]) as f:
        rows = [json.loads(line) for line in f if line.strip()][: batch_size * args.steps]
    assert len(rows) == batch_size * args.steps, "not enough records"
    load_start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(sapo_config["model"])
    reference = copy.deepcopy(model)
    load_seconds = time.perf_counter() - load_start
    n_params = sum(p.numel() for p in model.parameters())

    sampling_batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    sampling_seconds, prompt_width = time_sampling(model, tokenizer, sampling_batches, sapo_config, new_tokens)

    tokenizer.padding_side = "right"
    clock = StepClock()
    output_dir = os.path.join(os.path.dirname(os.path.abspath(args.out)), "trl-output")
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=dpo_config(sapo_config, output_dir, args.steps),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    assert isinstance(trainer._get_train_sampler(trainer.train_dataset), SequentialSampler)
    attach_clock(trainer, clock)
    real_tokens, padded_tokens = batch_tokens(trainer.train_dataset, batch_size, args.steps)
    trainer.train()
    assert len(clock.steps) == args.steps, (len(clock.steps), args.steps)

    steps = []
    for index, (step, sampling) in enumerate(zip(clock.steps, sampling_seconds)):
        steps.append({"step": index + 1, "time/sampling": sampling, **step, "tokens": real_tokens[index], "padded_tokens": padded_tokens[index]})
    result = {
        "generator": "bench/sapo_step_peer.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__, "python": sys.version.split()[0]},
        "sapo_run": args.sapo_run,
        "model": sapo_config["model"],
        "parameters": n_params,
        "threads": threads,
        "batch_pairs": batch_size,
        "optimizer": sapo_config["optimizer"],
        "sampling": {"new_tokens": new_tokens, "sapo_mean_segment_length": mean_segment, "last_prompt_width": prompt_width},
        "load_seconds": load_seconds,
        "steps": steps,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"peer: {sapo_config['model']}: {args.steps} steps, {new_tokens} new tokens, written {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
