#!/usr/bin/env bash
# The main job: set up .venv, then run the whole pipeline (extract, train, a
# small tune, evaluate) with configs/quickstart.yaml. Extra arguments go to
# `asl-ray run` (e.g. --set data.videos_dir=/data/wlasl/videos).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
asl-ray run -c configs/quickstart.yaml "$@"
