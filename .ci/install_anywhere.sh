#!/usr/bin/env bash
# The installed `sapo` runs its main job without the source tree: install
# from a clone, delete the clone, then run the defaults of `sapo train` (a
# short run), `sapo eval` and `sapo compare --dry-run` from an empty
# directory. The shipped task's files come from the binary and are written
# under $SAPO_HOME, which points into this script's temp dir so nothing
# leaks. It installs the committed HEAD (a clone does not see uncommitted
# changes), as `cargo install --path` from a fresh clone would.
#
# CARGO_TARGET_DIR defaults to this repository's target/, so the
# dependencies the test command built are reused; only the workspace's own
# crates are compiled again, because their sources live at the clone's path.
# The clone's path is fixed (under the target dir's tmp/), so that repeated
# runs overwrite those crates' artifacts instead of adding a new set each time.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target"
CARGO_TARGET_DIR=$(cd "$target" && pwd)
export CARGO_TARGET_DIR

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sapo-install-anywhere.XXXXXX")
clone="$CARGO_TARGET_DIR/tmp/install-anywhere-clone"
trap 'rm -rf "$tmp" "$clone"' EXIT

now() { date +%s.%N; }
since() { awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.1f s", end - start }'; }
fail() { echo "install_anywhere: $*" >&2; exit 1; }
all_start=$(now)

echo "== install_anywhere: clone $(git -C "$repo" rev-parse --short HEAD) into $clone"
rm -rf "$clone"
mkdir -p "$(dirname "$clone")"
git clone --quiet --no-hardlinks "$repo" "$clone"
git -C "$clone" checkout --quiet --detach "$(git -C "$repo" rev-parse HEAD)"

echo "== install_anywhere: cargo install --locked --debug (target dir $CARGO_TARGET_DIR)"
start=$(now)
cargo install --locked --debug --path "$clone/sapo-host" --root "$tmp/prefix"
echo "   installed in $(since "$start")"
rm -rf "$clone"
[ ! -e "$clone" ] || fail "could not delete the clone $clone"
sapo="$tmp/prefix/bin/sapo"

# From an empty directory, with the shipped files' copy under $tmp/home. HOME
# and XDG_CACHE_HOME point at or away from an empty directory too, so a copy
# that ignored SAPO_HOME would show up there, not in the real cache.
mkdir "$tmp/cwd" "$tmp/fake-home"
cd "$tmp/cwd"
export SAPO_HOME="$tmp/home" HOME="$tmp/fake-home"
unset XDG_CACHE_HOME

echo "== install_anywhere: sapo train (the main job's defaults, 2 steps)"
start=$(now)
"$sapo" train --max-steps 2 --output-dir "$tmp/run" --quiet
echo "   trained in $(since "$start")"
[ -f "$tmp/run/final/model.safetensors" ] || fail "sapo train wrote no $tmp/run/final/model.safetensors"
copies=("$SAPO_HOME"/shipped-*/fixtures/task/model/model.safetensors)
[ -f "${copies[0]}" ] || fail "no shipped model under $SAPO_HOME"
echo "   shipped files: ${copies[0]%/fixtures/*}"

echo "== install_anywhere: sapo eval --model <run>/final (held-out prompts by default)"
start=$(now)
"$sapo" eval --model "$tmp/run/final"
echo "   evaluated in $(since "$start")"

echo "== install_anywhere: sapo compare --dry-run (the shipped grid)"
"$sapo" compare --dry-run --output-dir "$tmp/compare" >"$tmp/plan.txt"
echo "   $(grep -c ' train --config ' "$tmp/plan.txt") runs planned"
model=$(sed -n 's/^model = "\(.*\)"$/\1/p' "$tmp/compare/configs/sapo_dpo.toml")
[ -f "$model/model.safetensors" ] || fail "the default grid's model '$model' does not exist"

[ -z "$(ls -A "$tmp/cwd")" ] || fail "files left in the working directory: $(ls -A "$tmp/cwd")"
[ -z "$(ls -A "$tmp/fake-home")" ] || fail "files written under HOME despite SAPO_HOME: $(ls -A "$tmp/fake-home")"
echo "== install_anywhere: passed in $(since "$all_start")"
