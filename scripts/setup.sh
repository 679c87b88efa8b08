#!/usr/bin/env bash
# Set up a virtualenv in .venv with the CPU build of torch and the package with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch 2.13.0 first: this machine has its CPU build on disk; any other spec pulls a CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
if [ "${CI:-}" = "true" ] || [ "${MNIST_CNN_SYSTEM_DEPS:-}" = "1" ]; then
  bash scripts/system-deps.sh
fi
