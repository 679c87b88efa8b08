#!/usr/bin/env bash
# Run the test suite (expects the virtualenv from scripts/setup.sh to be active).
set -uo pipefail
cd "$(dirname "$0")/.."
export MNIST_CNN_REAL_DATA="${MNIST_CNN_REAL_DATA:-$(cd .. && pwd)/shared/data/mnist}"
python -m pytest -q -p no:cacheprovider "$@"
