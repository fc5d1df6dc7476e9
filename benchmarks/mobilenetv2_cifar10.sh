#!/usr/bin/env bash
# README "Compress your own model": a MobileNetV2 (alpha 0.35) trained outside the package with plain Keras
# on the CIFAR-10 images beside the checkout, then compressed by the pipeline. Resumable: the teacher is
# trained once (delete runs/user to retrain), and the pipeline resumes where it stopped.
#
#   benchmarks/mobilenetv2_cifar10.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
EPOCHS=${EPOCHS:-15}
if [ ! -f runs/user/mobilenetv2_0.35.keras ]; then
  "$BIN/python" benchmarks/keras_teacher.py --dataset=../shared/datasets/cifar10 --data_cache_dir=runs/data_cache \
      --output_dir=runs/user --architecture=MobileNetV2 --alpha=0.35 --epochs="$EPOCHS"
fi
"$BIN/acompress-pipeline" --flagfile=flags/mobilenetv2_cifar10_cpu.flags --output_dir=runs/mobilenetv2_cifar10 "$@"
