#!/usr/bin/env bash
# The test command: set up .venv, then lint, type-check and run the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not integration").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check asl_ray tests jobs benchmarks scripts
mypy
python -m pytest -q "$@"
