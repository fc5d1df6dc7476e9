#!/usr/bin/env bash
# The CIFAR-10 comparison of README "CIFAR-10": every method on flags/cifar10_cpu.flags, one seed at a
# time, one after another (2 cores: never two at once). Every step resumes where it stopped, so rerun
# the script after an interruption. Every method gets the pipeline's teacher (--teacher_dir), data
# split, finalist procedure (5 inherited finalists, 10 epochs) and target (20x, 1 point on validation).
#
#   benchmarks/cifar10_compare.sh            # seed 0: pipeline, uniform, l1_prune, no_embedding, random
#   SEEDS="0 1 2" benchmarks/cifar10_compare.sh
#
# Seeds other than 0 draw another data split, so each needs its own teacher (~35 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
FLAGS=--flagfile=flags/cifar10_cpu.flags
for seed in ${SEEDS:-0}; do
  run=runs/cifar10_cpu
  [ "$seed" = 0 ] || run=runs/cifar10_cpu_s$seed
  teacher=$run/teacher
  "$BIN/acompress-pipeline" $FLAGS --seed="$seed" --output_dir="$run"
  "$BIN/acompress-tune-baseline" $FLAGS --seed="$seed" --method=uniform --teacher_dir="$teacher" \
      --output_dir="${run}_uniform"
  "$BIN/acompress-tune-baseline" $FLAGS --seed="$seed" --method=l1_prune --pruning_eval_examples=2000 \
      --teacher_dir="$teacher" --output_dir="${run}_l1_prune"
  "$BIN/acompress-compress" $FLAGS --seed="$seed" --output_dir="$run" --ablation=no_embedding
  # RandomSearch spends what architecture compression spent: corpus + refinement child-epochs.
  epochs=$("$BIN/python" -c "import json; print(json.load(open('$run/compressed/report.json'))['budget']['child_epochs'])")
  "$BIN/acompress-tune-baseline" $FLAGS --seed="$seed" --method=random --teacher_dir="$teacher" \
      --budget_child_epochs="$epochs" --output_dir="${run}_random"
done
results=()
for seed in ${SEEDS:-0}; do
  run=runs/cifar10_cpu
  [ "$seed" = 0 ] || run=runs/cifar10_cpu_s$seed
  results+=("$run" "${run}_uniform" "${run}_l1_prune" "$run/compressed_no_embedding/report.json" "${run}_random")
done
"$BIN/acompress-compare" --results="$(IFS=,; echo "${results[*]}")" --output_dir=runs/cifar10_compare --overwrite
