#!/usr/bin/env bash
# On a GPU machine, from the binaries `bash bench/gpu_step.sh build` put in
# .gpu/: `sapo train --device cuda` for every method on the shipped task, the
# main job's first steps on the GPU and on the CPU side by side (loss and
# margin per step), the same in bf16 mixed precision, and a resumed GPU run.
#
#   bash bench/gpu_train.sh OUT
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?output folder}
mkdir -p "$out"
built_at=$(grep -ao '/[[:alnum:]_/.-]*/sapo-host' .gpu/sapo | head -1 | sed 's|/sapo-host$||')
if [[ -n "$built_at" && ! -e "$built_at" ]]; then mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"; fi
dirs=$( (find /usr /opt -name 'libnvrtc.so.13*' -o -name 'libcublas.so.13*' 2>/dev/null) | grep -v stubs |
    xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:-}"
runs=$(mktemp -d)
S=.gpu/sapo
STEPS=${STEPS:-60}

echo "== main job, first $STEPS steps: GPU, then CPU"
for device in cuda cpu; do
    /usr/bin/time -f "$device wall %e s" $S train --quiet --device $device --max-steps "$STEPS" \
        --output-dir "$runs/sapo-$device" 2>&1 | tail -12 | tee "$out/sapo-$device.log"
    cp "$runs/sapo-$device/metrics.jsonl" "$out/metrics-sapo-$device.jsonl"
done
python3 - "$runs/sapo-cuda/metrics.jsonl" "$runs/sapo-cpu/metrics.jsonl" <<'PY' | tee "$out/compare.txt"
import json, sys
def steps(path):
    return [l for l in map(json.loads, open(path)) if "event" not in l]
gpu, cpu = steps(sys.argv[1]), steps(sys.argv[2])
print(f"{'step':>5} {'loss gpu':>12} {'loss cpu':>12} {'margin gpu':>12} {'margin cpu':>12}")
worst = 0.0
for g, c in zip(gpu, cpu):
    worst = max(worst, abs(g["loss"] - c["loss"]) / max(abs(c["loss"]), 1e-12))
    if g["step"] in (1, 2, 5) or g["step"] % 10 == 0:
        print(f"{g['step']:>5} {g['loss']:>12.6f} {c['loss']:>12.6f} {g.get('rewards/margins', 0):>12.6f} {c.get('rewards/margins', 0):>12.6f}")
print(f"steps compared: {min(len(gpu), len(cpu))}; largest relative loss difference {worst:.2e}")
PY

echo "== main job in bf16 mixed precision on the GPU, first $STEPS steps, against the f32 GPU run"
$S train --quiet --device cuda --set precision=bf16 --max-steps "$STEPS" --output-dir "$runs/sapo-cuda-bf16" 2>&1 |
    tail -12 | tee "$out/sapo-cuda-bf16.log"
cp "$runs/sapo-cuda-bf16/metrics.jsonl" "$out/metrics-sapo-cuda-bf16.jsonl"
python3 - "$runs/sapo-cuda-bf16/metrics.jsonl" "$runs/sapo-cuda/metrics.jsonl" <<'PY' | tee "$out/compare_bf16.txt"
import json, sys
def steps(path):
    return [l for l in map(json.loads, open(path)) if "event" not in l]
bf16, f32 = steps(sys.argv[1]), steps(sys.argv[2])
worst = max(abs(b["loss"] - f["loss"]) / max(abs(f["loss"]), 1e-12) for b, f in zip(bf16, f32))
print(f"steps compared: {min(len(bf16), len(f32))}; largest relative loss difference bf16 vs f32 {worst:.2e}")
PY

echo "== resume on the GPU: the same run continued to $((STEPS + 20)) steps"
$S train --quiet --device cuda --max-steps $((STEPS + 20)) --output-dir "$runs/sapo-cuda" 2>&1 | tail -3 | tee "$out/resume.log"

echo "== every method on the GPU (a few steps each, no evaluation)"
for method in sft dpo ipo hinge orpo spin sppo sppo_hard aipo; do
    extra=()
    case $method in
        spin) extra=(--set spin_iterations=1) ;;
        sppo | sppo_hard | aipo) extra=(--set iterations=1 --set num_samples=3) ;;
    esac
    if $S train --quiet --device cuda --method $method --max-steps 8 --set 'eval_data=""' "${extra[@]}" \
        --output-dir "$runs/$method" >"$out/method-$method.log" 2>&1; then
        echo "$method: ok, $(grep -m1 'loss' "$out/method-$method.log" | tr -s ' ')"
    else
        echo "$method: FAILED"; tail -3 "$out/method-$method.log"
    fi
done
