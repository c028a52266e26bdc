"""``qcamseg export-qupath``: the exported classifier computes what the PyTorch model computes.

(a) parity of PyTorch, onnxruntime, TorchScript and OpenCV 4.6 / 4.10 / 4.11 (QuPath 0.5 / 0.6 /
0.7) on random and real H&E tiles; (b) QuPath's tiling (emulated in numpy) over a synthetic slide
agrees with a full-image forward pass; plus the CLI, the folder it writes and ``--into-project``.
QuPath itself is not needed: its behaviour is taken from its sources (see pixel_classifier.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _opencv_env import OPENCV_VERSIONS, run_opencv
from PIL import Image

from qupath_camseg.cli import main
from qupath_camseg.errors import ModelBundleError
from qupath_camseg.export import (
    ProbabilityModel,
    check_onnx_graph,
    export_onnx,
    model_path_from_classifier,
    qupath_tiled_predict,
    validate_pixel_classifier,
)
from qupath_camseg.model import Calibration, ModelConfig, build_model, save_bundle

TILE, PAD = 64, 16
INPUT = TILE + 2 * PAD  # 96
CLASSES = [{"name": "Tumor", "color": [200, 0, 0]}, {"name": "Necrosis", "color": [120, 60, 0]}]
# the exported folder is calibrated, so every parity check below covers the calibration in the graph
CALIBRATION = Calibration(0.8, (0.1, -0.4, 0.2))


def _spread_model(arch: dict, seed: int) -> torch.nn.Module:
    """A U-Net with non-trivial BatchNorm statistics and logits spread wide (clear argmax)."""
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
        model.head.weight.mul_(8.0)
        model.eval()
        # Centre the logits per class so every class wins somewhere (a non-vacuous argmax check).
        probe = torch.rand((2, 3, INPUT, INPUT), generator=torch.Generator().manual_seed(seed)) * 255
        model.head.bias.sub_(model(probe).mean(dim=(0, 2, 3)))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    arch = {"name": "unet", "width": 8, "depth": 3, "n_classes": len(CLASSES)}
    model = _spread_model(arch, seed=1)
    save_bundle(root / "model", model, ModelConfig(arch=arch, mpp=1.0, tile_px=TILE, classes=CLASSES,
                                                   calibration=CALIBRATION))
    rc = main(["export-qupath", str(root / "model"), "--out", str(root / "out"), "--format", "both",
               "--padding", str(PAD), "--name", "camseg-test"])  # fmt: skip
    assert rc == 0
    return {"root": root, "out": root / "out", "model": model}


def _tiles(shared_data: Path) -> np.ndarray:
    """(N, INPUT, INPUT, 3) float32 RGB 0–255: random noise, flat colours and real H&E crops."""
    rng = np.random.default_rng(0)
    tiles = [rng.uniform(0, 255, (INPUT, INPUT, 3)), np.full((INPUT, INPUT, 3), 255.0), np.zeros((INPUT, INPUT, 3))]
    for name in ("tiles/stardist_histo.jpg", "tiles/wsidicom_test_tile.png"):
        rgb = np.asarray(Image.open(shared_data / name).convert("RGB"), np.float32)
        tiles += [rgb[:INPUT, :INPUT], rgb[-INPUT:, -INPUT:]]
    import tiffslide

    with tiffslide.TiffSlide(shared_data / "svs" / "cmu-1-small-region.svs") as slide:
        for xy in ((600, 900), (1400, 2000)):
            tiles.append(np.asarray(slide.read_region(xy, 0, (INPUT, INPUT)).convert("RGB"), np.float32))
    return np.stack(tiles).astype(np.float32)


def _compare(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max()), float((got.argmax(1) == ref.argmax(1)).mean())


@pytest.fixture(scope="module")
def reference(exported: dict, shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    tiles = _tiles(shared_data)
    x = torch.from_numpy(tiles.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        ref = ProbabilityModel(exported["model"], CALIBRATION)(x).numpy()
        raw = ProbabilityModel(exported["model"])(x).numpy()
        by_hand = torch.softmax(exported["model"](x) / 0.8 + torch.tensor([0.1, -0.4, 0.2]).view(1, 3, 1, 1), 1)
    np.testing.assert_allclose(ref, by_hand.numpy(), atol=1e-6)
    assert np.abs(ref - raw).max() > 0.05  # the calibration changes what QuPath sees
    return tiles, ref


def test_onnx_graph_is_what_opencv_46_imports(exported: dict) -> None:
    import onnx

    graph = onnx.load(str(exported["out"] / "model.onnx"))
    assert [p for p in check_onnx_graph(graph, input_px=INPUT) if not p.startswith("note:")] == []
    ops = {n.op_type for n in graph.graph.node}
    assert "Pad" not in ops and "Softmax" in ops and "Sub" in ops  # normalisation and softmax inside
    assert {"Mul", "Add"} <= ops  # the calibration
    assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {11}
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*graph.graph.input, *graph.graph.output)]
    assert dims == [[1, 3, INPUT, INPUT], [1, 1 + len(CLASSES), INPUT, INPUT]]


def test_graph_check_catches_pad_and_dynamic_shapes(tmp_path: Path) -> None:
    import onnx

    class Padded(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")[..., 1:-1, 1:-1]

    with pytest.raises(ModelBundleError, match="Pad"):
        export_onnx(Padded(), tmp_path / "pad.onnx", input_px=32)
    assert not (tmp_path / "pad.onnx").exists()
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3, padding=1), (torch.zeros(1, 3, 32, 32),), tmp_path / "dyn.onnx",
                      input_names=["input"], dynamic_axes={"input": {2: "h", 3: "w"}}, dynamo=False)  # fmt: skip
    assert any("dynamic shape" in p for p in check_onnx_graph(onnx.load(str(tmp_path / "dyn.onnx"))))


def test_parity_pytorch_onnxruntime_torchscript(exported: dict, reference: tuple[np.ndarray, np.ndarray]) -> None:
    import onnxruntime as ort

    tiles, ref = reference
    x = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2))
    sess = ort.InferenceSession(str(exported["out"] / "model.onnx"), providers=["CPUExecutionProvider"])
    got_ort = np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    scripted = torch.jit.load(str(exported["out"] / "model.pt"))
    with torch.no_grad():
        got_ts = np.concatenate([scripted(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])
    for got in (got_ort, got_ts):
        diff, agree = _compare(got, ref)
        assert diff < 1e-4 and agree > 0.999, (diff, agree)
    assert 0.05 < (ref.argmax(1) > 0).mean() < 0.95  # the check is not vacuous: classes vary


@pytest.mark.parametrize("version", OPENCV_VERSIONS)
def test_parity_opencv_as_in_qupath(exported: dict, reference: tuple[np.ndarray, np.ndarray], version: str,
                                    tmp_path: Path) -> None:  # fmt: skip
    tiles, ref = reference
    got, meta = run_opencv(version, exported["out"] / "model.onnx", tiles, tmp_path)
    assert meta["version"] == version.rsplit(".", 1)[0]
    assert meta["outputs"] == ["probabilities"]  # the layer OpenCVDnn forwards to when 'outputs' is unset
    diff, agree = _compare(got, ref)
    assert diff < 1e-4 and agree > 0.999, (version, diff, agree)


def test_export_folder_and_readme(exported: dict) -> None:
    out = exported["out"]
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "model.pt", "camseg-test.json", "camseg-test-djl.json",
                                               "README.md", "export.json"}  # fmt: skip
    for name in ("camseg-test.json", "camseg-test-djl.json"):
        data = json.loads((out / name).read_text(encoding="utf-8"))
        validate_pixel_classifier(data, check_files=True)
        assert model_path_from_classifier(data).parent == out.resolve()
        assert data["metadata"]["inputResolution"]["pixelWidth"] == {"value": 1.0, "unit": "\u00b5m"}
        assert [data["metadata"]["classificationLabels"][k]["name"] for k in "012"] == ["Ignore*", "Tumor", "Necrosis"]
    readme = (out / "README.md").read_text(encoding="utf-8")
    for needle in ("classifiers/pixel_classifiers", "Load pixel classifier", "createAnnotationsFromPixelClassifier",
                   "addPixelClassifierMeasurements", "--into-project"):  # fmt: skip
        assert needle in readme
    info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert (info["input_px"], info["padding_px"], info["tile_px"]) == (INPUT, PAD, TILE)
    assert info["check"]["onnxruntime_vs_pytorch_max_abs_diff"] < 1e-4


def test_into_project_places_files_and_refuses_to_overwrite(exported: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from qupath_camseg.qupath import create_project

    create_project(tmp_path / "proj").close()
    args = ["export-qupath", str(exported["root"] / "model"), "--out", str(tmp_path / "out"), "--padding", str(PAD),
            "--name", "camseg-test", "--into-project", str(tmp_path / "proj")]  # fmt: skip
    assert main(args) == 0
    dest = tmp_path / "proj" / "classifiers" / "pixel_classifiers"
    data = json.loads((dest / "camseg-test.json").read_text(encoding="utf-8"))
    validate_pixel_classifier(data, check_files=True)
    assert model_path_from_classifier(data) == (dest / "camseg-test.onnx").resolve()
    before = (dest / "camseg-test.json").read_bytes()
    capsys.readouterr()
    assert main(args) == 2  # same name again: refused, nothing touched
    assert "--overwrite" in capsys.readouterr().err
    assert (dest / "camseg-test.json").read_bytes() == before
    assert main([*args, "--overwrite", "--padding", str(PAD + 8)]) == 0
    assert json.loads((dest / "camseg-test.json").read_text())["metadata"]["inputPadding"] == PAD + 8
    backups = sorted(p.name for p in (tmp_path / "proj" / "camseg" / "backups").iterdir())
    assert any(b.startswith("camseg-test.json.") for b in backups) and any(b.startswith("camseg-test.onnx.") for b in backups)


def test_bad_sizes_and_missing_model_are_one_line_errors(exported: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["export-qupath", str(exported["root"] / "model"), "--out", str(tmp_path / "o"), "--padding", "3"]) == 2
    err = capsys.readouterr().err
    assert "not divisible by 8" in err and "--padding 4" in err
    assert main(["export-qupath", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ (b) QuPath's tiling emulated


def test_tiling_emulation_geometry_with_identity_network() -> None:
    """An identity 'network' must give the image back exactly: tiles, context and edges line up."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (150, 101, 3), dtype=np.uint8)  # not a multiple of the tile
    calls: list[tuple[int, ...]] = []

    def identity(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return batch

    out = qupath_tiled_predict(identity, image, input_px=48, padding_px=8)
    np.testing.assert_array_equal(out, image.transpose(2, 0, 1).astype(np.float32))
    assert set(calls) == {(1, 3, 48, 48)} and len(calls) == 5 * 4  # ceil(150/32) × ceil(101/32) tiles


def _train_tiny(image: np.ndarray, mask: np.ndarray, *, steps: int = 80) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": "unet", "width": 8, "depth": 2, "n_classes": 1})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    x_all = torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32))
    y_all = torch.from_numpy(mask.astype(np.int64))
    size = 32
    model.train()
    for _ in range(steps):
        ys = rng.integers(0, image.shape[0] - size, 8)
        xs = rng.integers(0, image.shape[1] - size, 8)
        x = torch.stack([x_all[:, y : y + size, x0 : x0 + size] for y, x0 in zip(ys, xs)])
        y = torch.stack([y_all[y : y + size, x0 : x0 + size] for y, x0 in zip(ys, xs)])
        loss = torch.nn.functional.cross_entropy(model(x), y, weight=torch.tensor([1.0, 4.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_qupath_tiling_of_exported_model_matches_qcamseg_predict(tmp_path: Path) -> None:
    """QuPath's tiling of model.onnx over a synthetic slide ≈ ``qcamseg predict``'s tumour mask."""
    import onnxruntime as ort
    import tifffile
    import tiffslide

    from qupath_camseg.annotations import rasterize
    from qupath_camseg.predict import PredictOptions, predict_slide
    from qupath_camseg.synthetic import write_synthetic_slide

    torch.set_num_threads(1)
    width, height = 340, 300
    truth = write_synthetic_slide(tmp_path / "slide.tif", width=width, height=height, seed=4, mpp=2.0)
    with tiffslide.TiffSlide(tmp_path / "slide.tif") as slide:  # the pixels QuPath would read
        image = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    mask = rasterize([(truth.tumor, 1)], (0, 0, width, height), (width, height)) > 0
    model = _train_tiny(image, mask)
    arch = {"name": "unet", "width": 8, "depth": 2, "n_classes": 1}
    save_bundle(tmp_path / "m", model, ModelConfig(arch=arch, mpp=2.0, tile_px=TILE, classes=CLASSES[:1]))
    assert main(["export-qupath", str(tmp_path / "m"), "--out", str(tmp_path / "q"), "--padding", str(PAD)]) == 0
    sess = ort.InferenceSession(str(tmp_path / "q" / "model.onnx"), providers=["CPUExecutionProvider"])
    tiled = qupath_tiled_predict(lambda b: sess.run(None, {"input": b})[0], image, input_px=INPUT, padding_px=PAD)
    tumour_qupath = tiled.argmax(0) == 1

    result = predict_slide(tmp_path / "slide.tif", tmp_path / "m", tmp_path / "pred",
                           options=PredictOptions(workers=1, batch_size=4, device="cpu"))  # fmt: skip
    heatmap = tifffile.imread(result.outputs["heatmap"])  # tumour probability at the model's mpp, 255 = 1
    assert heatmap.shape == (height, width)
    tumour_predict = heatmap >= 128

    # Also one forward pass over the whole region (no tiling at all): the emulation must not drift.
    with torch.no_grad():
        full = ProbabilityModel(model)(torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1)[None].copy()))
    tumour_full = full.numpy()[0].argmax(0) == 1

    assert tumour_qupath.mean() > 0.02 and _dice(tumour_qupath, mask) > 0.8  # a real tumour map, not noise
    assert _dice(tumour_qupath, tumour_predict) > 0.98
    assert _dice(tumour_qupath, tumour_full) > 0.98
