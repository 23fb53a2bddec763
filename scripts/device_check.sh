#!/usr/bin/env bash
# Issue #13's GPU checks in one call of the `device` tool (README, "On a GPU"):
#   here:  bash scripts/device_pack.sh              # .device/: Ray, pydantic, the WLASL100 features
#   there: bash scripts/device_check.sh             # carry [".device"]; logs and figures under $OUT
#   here:  python scripts/device_report.py FOLDER   # the tables, from what came back
# The machine has torch with CUDA, numpy, pyarrow, pandas, nvidia-ml-py; no
# Ray, pydantic, MLflow or network: the package runs from this tree.
# Stages, each bounded so that the whole ends inside BUDGET seconds:
#   setup     Ray and pydantic into /tmp/site, the features into runs/device/features
#   tests     the gpu-marked tests (tests/gpu)
#   step      benchmarks/gpu_step.py: a training step's time, fp32/bf16 x loop/closed-form scores
#   speed     the recipe through `asl-ray train` on 1 GPU, alone: fp32, then bf16 (SPEED), SPEED_EPOCHS each
#   scale     benchmarks/scale.py: SCALE_N synthetic sequences, 1 GPU worker, one epoch
#   accuracy  the recipe, fp32 and bf16 (seed 0), ACC_EPOCHS epochs, both at once, stopped
#             at the budget's end if not done (every epoch is checkpointed)
# STAGES picks some (setup always runs): a second call with STAGES=accuracy
# continues the accuracy runs from their checkpoints while the machine is
# still the same one (runs/ is kept between calls on a warm machine).
# The GPU's utilisation and memory are sampled every 0.5 s throughout (gpu.csv);
# every epoch's history carries its wall-clock end, so each stage's busy share
# is read off the samples in its epochs (device_report.py).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
BUDGET=${BUDGET:-540}
SPEED_EPOCHS=${SPEED_EPOCHS:-4}
# The speed stage's runs, NAME=KEY=VALUE each (one config override a run).
SPEED=${SPEED:-amp-false=train.amp=false amp-true=train.amp=true}
SCALE_N=${SCALE_N:-100000}
ACC_EPOCHS=${ACC_EPOCHS:-100}
STAGES=${STAGES:-tests step speed scale accuracy}
OUT=${OUT:-/tmp/device-out}
PACK=${PACK:-.device}  # scripts/device_pack.sh's output
LOGS=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/main.log") 2>&1
left() { echo $((BUDGET - ($(date +%s) - T0))); }
want() { [[ " $STAGES " == *" $1 "* ]]; }
stage() { echo "== stage $1 at $(date +%s) (t=$(($(date +%s) - T0)) s, $(left) s left)"; }

stage setup
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$PACK"/*.whl || exit 1
tar -xJf "$PACK/ray.tar.xz" -C "$SITE" 2>/dev/null \
  || python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$PACK/ray.tar.xz" "$SITE" \
  || exit 1
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
# Its own folder, so that a run on a machine with extracted features leaves them alone.
FEATURES=runs/device/features
mkdir -p "$FEATURES"
cp "$PACK/features.parquet" "$FEATURES/part-device.parquet"
python3 scripts/gpu_sampler.py "$OUT/gpu.csv" &
SAMPLER=$!
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
python3 -c "import torch, ray, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', \
ray.__version__, 'pydantic', pydantic.VERSION, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
  || exit 1
echo "cpus $(nproc)"
CPUS=$(nproc)
# The scale stage's dataset, written on one core while the next stages use the GPU.
want scale && python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from scale import make_dataset; \
make_dataset(Path('/tmp/scale/features-$SCALE_N'), $SCALE_N)" > "$LOGS/generate.log" 2>&1 &
GEN=$!

if want tests; then
  stage tests
  timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs 2>&1 | tail -n 25
fi

if want step; then
  stage step
  timeout 150 python3 benchmarks/gpu_step.py --json "$OUT/step.json" --set "extract.output_dir=$FEATURES"
fi

COMMON=(-c configs/wlasl100_attention.yaml --set tracking.enabled=false --set ray.include_dashboard=false
        --set "ray.num_cpus=$CPUS" --set train.checkpoints_to_keep=200 --set "extract.output_dir=$FEATURES"
        --set train.run_dir=runs/device)
for run in $SPEED; do
  want speed || break
  name=${run%%=*}
  stage "speed-$name"
  timeout -k 10 150 python3 -m asl_ray.cli train "${COMMON[@]}" --set "train.epochs=$SPEED_EPOCHS" \
    --set "${run#*=}" --set "train.name=speed-$name" > "$LOGS/speed-$name.log" 2>&1
  echo "rc $?"; tail -n 4 "$LOGS/speed-$name.log"
done

if want scale; then
  stage scale-generate-wait
  wait $GEN; echo "generated: rc $?"; tail -n 2 "$LOGS/generate.log"
  stage scale
  timeout -k 10 200 python3 benchmarks/scale.py --sizes "$SCALE_N" --workers 1 --keep /tmp/scale \
    --set "ray.num_cpus=$CPUS" --set ray.include_dashboard=false > "$OUT/scale.log" 2>&1
  echo "rc $?"; tail -n 8 "$OUT/scale.log"
fi

want accuracy && stage accuracy
run_for=$(($(left) - 35))
ACC=()
for amp in false true; do
  want accuracy || break
  timeout -s INT -k 15 "$run_for" python3 -m asl_ray.cli train "${COMMON[@]}" --set "train.epochs=$ACC_EPOCHS" \
    --set "train.amp=$amp" --set "train.name=acc-amp-$amp" > "$LOGS/acc-amp-$amp.log" 2>&1 &
  ACC+=($!)
done
if [ ${#ACC[@]} -gt 0 ]; then
  wait "${ACC[@]}"
  for amp in false true; do tail -n 3 "$LOGS/acc-amp-$amp.log"; done
fi

stage collect
kill $SAMPLER 2>/dev/null
python3 - "$OUT/histories.json" <<'PY'
"""The history of every run's latest checkpoint (all its epochs), by run name."""
import json, sys
from pathlib import Path
found = {}
for run in [*Path("runs/device").glob("speed-*"), *Path("runs/device").glob("acc-*"),
            *Path("/tmp/scale/runs").glob("*")]:
    ckpts = [p / "history.json" for p in run.glob("checkpoint_*") if (p / "history.json").is_file()]
    histories = [json.loads(p.read_text()) for p in ckpts]
    if histories:
        found[run.name] = max(histories, key=len)
Path(sys.argv[1]).write_text(json.dumps(found))
print({k: len(v) for k, v in found.items()})
PY
tar czf "$OUT/logs.tgz" -C "$LOGS" .
stage done
