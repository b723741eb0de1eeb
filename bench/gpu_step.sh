#!/usr/bin/env bash
# On a GPU machine: the CUDA checks and the training-step benchmark, from
# binaries built elsewhere (the GPU machines have no Rust toolchain).
#
# Build here (x86-64), then copy the repository with `.gpu/` to the GPU
# machine and run this script from the repository root there:
#
#   bash bench/gpu_step.sh build      # fills .gpu/ (stripped test binaries, sapo, the bench example)
#   bash bench/gpu_step.sh run OUT    # on the GPU machine: writes OUT/*.log and OUT/bench.jsonl
#
# `run` finds libcuda, NVRTC and cuBLAS (the driver's folder, the CUDA
# toolkit, or the nvidia-* Python wheels) and puts them on LD_LIBRARY_PATH,
# runs the NVRTC compile test, the CPU-vs-GPU cross-check tests, `sapo
# verify` at SmolLM2 shapes, then the DPO step of sapo and of plain PyTorch
# (bench/gpu_step_peer.py) on SmolLM2-135M and a 1.1B LLaMA shape, in f32,
# TF32 and bf16 mixed precision.
set -uo pipefail
cd "$(dirname "$0")/.."

build() {
    set -e
    cargo build --release -p sapo-host --bin sapo --example gpu_step_bench
    mkdir -p .gpu
    local tests
    tests=$(cargo test --no-run -p sapo-cuda --test kernels_compile -p sapo-host --test cuda_verify \
        --message-format=json 2>/dev/null | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
    for t in $tests; do cp "$t" .gpu/; done
    cp target/release/sapo target/release/examples/gpu_step_bench .gpu/
    strip .gpu/*
    ls -la .gpu
}

run() {
    local out=${1:?output folder}
    mkdir -p "$out"
    # The test binaries find fixtures through the absolute path they were built at.
    local built_at
    built_at=$(grep -ao '/[[:alnum:]_/.-]*/sapo-host' .gpu/cuda_verify-* 2>/dev/null | head -1 | sed 's|/sapo-host$||')
    if [[ -n "$built_at" && ! -e "$built_at" ]]; then
        mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"
    fi
    local dirs
    # NVRTC and cuBLAS 13 (cudarc's cuda-13000 feature tries .so.13 first);
    # never the toolkit's stub libraries. libcuda comes from the driver.
    dirs=$( (find /usr /opt -name 'libnvrtc.so.13*' -o -name 'libcublas.so.13*' 2>/dev/null) | grep -v stubs |
        xargs -r -n1 dirname | sort -u | tr '\n' ':')
    export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:-}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$out/env.log"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$out/env.log"
    echo "== kernels_compile"
    SAPO_REQUIRE_NVRTC=1 .gpu/kernels_compile-* --nocapture 2>&1 | tee "$out/kernels_compile.log" | tail -5
    echo "== cuda_verify (tests)"
    .gpu/cuda_verify-* --nocapture --test-threads 1 2>&1 | tee "$out/cuda_verify.log" | grep -E "FAIL|^test |skipped|panicked|result" | head -40
    echo "== sapo verify"
    .gpu/sapo verify --model fixtures/task/model 2>&1 | tee "$out/verify.log" | tail -60
    echo "== bench"
    : >"$out/bench.jsonl"
    # bf16_tf32: the layers' products in bf16 and the LM head's (f32 in sapo's
    # bf16 mode) on TF32 tensor cores, to see what the f32 LM head costs.
    for precision in ${PRECISIONS:-f32 tf32 bf16 bf16_tf32}; do
        local flags="--tf32 false --bf16 false"
        [[ $precision == tf32 ]] && flags="--tf32 true --bf16 false"
        [[ $precision == bf16 ]] && flags="--tf32 false --bf16 true"
        [[ $precision == bf16_tf32 ]] && flags="--tf32 true --bf16 true"
        for model in ${MODELS:-smollm2 llama1b}; do
            # shellcheck disable=SC2086
            .gpu/gpu_step_bench --device cuda --model "$model" --pairs 8 --prompt 64 --response 192 --steps 10 \
                $flags 2>&1 | tee -a "$out/bench.jsonl"
            # shellcheck disable=SC2086
            python3 bench/gpu_step_peer.py --model "$model" --pairs 8 --prompt 64 --response 192 --steps 10 \
                $flags 2>&1 | tail -1 | tee -a "$out/bench.jsonl"
        done
    done
    # The sampler: greedy decode through the KV cache against transformers' generate.
    .gpu/gpu_step_bench --device cuda --mode decode --model smollm2 --pairs 8 --prompt 64 --response 128 --steps 3 \
        2>&1 | tee -a "$out/bench.jsonl"
    python3 bench/gpu_step_peer.py --mode decode --model smollm2 --pairs 8 --prompt 64 --response 128 --steps 3 \
        2>&1 | tail -1 | tee -a "$out/bench.jsonl"
}

case "${1:-}" in
    build) build ;;
    run) run "${2:-}" ;;
    *) echo "usage: bash bench/gpu_step.sh build | run OUT" >&2; exit 2 ;;
esac
