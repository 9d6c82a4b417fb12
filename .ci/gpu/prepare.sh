#!/usr/bin/env bash
# Prepares the GPU check (.ci/gpu/check.sh) on a machine with the package registries: the
# onnxruntime-gpu wheel for the GPU machine's Python (3.12), with the tree libraries step 5 needs
# and the GPU image lacks (EXTRAS), in one tar cut into parts that each fit one transfer (64 MiB
# with the working tree), and onnxbridge itself as a wheel (the GPU machine has
# no hatchling to install from source, and the converters are found through its entry points).
# Both folders are ignored by git. Then, one call per part, back to back:
#   carry .whlparts/partNN:  mkdir -p /root/parts && cp .whlparts/partNN /root/parts/
# and the last call carries its part and .whl and runs:  bash .ci/gpu/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}   # built for CUDA 13, as the GPU image's torch is
# xgboost is the anchor of step 5 (its wheel has CUDA); EXTRAS= (empty) leaves step 5's models out
EXTRAS=${EXTRAS-xgboost==3.2.0 catboost==1.2.10 skl2onnx==1.20.0 onnxmltools==1.16.0}
PYTHON=${PYTHON:-python3}
PY_VERSION=${PY_VERSION:-3.12}   # the GPU machine's Python
mkdir -p "$(git rev-parse --git-path info)"
for d in /.whlparts/ /.whl/; do
  grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude
done
rm -rf .whlparts .whl /tmp/onnxbridge-gpu-wheel && mkdir -p .whlparts .whl /tmp/onnxbridge-gpu-wheel
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  -d /tmp/onnxbridge-gpu-wheel "$ORT_GPU"
for extra in $EXTRAS; do
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d /tmp/onnxbridge-gpu-wheel "$extra"
done
tar -cf /tmp/onnxbridge-gpu-bundle.tar -C /tmp/onnxbridge-gpu-wheel .
split -b 61m -d /tmp/onnxbridge-gpu-bundle.tar .whlparts/part
echo wheels.tar > .whlparts/NAME
"$PYTHON" -m pip wheel --quiet --no-deps -w .whl .
ls -l .whlparts .whl
echo "parts: $(ls .whlparts/part* | wc -l); the last call runs: bash .ci/gpu/check.sh"
