#!/usr/bin/env bash
# The CIFAR-10 16x16 comparison (flags/cifar10_16px.flags), one seed: architecture compression with the
# teacher-skeleton search, L1 filter pruning and uniform width scaling on the same teacher, split,
# finalist procedure and target; then the same run's compression with the widths-only search (the teacher's
# kernels kept) and with the free search (the ablation of --search_skeleton). One after another (2 cores);
# every step resumes where it stopped.
#
#   benchmarks/cifar10_16px_compare.sh           # SEED=1 for another seed (its own split and teacher)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FLAGS=--flagfile=flags/cifar10_16px.flags
seed=${SEED:-0}
run=${RUN:-runs/cifar10_16px_s$seed}
"$PY" -m binaries.pipeline $FLAGS --seed="$seed" --output_dir="$run"
"$PY" -m binaries.tune_baseline $FLAGS --seed="$seed" --method=l1_prune --pruning_eval_examples=2000 \
    --teacher_dir="$run/teacher" --output_dir="${run}_l1_prune"
"$PY" -m binaries.tune_baseline $FLAGS --seed="$seed" --method=uniform --teacher_dir="$run/teacher" \
    --output_dir="${run}_uniform"
# The other searches on the same teacher, corpus and embedding, each kept beside the skeleton run's results:
# compressed/ holds one search's results at a time (--overwrite replaces the previous one's; a marker tells
# a resumed variant, whose partial results compressed/ holds, from a new one).
[ -d "$run/compressed_teacher_skeleton" ] || cp -r "$run/compressed" "$run/compressed_teacher_skeleton"
variant() {  # variant <name> <--search_skeleton>
  [ -d "$run/compressed_$1" ] && return
  local overwrite=--overwrite
  [ -f "$run/.compressing_$1" ] && overwrite=
  touch "$run/.compressing_$1"
  "$PY" -m binaries.compress $FLAGS --seed="$seed" --output_dir="$run" --search_skeleton="$2" $overwrite
  cp -r "$run/compressed" "$run/compressed_$1"
}
variant widths widths  # kernels kept: the search space of L1 pruning
variant free free      # the ablation of --search_skeleton
"$PY" -m binaries.compare --results="$run/compressed_teacher_skeleton/report.json,$run/compressed_widths/report.json,$run/compressed_free/report.json,${run}_l1_prune,${run}_uniform" \
    --output_dir="${run}_compare" --overwrite
