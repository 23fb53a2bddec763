#!/usr/bin/env bash
# Packs what scripts/device_check.sh needs on a GPU machine that has torch,
# numpy, pyarrow and pandas but no Ray, pydantic or network (the `device`
# tool's H200: Python 3.12), into .device/ (git-ignored), for its `carry`:
#   ray.tar.xz        Ray 2.60's cp312 wheel unpacked, less what training never
#                     loads (Java jars, RLlib, Serve, LLM, the dashboard's web
#                     client), xz-compressed: 79 MB -> ~24 MB (the carry limit
#                     is 64 MiB a call)
#   *.whl             pydantic and jsonschema with their small dependencies
#   features.parquet  the WLASL100 feature dataset (runs/wlasl100/features) in
#                     one file, zstd with byte-stream-split floats: 52 -> ~27 MB,
#                     lossless
# Usage: bash scripts/device_pack.sh   (downloads from the package registry)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p .device
dl() {
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
pydantic=$(python -c "import pydantic, pydantic_core; print(pydantic.VERSION, pydantic_core.__version__)")
dl .device "pydantic==${pydantic% *}" "pydantic-core==${pydantic#* }" annotated-types typing-inspection \
  typing-extensions jsonschema jsonschema-specifications referencing rpds-py
if [ ! -f .device/ray.tar.xz ]; then
  tmp=$(mktemp -d)
  dl "$tmp" ray==2.60.0
  (cd "$tmp" && mkdir site && cd site && unzip -q ../ray-*.whl \
     && rm -rf ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client/build \
     && chmod +x ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server \
     && tar cf - . | xz -9 -T0 > "$OLDPWD/.device/ray.tar.xz")
  rm -rf "$tmp"
fi
python - <<'PY'
import pyarrow.dataset as ds, pyarrow.parquet as pq
t = ds.dataset("runs/wlasl100/features", format="parquet").to_table()
floats = [f"{c}.list.element" for c in ("landmarks", "features", "lips") if c in t.column_names]
pq.write_table(t, ".device/features.parquet", compression="zstd", compression_level=19,
               use_byte_stream_split=floats, use_dictionary=False)
print(f"{t.num_rows} rows -> .device/features.parquet")
PY
du -ch .device/* | tail -1
