#!/usr/bin/env bash
# Install the OpenCV builds that QuPath bundles, each into its own folder under .tools/, so the
# ONNX export can be checked against every one of them (only one cv2 can be imported per process).
#
#   QuPath 0.5 -> OpenCV 4.6.0, QuPath 0.6 -> 4.10.0, QuPath 0.7 -> 4.11.0
#
# Idempotent: a folder that already imports the right version is left alone. Used by
# tests/export/test_export_qupath.py (which calls this script when a folder is missing) and by CI.
#   usage: scripts/opencv_envs.sh [PYTHON]     (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
VERSIONS="${QCAMSEG_OPENCV_VERSIONS:-4.6.0.66 4.10.0.84 4.11.0.86}"
for ver in $VERSIONS; do
  dest=".tools/cv2-${ver}"
  want="${ver%.*}"   # 4.6.0.66 -> 4.6.0
  if [ -f "${dest}/.ok" ] && PYTHONPATH="${dest}" "$PY" -c \
      "import cv2, sys; sys.exit(cv2.__version__ != '${want}')" 2>/dev/null; then
    continue
  fi
  echo "installing opencv-python-headless==${ver} into ${dest}" >&2
  rm -rf "${dest}.tmp"
  "$PY" -m pip install -q --disable-pip-version-check --no-compile --no-warn-conflicts --target "${dest}.tmp" \
    "opencv-python-headless==${ver}" "numpy<2"
  rm -rf "${dest}"
  mv "${dest}.tmp" "${dest}"
  touch "${dest}/.ok"
done
