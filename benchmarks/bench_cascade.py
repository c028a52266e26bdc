"""Cascade vs single pass on a tumour slide and a tumour-free one (issue 18), in one sitting.

    python benchmarks/bench_cascade.py                          # CPU: train (cached), slides (cached), runs
    python benchmarks/bench_cascade.py --device cuda --camelyon --train-tile 512 --train-batch 8 \
        --train-steps 400                                       # GPU: Camelyon-size slides

1. **Model** (cached in ``--workdir``): the default U-Net (width 32, depth 4, 0.5 µm/px) trained by
   ``qcamseg train`` on a synthetic project (4 slides of 6144² at 0.25 µm/px + 1 tumour-free,
   seed 0), ``--train-steps`` steps of ``--train-batch`` tiles of ``--train-tile`` px (on 2 CPU
   cores the default 512² batch of 8 is out of reach: 80 steps of 8 × 128², an early model), with
   its screen (4 µm/px, the default size, ``--screen-steps`` steps) chosen on the held-out slide
   ``tumor_003.tif``.
2. **Slides** (cached): a QuPath project of two held-out synthetic slides at 0.5 µm/px, sized so
   the tissue covers about ``--tissue-mm2`` mm²: ``tumor_001.tif`` whose metastases are scaled to
   ``--tumour-fraction`` of the tissue (default 2 %: most Camelyon16 tumour slides hold well under
   10 %, many only micro-metastases) and the tumour-free ``normal_002.tif``. A Camelyon-size slide
   (~300 mm² of tissue) would take hours in a single pass on 2 cores, so the CPU default is a
   smaller slide (4 mm²: a few minutes single pass on a quiet machine); ``--tissue-mm2`` sets it. ``--camelyon``
   (for a GPU machine) writes Camelyon-size slides instead (23.8 × 53.7 mm at 0.5 µm/px, 25 %
   tissue, ``bench_camelyon.py``'s writer: exact coarse levels, level 0 from rendered tile
   variants chosen by the truth; metastases scaled to ``--tumour-fraction`` as above).
3. **Runs**, each a fresh ``qcamseg predict`` process, per slide cascade then single pass
   (``--rounds`` times); outputs are kept per mode and evaluated with ``qcamseg evaluate``
   (held-out Dice, Camelyon16 FROC over both slides).

Prints one table (wall seconds, share of tissue examined, speed-up, Dice, FROC) and writes
``--json``. Acceptance (2-core CPU): cascade ≥ 5× faster on the tumour slide, ≥ 10× on the
tumour-free one; Dice within 0.01 and FROC within 0.02 of the single pass. The machine may be
shared: the ratios come from runs next to each other; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SLIDES = ("tumor_001.tif", "normal_002.tif")


def _qcamseg(*args: str, env: dict[str, str] | None = None, quiet: bool = True) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qupath_camseg", *args], check=True, env=env or _env(),
                   stdout=subprocess.DEVNULL if quiet else None)
    return time.perf_counter() - t0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def train_model(work: Path, args: argparse.Namespace) -> Path:
    """The default U-Net and its screen, trained once (cached)."""
    project, model = work / "train-project", work / "model"
    if not (project / "project.qpproj").is_file():
        _qcamseg("synth", str(project), "--slides", "5", "--negatives", "1", "--width", "6144", "--height", "6144",
                 "--seed", "0", "--overwrite", "--door", "files")
    if not (model / "model.json").is_file() or "screen" not in json.loads((model / "model.json").read_text()):
        shutil.rmtree(model, ignore_errors=True)
        t = _qcamseg("train", str(project), "--out", str(model), "--tile", str(args.train_tile), "--batch-size",
                     str(args.train_batch), "--steps", str(args.train_steps), "--tiles-per-epoch",
                     str(args.train_batch * max(1, args.train_steps // 4)), "--val-images", "tumor_003.tif",
                     "--device", args.device, "--seed", "0", "-q", "--screen-steps", str(args.screen_steps), quiet=False)
        print(f"trained the model and its screen in {t:.0f} s", flush=True)
    return model


def _scaled_truth(fraction: float):  # type: ignore[no-untyped-def]
    """``make_truth`` with the metastases scaled about their centres to ``fraction`` of the tissue."""
    from qupath_camseg.synthetic import truth as truth_mod

    original = truth_mod.make_truth

    def make(width: int, height: int, *, seed: int, mpp: float = 0.25, tumor: bool = True):  # type: ignore[no-untyped-def]
        t = original(width, height, seed=seed, mpp=mpp, tumor=tumor)
        if not tumor or t.tumor.is_empty:
            return t
        s = (fraction * t.tissue.area / t.tumor.area) ** 0.5
        return truth_mod.SyntheticTruth(_shrink(t, s), t.tissue, t.width, t.height, t.mpp, t.seed)

    return make


def make_slides(work: Path, args: argparse.Namespace) -> Path:
    """The two held-out slides in a project of their own (cached per size and fraction)."""
    from qupath_camseg.synthetic import project as project_mod
    from qupath_camseg.synthetic import slides as slides_mod

    tag = f"{args.tissue_mm2:g}mm2-{args.tumour_fraction:g}"
    project = work / f"slides-{tag}"
    if (project / "project.qpproj").is_file():
        return project
    side = round((args.tissue_mm2 / 0.45) ** 0.5 * 1000 / 0.5)  # tissue ≈ 45 % of a synthetic slide
    slides_mod.make_truth = _scaled_truth(args.tumour_fraction)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    project_mod.write_synthetic_project(project, slides=2, negatives=1, width=side, height=side, seed=1812,
                                        mpp=0.5, overwrite=True, door="files")
    print(f"wrote two {side}² slides at 0.5 µm/px in {time.perf_counter() - t0:.0f} s", flush=True)
    return project


def make_camelyon_slides(work: Path, args: argparse.Namespace) -> Path:
    """Two Camelyon-size slides (tumour, tumour-free) in a project with their truth (cached)."""
    from bench_camelyon import CAMELYON_MM, camelyon_truth, write_camelyon_slide
    from shapely.geometry import MultiPolygon

    from qupath_camseg.annotations import QPObject
    from qupath_camseg.qupath import ImageInfo, create_project
    from qupath_camseg.synthetic import pyramid_dimensions

    project = work / f"camelyon-{args.tumour_fraction:g}"
    if (project / "project.qpproj").is_file():
        return project
    w, h = (round(mm * 1000 / 0.5) for mm in CAMELYON_MM)
    tmp = work / f".camelyon-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    with create_project(tmp, final_folder=project) as proj:
        for name, seed in zip(SLIDES, (0, 1)):
            t = camelyon_truth(w, h, mpp=0.5, seed=seed, tissue=0.25)
            if name.startswith("tumor"):
                s = (args.tumour_fraction * t.tissue.area / max(t.tumor.area, 1e-9)) ** 0.5
                t = type(t)(_shrink(t, s), t.tissue, t.width, t.height, t.mpp, t.seed)
            else:
                t = type(t)(MultiPolygon(), t.tissue, t.width, t.height, t.mpp, t.seed)
            info = write_camelyon_slide(tmp / "images" / name, t)
            print(f"wrote {name} ({w}×{h} px) in {info['seconds']:.0f} s", flush=True)
            entry = proj.add_image(tmp / "images" / name, name=name, final_path=project / "images" / name,
                                   info=ImageInfo(w, h, tuple(pyramid_dimensions(w, h, 512)), 0.5, 512), metadata={})
            objs = [QPObject(geometry=p, classification="Tumor", name=f"Tumor {k + 1}")
                    for k, p in enumerate([] if t.tumor.is_empty else list(t.tumor.geoms))]
            proj.add_annotations(entry, objs)
    os.replace(tmp, project)
    return project


def _shrink(t: Any, s: float) -> Any:
    """``t``'s metastases scaled by ``s`` about their centres, inside the tissue (a MultiPolygon)."""
    import shapely
    import shapely.affinity
    from shapely.geometry import MultiPolygon

    tumour = shapely.union_all([shapely.affinity.scale(p, s, s, origin="centroid") for p in t.tumor.geoms])
    tumour = tumour.intersection(t.tissue)
    return MultiPolygon([g for g in getattr(tumour, "geoms", [tumour]) if g.geom_type == "Polygon" and not g.is_empty])


def run(work: Path, model: Path, project: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Predict each slide with the cascade and in a single pass (fresh processes, next to each
    other), keep each mode's outputs, evaluate them; return the measurements."""
    times: dict[str, dict[str, list[float]]] = {s: {"cascade": [], "single": []} for s in SLIDES}
    reports: dict[str, dict[str, Any]] = {}
    for r in range(args.rounds):
        for slide in SLIDES:
            for mode, flag in (("cascade", "auto"), ("single", "off")):
                wall = _qcamseg("predict", str(project), "--model", str(model), "--images", slide, "--cascade", flag,
                                "--overwrite", "--no-project-write", "--progress", "none", "--device", args.device)
                times[slide][mode].append(wall)
                _keep(project, work / f"out-{mode}", slide)
                rep = _report(project, slide)
                reports[f"{slide}/{mode}"] = rep
                print(f"round {r + 1} {slide:<16} {mode:<8} {wall:7.1f} s (in predict {rep['timings_s']['total']:.1f} s,"
                      f" load {os.getloadavg()[0]:.1f})", flush=True)
    scores = {mode: _evaluate(project, work / f"out-{mode}", work / f"eval-{mode}.json") for mode in ("cascade", "single")}
    return {"times_s": times, "reports": {k: _brief(v) for k, v in reports.items()}, "scores": scores}


def _entry_id(project: Path, slide: str) -> str:
    from qupath_camseg.qupath import open_project

    with open_project(project, "r", door="files") as p:
        return p.entry(slide).entry_id


def _report(project: Path, slide: str) -> dict[str, Any]:
    return json.loads((project / "camseg" / "reports" / f"{_entry_id(project, slide)}.json").read_text())


def _keep(project: Path, dest: Path, slide: str) -> None:
    """Copy one slide's GeoJSON, heatmap and report out of the project (the next run replaces them)."""
    eid = _entry_id(project, slide)
    for sub, ext in (("predictions", "geojson"), ("heatmaps", "tif"), ("reports", "json")):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / "camseg" / sub / f"{eid}.{ext}", dest / sub / f"{eid}.{ext}")


def _evaluate(project: Path, out: Path, json_path: Path) -> dict[str, Any]:
    _qcamseg("evaluate", str(project), "--predictions", str(out / "predictions"), "--heatmaps", str(out / "heatmaps"),
             "--images", SLIDES[0], "--images", SLIDES[1], "--json", str(json_path),
             "--all-slides")  # new slides; their names repeat the training project's, so roles would say "train"
    ev = json.loads(json_path.read_text())
    per = {s["image"]: s for s in ev.get("slides", [])}
    overall = ev.get("overall", ev)
    return {"dice_tumour_slide": per.get(SLIDES[0], {}).get("dice"), "froc_score": overall.get("froc_score"),
            "pooled_dice": overall.get("pooled_dice")}


def _brief(rep: dict[str, Any]) -> dict[str, Any]:
    return {"total_s": rep["timings_s"]["total"], "cascade": rep.get("cascade"), "tiles_active": rep["tiles"]["active"],
            "tissue_mm2": rep["tissue_area_mm2"], "tumor_mm2": rep["tumor_area_mm2"], "device": rep["device"]}


def table(res: dict[str, Any]) -> str:
    lines = [f"{'slide':<16} {'mode':<8} {'wall s':>8} {'in predict s':>12} {'examined':>9} {'speed-up':>9}"]
    for slide in SLIDES:
        t = {m: statistics.median(v) for m, v in res["times_s"][slide].items()}
        for mode in ("cascade", "single"):
            rep = res["reports"][f"{slide}/{mode}"]
            ex = (rep["cascade"] or {}).get("tissue_examined_fraction", 1.0) if mode == "cascade" else 1.0
            up = f"{t['single'] / t['cascade']:9.1f}×" if mode == "cascade" else f"{'':>10}"
            lines.append(f"{slide:<16} {mode:<8} {t[mode]:8.1f} {rep['total_s']:12.1f} {ex:9.1%} {up}")
    sc = res["scores"]
    lines.append("")
    lines.append(f"{'mode':<8} {'Dice (tumour slide)':>20} {'FROC':>8}")
    for mode in ("cascade", "single"):
        d, f = sc[mode]["dice_tumour_slide"], sc[mode]["froc_score"]
        lines.append(f"{mode:<8} {d if d is None else round(d, 4)!s:>20} {f if f is None else round(f, 4)!s:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "qcamseg-bench-cascade")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tissue-mm2", type=float, default=4.0)
    ap.add_argument("--tumour-fraction", type=float, default=0.02)
    ap.add_argument("--train-steps", type=int, default=80)
    ap.add_argument("--train-tile", type=int, default=128)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--screen-steps", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--camelyon", action="store_true", help="Camelyon-size slides (a GPU machine)")
    ap.add_argument("--json", type=Path, default=Path("bench_cascade.json"))
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    model = train_model(args.workdir, args)
    sys.path.insert(0, str(HERE))
    project = make_camelyon_slides(args.workdir, args) if args.camelyon else make_slides(args.workdir, args)
    res = run(args.workdir, model, project, args)
    text = table(res)
    print("\n" + text)
    screen = json.loads((model / "model.json").read_text())["screen"]
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "load_avg_1min": [load0, os.getloadavg()[0]], "command": "python benchmarks/bench_cascade.py "
           + " ".join(argv or sys.argv[1:]), "args": {k: str(v) for k, v in vars(args).items()},
           "screen": {k: screen.get(k) for k in ("mpp", "threshold", "recall", "kept_tissue_fraction", "calibrated_on")},
           **res, "table": text}
    args.json.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
