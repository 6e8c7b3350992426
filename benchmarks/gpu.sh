#!/usr/bin/env bash
# GPU benchmark of the workflow's GPU steps (extraction with and without the lens, from tensors and
# from JPEG files, explainability perturbation curves, streaming probes); writes JSON.
# Sized to finish within 8 minutes on one GPU. --quick: tiny shapes on the CPU in seconds.
#   benchmarks/gpu.sh [--quick] [--output benchmarks/results/gpu.json] [--threads N]
set -euo pipefail
cd "$(dirname "$0")"
exec python gpu_benchmark.py "$@"
