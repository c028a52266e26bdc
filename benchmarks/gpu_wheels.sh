#!/usr/bin/env bash
# Run HERE (a machine with pip and network), before a device call: downloads into .whl/ (git-ignored)
# the wheels the GPU machine's image lacks (Python 3.12, x86-64; see benchmarks/README.md), and copies
# the one real slide the read benchmark uses into .whl/data/. About 42 MB; the device call carries .whl.
# Versions are the ones this repository's CI environment runs; one version of each (two stop pip).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
grep -qx '/.whl/' .gitignore 2>/dev/null || grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
rm -rf .whl
mkdir -p .whl/data/svs
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
  --platform manylinux1_x86_64 -d .whl \
  tiffslide==3.0.1 zarr==3.1.6 donfig==0.8.1.post1 google-crc32c==1.9.0 numcodecs==0.16.6 \
  imagecodecs==2026.3.6 tifffile==2026.3.3 shapely==2.2.0 defusedxml==0.7.1 geojson==3.3.0 \
  paquo==0.9.0 jpype1==1.7.1 dynaconf==3.3.5 \
  openslide-python==1.4.7 openslide-bin==4.0.1.2 segmentation-models-pytorch==0.6.0 psutil==7.2.2
# Everything else they need (torch, numpy, click, pillow, scikit-image, matplotlib, tqdm, safetensors,
# fsspec, pyyaml, packaging, timm, torchvision, huggingface-hub) is in the image (KINDS.md).
SHARED=${QCAMSEG_SHARED_DATA:-../shared/data}
if [ -f "$SHARED/svs/cmu-1-small-region.svs" ]; then cp "$SHARED/svs/cmu-1-small-region.svs" .whl/data/svs/; fi
ls .whl/*.whl | wc -l | xargs echo "wheels:"
du -sh .whl
