#!/usr/bin/env bash
# Run the test suite (expects the virtualenv from scripts/setup.sh to be active).
#
#   bash scripts/test.sh                   everything: what the README and CI run
#   bash scripts/test.sh --quick           the pre-commit set, pytest -m "not slow and not integration":
#                                          no SIGKILL faults, DDP, browsers, PostgreSQL, real-data or long
#                                          training tests (a few minutes on a 2-core machine)
#   bash scripts/test.sh [--quick] ARGS    any other arguments go to pytest (-x, -k NAME, tests/test_data.py)
#
# Exits with pytest's exit code (5: no tests were collected).
set -uo pipefail
cd "$(dirname "$0")/.."
export MNIST_CNN_REAL_DATA="${MNIST_CNN_REAL_DATA:-$(cd .. && pwd)/shared/data/mnist}"
args=()
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then
    args+=(-m "not slow and not integration")
  else
    args+=("$arg")
  fi
done
exec python -m pytest -q -p no:cacheprovider ${args[@]+"${args[@]}"}
