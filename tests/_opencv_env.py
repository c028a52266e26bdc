"""Run exported ONNX graphs through the OpenCV builds QuPath bundles, each in its own process.

QuPath 0.5 ships OpenCV 4.6.0, 0.6 ships 4.10.0, 0.7 ships 4.11.0 (through JavaCPP). Only one
``cv2`` can be imported per process and 4.6 needs numpy < 2, so each version lives in
``.tools/cv2-<version>`` (``pip install --target``, made by ``scripts/opencv_envs.sh``, which these
helpers call when a folder is missing) and runs in a subprocess with ``PYTHONPATH`` set to it;
arrays go in and out as ``.npy`` files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools"
OPENCV_VERSIONS = ("4.6.0.66", "4.10.0.84", "4.11.0.86")

# What QuPath does per tile (ImageOps.ML.DnnOp → OpenCVDnn → DnnTools.blobFromImage(mat) →
# opencv_dnn.blobFromImage with defaults: scale 1, no mean, no swapRB, no crop; then Net.forward on
# the unconnected output layer).
_WORKER = r"""
import json, sys
import numpy as np
import cv2
onnx_path, in_path, out_path, meta_path = sys.argv[1:5]
net = cv2.dnn.readNetFromONNX(onnx_path)
names = list(net.getUnconnectedOutLayersNames())
images = np.load(in_path)
outs = []
for img in images:
    net.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(img)))
    outs.append(net.forward(names[0])[0])
np.save(out_path, np.stack(outs).astype(np.float32))
json.dump({"version": cv2.__version__, "numpy": np.__version__, "outputs": names}, open(meta_path, "w"))
"""


def opencv_env(version: str) -> Path:
    """The folder holding ``opencv-python-headless==version``; installed on first use."""
    folder = TOOLS / f"cv2-{version}"
    if not (folder / ".ok").is_file():
        env = {**os.environ, "QCAMSEG_OPENCV_VERSIONS": version}
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "opencv_envs.sh"), sys.executable],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        if proc.returncode != 0 or not (folder / ".ok").is_file():
            pytest.fail(f"could not install opencv-python-headless=={version} into {folder}:\n{proc.stderr[-2000:]}")
    return folder


def run_opencv(version: str, onnx_path: Path, images_hwc: np.ndarray, workdir: Path) -> tuple[np.ndarray, dict]:
    """Run ``onnx_path`` on float32 ``(N, H, W, 3)`` RGB 0–255 images with OpenCV ``version``.

    Returns ``(probabilities (N, C, H, W), {"version", "numpy", "outputs"})``.
    """
    folder = opencv_env(version)
    workdir.mkdir(parents=True, exist_ok=True)
    in_path, out_path, meta_path = workdir / "in.npy", workdir / f"out-{version}.npy", workdir / f"meta-{version}.json"
    np.save(in_path, np.ascontiguousarray(images_hwc, dtype=np.float32))
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(onnx_path), str(in_path), str(out_path), str(meta_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"OpenCV {version} failed to run {onnx_path.name}:\n{proc.stderr[-3000:]}"
    return np.load(out_path), json.loads(meta_path.read_text())
