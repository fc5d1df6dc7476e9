#!/usr/bin/env bash
# The digits comparison at equal budget (README "Comparison at equal budget"): for each seed, architecture
# compression (the main command's flags/digits.flags), its ablation without the embedding (the finalists picked
# from the corpus by the same rule), Keras Tuner's RandomSearch given AC's search wall time, and uniform width
# scaling and L1 filter pruning at AC's chosen ratio; all on AC's teacher, split and finalist procedure. One
# after another (2 cores); every step resumes where it stopped. Then acompress-compare over every run.
#
#   benchmarks/digits_compare.sh            # SEEDS="0 1" for fewer seeds
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FLAGS=--flagfile=flags/digits.flags
seeds=${SEEDS:-0 1 2}
report() {  # report <run> <python expression over the report dict r>
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$1/compressed/report.json"
}
results=()
for seed in $seeds; do
  run=runs/digits_s$seed
  "$PY" -m binaries.pipeline $FLAGS --seed="$seed" --output_dir="$run"
  [ -f "$run/compressed_no_embedding/report.json" ] || \
    "$PY" -m binaries.compress $FLAGS --seed="$seed" --output_dir="$run" --ablation=no_embedding
  seconds=$(report "$run" 'round(r["budget"]["wall_seconds"])')
  ratio=$(report "$run" 'round(r["chosen"]["ratio"], 2)')
  "$PY" -m binaries.tune_baseline $FLAGS --seed="$seed" --method=random --budget_seconds="$seconds" \
      --teacher_dir="$run/teacher" --output_dir="runs/digits_random_s$seed"
  "$PY" -m binaries.tune_baseline $FLAGS --seed="$seed" --method=uniform --target_ratio="$ratio" \
      --teacher_dir="$run/teacher" --output_dir="runs/digits_uniform_s$seed"
  "$PY" -m binaries.tune_baseline $FLAGS --seed="$seed" --method=l1_prune --target_ratio="$ratio" \
      --teacher_dir="$run/teacher" --output_dir="runs/digits_l1_prune_s$seed"
  results+=("$run" "$run/compressed_no_embedding/report.json" "runs/digits_random_s$seed" \
            "runs/digits_uniform_s$seed" "runs/digits_l1_prune_s$seed")
done
"$PY" -m binaries.compare --results="$(IFS=,; echo "${results[*]}")" --output_dir=runs/digits_compare --overwrite
