#!/usr/bin/env bash
# Kill trials for checkpoint/resume: SIGKILL `sapo train` at pseudo-random
# instants (a debug pause of 20 ms per checkpoint file makes kills inside a
# write common), rerun it, and require the final weights and metric rows to
# equal an uninterrupted run's, bit for bit. Usage: bash bench/kill_trials.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
SAPO_KILL_TRIALS="${1:-100}" cargo test -p sapo-host --test train_resume killed -- --nocapture 2>&1 | grep -E "kill trials|test result|panicked"
