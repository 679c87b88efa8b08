#!/usr/bin/env bash
# The project's static checks (expects the virtualenv from scripts/setup.sh to be active):
# ruff lint + format, mypy, and import-linter's architecture contracts (docs/architecture.md).
# CI runs this before the tests; .pre-commit-config.yaml runs the same tools on each commit.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "lint: ruff check" >&2
ruff check .
echo "lint: ruff format --check" >&2
ruff format --check .
echo "lint: mypy" >&2
mypy
echo "lint: lint-imports" >&2
lint-imports --no-cache
