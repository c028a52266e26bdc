#!/usr/bin/env bash
# The GPU benchmark in ONE device call (issue 8). Prepare here first:  bash benchmarks/gpu_wheels.sh
# then call the device tool with:
#     command: bash benchmarks/gpu.sh      carry: [".whl"]      timeout_s: 480
# It installs the carried wheels (no network there; torch, CUDA, numpy, ... are in the image), puts
# the package on PYTHONPATH (no build), runs tests/predict/test_cuda.py (the CUDA code paths; they skip
# everywhere else), writes the slides in parallel on all CPU cores, and runs
# benchmarks/run.py --device cuda: a Camelyon-size slide (47,600 x 107,400 px at 0.5 µm/px, 25 %
# tissue) through `qcamseg predict` with the default U-Net and an smp ResNet-34 U-Net, predict
# end-to-end vs model-only, training loop vs model-only step, peak RSS, tile reads. Everything
# lands in $OUT (the JSON, the run log, gpu.txt); the table is printed last. Budget: the script
# stops itself after GPU_SH_BUDGET_S (default 400 s) so a fresh machine's start-up fits in 8 min;
# each section after GPU_SH_SECTION_TIMEOUT (default 240 s).
# Issue 18 (cascade vs single pass on Camelyon-size slides, and the training loop ratio), one call:
#     command: GPU_SH_SKIP_TESTS=1 GPU_SH_BUDGET_S=560 GPU_SH_SECTION_TIMEOUT=420 bash benchmarks/gpu.sh --sections cascade train
#     carry: [".whl"]      timeout_s: 600
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/benchmarks/results}
BUDGET=${GPU_SH_BUDGET_S:-400}
mkdir -p "$OUT"
start=$(date +%s)
exec > >(tee "$OUT/gpu_sh.log") 2>&1

ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run benchmarks/gpu_wheels.sh here and carry .whl"; exit 3; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 QCAMSEG_SHARED_DATA=$PWD/.whl/data
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' || exit 4
import torch, tiffslide, openslide, shapely, imagecodecs, qupath_camseg
print(f"python ok: torch {torch.__version__} cuda {torch.cuda.is_available()} {torch.cuda.get_device_name(0)}, "
      f"qupath_camseg {qupath_camseg.__version__}, tiffslide {tiffslide.__version__}, openslide {openslide.__library_version__}")
try:
    import segmentation_models_pytorch as smp
    print("smp", smp.__version__)
except Exception as err:  # the benchmark then uses a wider U-Net and says so
    print("smp unavailable:", err)
PY
echo "setup: $(( $(date +%s) - start )) s"

# the CUDA paths first (bf16 inference vs CPU, both tile readers, AMP training + resume): ≤ 120 s
if [ "${GPU_SH_SKIP_TESTS:-0}" != 1 ]; then
    timeout 120 python3 -m pytest tests/predict/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.log" | tail -5
    echo "cuda tests: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
fi

left=$(( BUDGET - ($(date +%s) - start) ))
timeout "$left" python3 benchmarks/run.py --device cuda --out "$OUT" --workdir /tmp/qcamseg-bench \
    --section-timeout "${GPU_SH_SECTION_TIMEOUT:-240}" "$@"
rc=$?
echo "gpu.sh: run.py exit $rc after $(( $(date +%s) - start )) s"
if [ "$rc" -ne 0 ]; then  # stopped early: print what the JSON holds so far
    latest=$(ls -t "$OUT"/*.json 2>/dev/null | head -1)
    [ -n "$latest" ] && python3 benchmarks/run.py --table "$latest"
fi
exit "$rc"
