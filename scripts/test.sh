#!/usr/bin/env bash
# Run the test suite (expects the virtualenv from scripts/setup.sh to be active).
#
#   bash scripts/test.sh                   everything: what the README and CI run
#   bash scripts/test.sh --quick           the pre-commit set, pytest -m "not slow and not integration":
#                                          no SIGKILL faults, DDP, browsers, PostgreSQL, real-data or long
#                                          training tests (a few minutes on a 2-core machine)
#   bash scripts/test.sh [--quick] ARGS    any other arguments go to pytest (-x, -k NAME, tests/test_data.py)
#
# The real-data tests read MNIST from $MNIST_CNN_REAL_DATA, else $MNIST_CNN_DATA_DIR, else
# ../shared/data/mnist (tests/conftest.py). A run that skipped any real-data or browser test ends with
# a loud "!!! SKIPPED ..." line naming them; with CI=true a skipped real-data test fails the run.
#
# Exits with pytest's exit code (5: no tests were collected).
set -uo pipefail
cd "$(dirname "$0")/.."
args=()
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then
    args+=(-m "not slow and not integration")
  else
    args+=("$arg")
  fi
done
exec python -m pytest -q -p no:cacheprovider ${args[@]+"${args[@]}"}
