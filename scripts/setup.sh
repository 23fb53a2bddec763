#!/usr/bin/env bash
# Create .venv (once) and install the project into it. torch==2.13.0 first: it
# is the CPU wheel on this machine's disk, and the project's torch range admits
# it, so nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
# setuptools' build backend warns on every editable install that a folder
# named like the package may shadow it (10 lines); that is this layout by design.
PYTHONWARNINGS=ignore python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
python -c "import asl_ray, torch, mediapipe, ray" || { echo "setup failed: the project does not import" >&2; exit 1; }
