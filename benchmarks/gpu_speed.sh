#!/usr/bin/env bash
# Training images/s and GPU utilisation for LesionCNN and resnet18 at 224 px on one GPU
# (bf16, channels_last, the uint8 cache on the GPU), on the real HAM10000 images.
#   LESION_PL_DATA=/path/to/data bash benchmarks/gpu_speed.sh [STEPS] [extra gpu_speed.py args]
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
  echo "Extra arguments go to benchmarks/gpu_speed.py (its --help lists them), e.g. --batch 512 --set data.num_workers=4"
  exit 0
fi
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
STEPS="${1:-60}"
shift || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
for model in lesion_cnn resnet18; do
  "$PY" benchmarks/gpu_speed.py --model "$model" --steps "$STEPS" "$@"
done
