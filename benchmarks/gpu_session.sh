#!/usr/bin/env bash
# One device session of benchmarks/gpu_suite.py on a bare GPU machine whose python3 has torch (not
# diffusers): the pinned wheels carried in .whl/ are installed beside it, the repository's packages are
# put on the path, and the suite runs for at most BUDGET seconds, resuming from out/gpu-suite/ (carry it
# from the last session). The results are copied into $OUT, the device tool's return folder.
#
#   here, once:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                    --platform manylinux_2_17_x86_64 --implementation cp -d .whl \
#                    diffusers==0.42.1 transformers==5.24.0 importlib_metadata==10.2.0 regex==2026.11.19 \
#                    ftfy==6.3.1 wcwidth==0.9.4
#   device run:  bash benchmarks/gpu_session.sh 420        carry: .whl, out/gpu-suite
#   afterwards:  copy the returned results.json into out/gpu-suite/ here
set -euo pipefail
budget=${1:-420}
shift || true
"${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/packages
ln -sfn "$PWD/backend/marionette" /tmp/packages/marionette
ln -sfn "$PWD/blender_addon/core" /tmp/packages/marionette_core
export PYTHONPATH=/tmp/packages:/tmp/site PYTHONUNBUFFERED=1
results=out/gpu-suite
mkdir -p "$results"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$results/nvidia-smi.csv" || true
status=0
"${PYTHON:-python3}" benchmarks/gpu_suite.py --out "$results" --budget "$budget" "$@" 2>&1 | tee "$results/log.txt" || status=$?
if [ -n "${OUT:-}" ]; then
    cp "$results"/results.json "$results"/results.md "$results"/log.txt "$results"/nvidia-smi.csv "$OUT"/ 2>/dev/null || true
fi
exit $status
