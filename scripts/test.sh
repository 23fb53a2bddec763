#!/usr/bin/env bash
# The test command: set up .venv, then lint, type-check and run the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not integration").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check asl_ray tests jobs benchmarks scripts
mypy
# Two test files at once (-n 2, one file per worker, so a file's Ray and
# fixtures are made once): one file alone kept ~1.3 of the 2 cores busy
# (tests/integration/test_train_real.py, measured on a quiet machine).
python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "$@"
