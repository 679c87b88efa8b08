#!/usr/bin/env bash
# The prepared GPU benchmark (one run on a CUDA machine, <= 8 minutes wall on an H100-class GPU):
#   speed.py --device cuda : fast99 x 10 seeds, fast995 x 5 seeds, the seed recipe for one epoch,
#                            inference throughput at batch 1000 and latency at batch 1;
#   accuracy.py            : one seed of `best` (its train seconds are the GPU cost per model).
# Writes JSON (and nvidia-smi's view of the GPU) into $OUT (default: results/).
#
# On a lent machine (the device tool; ../shared does not travel, so copy the data into the repo):
#   here:  mkdir -p .gpu-data && cp ../shared/data/mnist/*.gz .gpu-data/ && echo /.gpu-data/ >> .git/info/exclude
#   there: run(command="DATA=.gpu-data bash benchmarks/gpu.sh", carry=[".gpu-data"], timeout_s=540)
# The GPU image has torch, numpy, safetensors, scikit-learn, matplotlib, pillow, click, rich and
# filelock, so the package runs from src/ without installing.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA:-../shared/data/mnist}"
out="${OUT:-results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU here'; print(torch.__version__, torch.cuda.get_device_name())" \
  | tee "$out/gpu.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$out/gpu.txt" 2>&1 || true
start=$(date +%s)
timeout 330 python3 benchmarks/speed.py --data-dir "$data" --device cuda --out "$out/speed-gpu.json"
timeout 140 python3 benchmarks/accuracy.py --data-dir "$data" --recipe best --seeds 1 --runs /tmp/gpu-best --fresh \
  --quiet --out "$out/accuracy-gpu-best.json"
echo "gpu.sh: $(( $(date +%s) - start )) s wall" | tee -a "$out/gpu.txt"
