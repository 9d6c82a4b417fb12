#!/usr/bin/env bash
# The GPU check of the execution layer, run on the GPU machine in the repository root after
# .ci/gpu/prepare.sh here and one transfer per wheel part (see prepare.sh). Writes under $OUT:
#   device_check.log  everything below;  bench_gpu.md  the ORT CUDA vs torch eager table.
# 1. `onnxbridge providers` without torch imported (does onnxruntime find CUDA by itself?),
# 2. with torch imported first (torch loads the CUDA 13 and cuDNN libraries),
# 3. tests/test_runtime.py and the CUDA generation test: CUDA chosen, TensorRT skipped with its reason, results equal to the
#    CPU's, CUDA tensors bound in place (also one still being computed on torch's stream),
# 4. benchmarks/bench_gpu.py: resnet18 and vit_b_16 at batch 1 and 32.
# 5. benchmarks/bench_trees.py --provider cuda: the tensorised tree forms on CUDA, equal to the
#    CPU TreeEnsemble, timed against xgboost device="cuda" (bench_trees_gpu.md; needs xgboost,
#    catboost and scikit-learn importable there, a missing one is skipped and said so).
# 6. .ci/gpu/more.py generate: greedy generation with the KV cache kept on the GPU (tiny and a
#    0.15B random Llama, float32 and float16, fused and not) against transformers on CUDA.
# 7. .ci/gpu/more.py large: a 2.4 GB model converted, saved, loaded and run on CUDA.
# 8. benchmarks/bench_large.py --layers 2: to_onnx against torch.onnx.export on a quiet machine.
# STEPS="1 6" runs only those steps (all by default).
set -uo pipefail
OUT=${OUT:-/tmp/onnxbridge-gpu-out}
mkdir -p "$OUT"
PARTS=${PARTS:-/root/parts}      # where the earlier calls left their parts
SITE=${SITE:-/tmp/site}
name=$(cat .whlparts/NAME)
mkdir -p "$PARTS" && cp .whlparts/part* "$PARTS"/   # this call's own part
cat "$PARTS"/part* > "$PARTS/$name" || exit 1
rm -rf "$SITE" "$PARTS/wheels" && mkdir -p "$PARTS/wheels"
tar -xf "$PARTS/$name" -C "$PARTS/wheels" || exit 1   # onnxruntime-gpu and prepare.sh's EXTRAS
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$PARTS"/wheels/*.whl \
  .whl/onnxbridge-*.whl || exit 1
export PYTHONPATH=$PWD:$SITE PYTHONUNBUFFERED=1   # the working tree first, the wheel for its entry points
STEPS=${STEPS:-1 2 3 4 5 6 7 8}
want() { [[ " $STEPS " == *" $1 "* ]]; }
{
  nvidia-smi -L
  python3 -c "import onnxruntime as o, onnxbridge; print('onnxruntime', o.__version__, o.__file__); print('onnxbridge', onnxbridge.__version__, onnxbridge.__file__)"
  if want 1; then
    echo "=== 1. onnxbridge providers, torch not imported"
    python3 -m onnxbridge.cli providers --verbose
  fi
  if want 2; then
    echo "=== 2. onnxbridge providers, torch imported first"
    python3 -c "import sys, torch; from onnxbridge.cli import main; sys.exit(main(['providers']))"
  fi
  if want 3; then
    echo "=== 3. tests/test_runtime.py"
    python3 -c "import sys, torch, pytest; sys.exit(pytest.main(['-p', 'no:cacheprovider', '-rA', '-q', 'tests/test_runtime.py', 'tests/test_generate.py::test_greedy_on_cuda_keeps_the_cache_on_the_gpu_and_matches_transformers']))"
    echo "tests rc=$?"
  fi
  if want 4; then
    echo "=== 4. benchmarks/bench_gpu.py"
    (cd benchmarks && python3 -c "import sys, runpy, torch; sys.argv = ['bench_gpu.py', '--out', '$OUT/bench_gpu.md']; runpy.run_path('bench_gpu.py', run_name='__main__')")
    echo "bench rc=$?"
  fi
  if want 5; then
    echo "=== 5. benchmarks/bench_trees.py --provider cuda"
    (cd benchmarks && python3 bench_trees.py --provider cuda --out "$OUT/bench_trees_gpu.md")
    echo "trees rc=$?"
  fi
  if want 6; then
    echo "=== 6. generation on CUDA"
    timeout 200 python3 .ci/gpu/more.py generate "$OUT/gpu_more.md"   # MORE_PROVIDERS=cuda: no CPU rows
    echo "generate rc=$?"
  fi
  if want 7; then
    echo "=== 7. a model above 2 GB on CUDA"
    timeout 150 python3 .ci/gpu/more.py large "$OUT/gpu_more.md"
    echo "large rc=$?"
  fi
  if want 8; then
    echo "=== 8. benchmarks/bench_large.py --layers 2"
    (cd benchmarks && timeout 100 python3 bench_large.py --layers 2)
    echo "bench_large rc=$?"
  fi
} 2>&1 | tee "$OUT/device_check.log"
