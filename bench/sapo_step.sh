#!/usr/bin/env bash
# Time per SAPO step, split into sampling, reference forward, policy
# forward+backward and optimizer, for sapo and for a PyTorch/TRL peer doing
# the same work, side by side in one run; prints the table and writes
# bench/results/<UTC date>.json. See bench/README.md.
#
#   PYTHON=/work/venv/bin/python bash bench/sapo_step.sh
#
# Environment (defaults in brackets): PYTHON [python3] with torch,
# transformers, trl, datasets, gguf; CARGO_TARGET_DIR [target]; THREADS [2];
# FIXTURE_STEPS [30] and FIXTURE_PEER_STEPS [20] for the 0.66 M fixture
# model; SMOL_STEPS [12] and SMOL_PEER_STEPS [10] for SmolLM2-135M; WARMUP [2]
# steps dropped from each side; SKIP_SMOL=1 runs the fixture model only;
# PRECISION [f32] or bf16: sapo's `precision`, and TRL's bf16 mixed precision
# (CPU autocast) for the peer; the results file gains a `-bf16` suffix.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TARGET=${CARGO_TARGET_DIR:-target}
THREADS=${THREADS:-2}
PRECISION=${PRECISION:-f32}
FIXTURE_STEPS=${FIXTURE_STEPS:-30}
FIXTURE_PEER_STEPS=${FIXTURE_PEER_STEPS:-20}
SMOL_STEPS=${SMOL_STEPS:-12}
SMOL_PEER_STEPS=${SMOL_PEER_STEPS:-10}
WARMUP=${WARMUP:-2}
GGUF=fixtures/downloads/SmolLM2-135M-Instruct.Q4_1.gguf

# Both sides get the allocator settings that keep glibc from handing freed
# memory back to the system each step (docs: FACTS, "memory a process has
# not touched before is slow here"); without them the PyTorch step varies 5x.
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000

cargo build --release -p sapo-host -j "$THREADS"
SAPO="$TARGET/release/sapo"
if [[ -z "${SKIP_SMOL:-}" && ! -f "$GGUF" ]]; then
    bash fixtures/fetch_smollm2.sh
fi

WORK=$(mktemp -d /tmp/sapo-bench.XXXXXX)
echo "work directory: $WORK" >&2
runs=()
peer_failed() { tail -n 30 "$WORK/peer-$1.log" >&2; echo "peer failed: $WORK/peer-$1.log" >&2; exit 1; }
busy_seconds() { awk '/^cpu /{print ($2+$3+$4+$7+$8+$9)/100; exit}' /proc/stat; }  # USER_HZ is 100 on Linux
# CPU time of this shell's finished children: cutime + cstime of /proc/$$/stat ($$ is this shell even inside $(...)).
children_seconds() { awk '{print ($16+$17)/100}' "/proc/$$/stat"; }
# Runs "$@" and records how much of the machine other processes took meanwhile
# (all CPUs' busy time minus this command's own CPU time, over wall × CPUs):
# the other engineers' builds share these 2 cores, and a share above ~0.1
# makes that run's figures suspect.
measured() {
    local name=$1 wall0 busy0 own0 status=0
    shift
    wall0=$(date +%s.%N) busy0=$(busy_seconds) own0=$(children_seconds)
    "$@" || status=$?
    runs+=("$(awk -v n="$name" -v w="$(date +%s.%N)" -v w0="$wall0" -v b="$(busy_seconds)" -v b0="$busy0" \
        -v o="$(children_seconds)" -v o0="$own0" -v cpus="$(nproc)" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        'BEGIN{f=(b-b0-(o-o0))/((w-w0)*cpus); if(f<0)f=0; printf "\"%s\": {\"wall_seconds\": %.1f, \"foreign_cpu_share\": %.3f, \"load_average_1min_after\": %s}", n, w-w0, f, load}')")
    return $status
}

# File order (shuffle = false), so sapo's step t samples records t·B..(t+1)·B,
# the records the peer's step t trains on. No held-out evaluation: it is not
# part of a step.
common=(--quiet --threads "$THREADS" --set 'eval_data=""' --set shuffle=false --set "precision=\"$PRECISION\"")

measured fixture_sapo "$SAPO" train "${common[@]}" --output-dir "$WORK/sapo-fixture" --max-steps "$FIXTURE_STEPS" >&2
measured fixture_peer "$PYTHON" bench/sapo_step_peer.py --sapo-run "$WORK/sapo-fixture" --steps "$FIXTURE_PEER_STEPS" \
    --out "$WORK/peer-fixture.json" >"$WORK/peer-fixture.log" 2>&1 || peer_failed fixture
cases=(--case fixture "$WORK/sapo-fixture" "$WORK/peer-fixture.json")

if [[ -z "${SKIP_SMOL:-}" ]]; then
    # With a model given the SAPO authors' defaults apply (SAPO-DPO, RMSprop,
    # segment 256); the task's responses are a few tokens, so segment 16 only
    # caps what the whole remaining response would be anyway.
    measured smollm2_sapo "$SAPO" train "${common[@]}" --model "$GGUF" --data fixtures/task/data/train.jsonl \
        --output-dir "$WORK/sapo-smollm2" --max-steps "$SMOL_STEPS" \
        --set per_device_train_batch_size=4 --set segment_len=16 --set learning_rate=1e-6 >&2
    measured smollm2_peer "$PYTHON" bench/sapo_step_peer.py --sapo-run "$WORK/sapo-smollm2" --steps "$SMOL_PEER_STEPS" \
        --out "$WORK/peer-smollm2.json" >"$WORK/peer-smollm2.log" 2>&1 || peer_failed smollm2
    cases+=(--case smollm2 "$WORK/sapo-smollm2" "$WORK/peer-smollm2.json")
fi

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$([[ -n "$(git status --porcelain 2>/dev/null)" ]] && echo true || echo false)
meta="{\"git_revision\": \"$revision\", \"working_tree_dirty\": $dirty, \"work_directory\": \"$WORK\",
  \"runs\": {$(IFS=,; echo "${runs[*]}")},
  \"allocator\": \"MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000\"}"
"$PYTHON" bench/sapo_step_report.py --warmup "$WARMUP" --meta "$meta" \
    --out "bench/results/$(date -u +%Y-%m-%d)$([[ $PRECISION == f32 ]] || echo "-$PRECISION").json" "${cases[@]}"
