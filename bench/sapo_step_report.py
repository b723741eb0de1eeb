#!/usr/bin/env python3
"""The table of `bench/sapo_step.sh`: per-phase seconds per SAPO step, sapo
against its PyTorch/TRL peer, and the ratio peer/sapo (above 1: sapo is
faster). Standard library only.

    python3 bench/sapo_step_report.py --warmup 2 --out bench/results/DATE.json \\
        --case fixture /tmp/sapo-fixture /tmp/peer-fixture.json \\
        --case smollm2 /tmp/sapo-smollm2 /tmp/peer-smollm2.json

Each `--case NAME SAPO_RUN PEER_JSON` pairs a `sapo train` output directory
(its `metrics.jsonl`; lines with an "event" key are not steps) with the JSON
`bench/sapo_step_peer.py` wrote for it. The first `--warmup` steps of each
side are dropped. Phases, both sides:

  sampling    sapo `time/sampling` (EMA segments) | peer `generate`
  reference   sapo `time/reference`               | peer reference-model forward
  policy      sapo `time/policy` (fwd+loss+bwd)   | peer `training_step` − reference
  optimizer   sapo `time/optimizer` (clip+update) | peer clip + `optimizer.step()`
  other       step − the four above (sapo: EMA update, replay buffer, logging;
              peer: scheduler step, `zero_grad`, callbacks)
  step        sapo `step_seconds`                 | peer sampling + DPO step

The ratio column uses means; the JSON also records medians, which resist
another process taking the CPU for a moment.
"""

import argparse
import json
import os
import platform
import statistics
import sys

PHASES = ["sampling", "reference", "policy", "optimizer", "other", "step"]


def sapo_steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    steps = []
    for line in lines:
        if "event" in line:
            continue
        phases = {
            "sampling": line.get("time/sampling", 0.0),
            "reference": line.get("time/reference", 0.0),
            "policy": line["time/policy"],
            "optimizer": line["time/optimizer"],
            "step": line["step_seconds"],
        }
        phases["other"] = phases["step"] - sum(phases[p] for p in ("sampling", "reference", "policy", "optimizer"))
        # tokens_per_second is this step's policy tokens (chosen + rejected sequences) over step_seconds.
        phases["tokens"] = line["tokens_per_second"] * line["step_seconds"]
        steps.append(phases)
    return steps


def peer_steps(peer):
    steps = []
    for line in peer["steps"]:
        phases = {
            "sampling": line["time/sampling"],
            "reference": line["time/reference"],
            "policy": line["time/policy"],
            "optimizer": line["time/optimizer"],
        }
        phases["other"] = line["dpo_step_seconds"] - (phases["reference"] + phases["policy"] + phases["optimizer"])
        phases["step"] = phases["sampling"] + line["dpo_step_seconds"]
        phases["tokens"] = line["tokens"]
        phases["padded_tokens"] = line["padded_tokens"]
        steps.append(phases)
    return steps


def summarise(steps, warmup):
    kept = steps[warmup:]
    if not kept:
        sys.exit(f"no steps left after dropping {warmup} warm-up steps")
    keys = [k for k in kept[0]]
    return {
        "n_steps": len(kept),
        "mean": {k: statistics.fmean(s[k] for s in kept) for k in keys},
        "median": {k: statistics.median(s[k] for s in kept) for k in keys},
    }


def ratio(peer, sapo):
    return peer / sapo if sapo > 0 else float("nan")


def table(name, peer, sapo_summary, peer_summary):
    rows = [
        f"{name}: {peer['model']} ({peer['parameters'] / 1e6:.2f} M parameters), B = {peer['batch_pairs']} pairs, "
        f"{peer['optimizer']}, {peer['threads']} threads; sapo {sapo_summary['n_steps']} steps, "
        f"peer {peer_summary['n_steps']} steps after warm-up",
        f"  sampling: sapo mean segment {peer['sampling']['sapo_mean_segment_length']:.2f} tokens, "
        f"peer exactly {peer['sampling']['new_tokens']} new tokens",
        f"  {'phase (s/step)':<16}{'sapo':>10}{'peer':>10}{'peer/sapo':>11}{'(median)':>10}",
    ]
    for phase in PHASES:
        s, p = sapo_summary["mean"][phase], peer_summary["mean"][phase]
        sm, pm = sapo_summary["median"][phase], peer_summary["median"][phase]
        rows.append(f"  {phase:<16}{s:>10.4f}{p:>10.4f}{ratio(p, s):>11.2f}{ratio(pm, sm):>10.2f}")
    rows.append(
        f"  {'tokens/step':<16}{sapo_summary['mean']['tokens']:>10.0f}{peer_summary['mean']['tokens']:>10.0f}"
        f"   (peer padded {peer_summary['mean']['padded_tokens']:.0f})"
    )
    return "\n".join(rows)


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs=3, action="append", required=True, metavar=("NAME", "SAPO_RUN", "PEER_JSON"))
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped from the start of each side")
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--meta", default="{}", help="JSON object merged into the results (commands, git revision, load)")
    args = parser.parse_args()

    results = {
        "generator": "bench/sapo_step.sh",
        "warmup_steps_dropped": args.warmup,
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "load_average_at_report": load_average()},
        **json.loads(args.meta),
        "cases": {},
    }
    texts = []
    for name, run_dir, peer_path in args.case:
        with open(peer_path) as f:
            peer = json.load(f)
        sapo_all, peer_all = sapo_steps(run_dir), peer_steps(peer)
        sapo_summary, peer_summary = summarise(sapo_all, args.warmup), summarise(peer_all, args.warmup)
        texts.append(table(name, peer, sapo_summary, peer_summary))
        results["versions"] = peer["versions"]
        results["cases"][name] = {
            "model": peer["model"],
            "parameters": peer["parameters"],
            "batch_pairs": peer["batch_pairs"],
            "optimizer": peer["optimizer"],
            "threads": peer["threads"],
            "sampling": peer["sampling"],
            "sapo": {**sapo_summary, "steps": sapo_all},
            "peer": {**peer_summary, "steps": peer_all},
            "ratio_peer_over_sapo": {p: ratio(peer_summary["mean"][p], sapo_summary["mean"][p]) for p in PHASES},
            "ratio_peer_over_sapo_median": {p: ratio(peer_summary["median"][p], sapo_summary["median"][p]) for p in PHASES},
        }
    print("\n\n".join(texts))
    if "runs" in results:
        print("\nshare of the machine other processes took during each run (above ~0.1: suspect):")
        print("  " + ", ".join(f"{name} {run['foreign_cpu_share']:.2f}" for name, run in results["runs"].items()))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
