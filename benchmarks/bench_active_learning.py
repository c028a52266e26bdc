"""Benchmark: the correction loop, measured (issue 17) - and what the review suggestions cost.

A simulated pathologist works on a generated project: ``--pool`` slides to annotate, one fully
annotated validation slide (model selection; the same for every arm, not counted below) and
``--heldout`` slides that nobody annotates (held-out Dice, pooled over their tumour, from the
``predictions/*.geojson`` tumour outlines against the generator's exact truth).

* **round 0**, shared by the arms: the largest tumour outline and one ``Normal`` box on each of the
  first two pool slides; a model trained from scratch (``--steps0`` steps, ``--unannotated ignore``:
  partial annotations).
* **suggest**: each round ``predict`` the pool; take the top ``--k`` ``camseg Review`` boxes over
  all pool slides (by uncertainty × area; boxes overlapping what is already annotated are skipped,
  as a pathologist would); "annotate" each from the truth: the tumour clipped to the box as
  ``Tumor``, the rest of the box's tissue as ``Normal``; fine-tune with ``--init`` (the default
  short schedule: 3 epochs of ``--tiles-per-epoch``).
* **random**: the same, with ``--k`` boxes of the same size centred at random on pool tissue.
* **retrained**: after its last round, each arm's annotations train one model from scratch with the
  full arm's recipe and steps - the rounds fine-tune (``--init``) for quick feedback, and the final
  model is retrained on everything gathered (README, "Correct and retrain").
* **full**: every pool slide annotated completely (tumour + the rest of the tissue as Normal),
  trained from scratch for as many steps as the whole suggest chain.

*Annotated area* = the tissue area a pathologist had to label (box ∩ tissue; the outlines of
round 0; for **full** the pool's whole tissue). Acceptance (issue 17): the suggest arm reaches the
full arm's Dice with at most a third of its annotated area, and beats random at equal area.

Cost of the suggestions: ``predict_slide`` with ``suggest=0`` and ``suggest=20`` alternately on
the same slides (``overwrite``: full inference each time), best of ``--cost-repeats``, with the
loop's U-Net and with a 1×1-convolution stand-in (the pipeline alone, as on a fast GPU, where the
per-chunk uncertainty is a larger share). Target: ≤ 1.10.

    python benchmarks/bench_active_learning.py                  # ≈ 30-40 min on 2 busy cores
    python benchmarks/bench_active_learning.py --smoke --out /tmp/al   # about a minute; numbers mean nothing

Torch runs one thread (``--threads``): on a shared 2-core machine two threads contend and run a
training step 4x slower. Writes ``<out>/<date>-active-learning[-smoke].json`` and a figure (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODEL_MPP, TILE_PX, ARCH = 2.0, 128, {"name": "unet", "width": 8, "depth": 3}
BATCH = 8  # tiles per step, every arm


# ------------------------------------------------------------------------------ the project
@dataclass
class Slide:
    """A generated slide: project entry, name, truth tumour and tissue (level-0 px), µm/px."""

    entry: str
    name: str
    tumour: BaseGeometry
    tissue: BaseGeometry
    mpp: float


@dataclass
class Arm:
    """One strategy's project copy, model, annotated boxes per entry and history."""

    name: str
    project: Path
    model: Path
    boxes: dict[str, list[BaseGeometry]] = field(default_factory=dict)
    area_mm2: float = 0.0
    rounds: list[dict[str, Any]] = field(default_factory=list)


def _make_project(work: Path, args: argparse.Namespace) -> tuple[Path, list[Slide]]:
    """The generated project and its slides (truth from the generator, by the entries' seeds)."""
    from qupath_camseg.qupath import open_project
    from qupath_camseg.synthetic import write_synthetic_project
    from qupath_camseg.synthetic.truth import make_truth

    n = args.pool + 1 + args.heldout
    project = work / "base"
    if not (project / "project.qpproj").is_file():
        write_synthetic_project(project, slides=n, width=args.size, height=args.size, seed=args.seed, door="files")
    slides = []
    with open_project(project, "r", door="files") as p:
        for e in p.entries:
            t = make_truth(args.size, args.size, seed=int(e.metadata["seed"]), mpp=float(e.metadata["mpp"]))
            slides.append(Slide(e.entry_id, e.image_name, t.tumor, t.tissue, float(e.metadata["mpp"])))
    return project, slides


def _write(project: Path, slide: Slide, objs: list[Any], *, replace: bool = False) -> None:
    from qupath_camseg.qupath import open_project

    with open_project(project, "r+", door="files") as p:
        if replace:
            p.write_annotations(slide.entry, objs, keep_user=False)
        else:
            p.add_annotations(slide.entry, objs)


def _labels(slide: Slide, region: BaseGeometry) -> list[Any]:
    """What the pathologist draws for ``region``: its tumour as Tumor, its other tissue as Normal."""
    from qupath_camseg.annotations import QPObject, polygonal_part

    out = []
    for cls, geom in (("Tumor", slide.tumour.intersection(region)),
                      ("Normal", slide.tissue.intersection(region).difference(slide.tumour))):
        poly = polygonal_part(geom)
        if poly is not None and poly.area > 1.0:
            out.append(QPObject(poly, classification=cls))
    return out


def _area_mm2(geom: BaseGeometry, mpp: float) -> float:
    return float(geom.area) * mpp * mpp / 1e6


def _normal_box(slide: Slide, side: float, rng: np.random.Generator) -> Polygon:
    """A box of ``side`` px on tissue, clear of tumour (for the round-0 negatives)."""
    for _ in range(2000):
        x, y = rng.uniform(*slide.tissue.bounds[0::2]), rng.uniform(*slide.tissue.bounds[1::2])
        box = shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
        if slide.tissue.contains(box) and not box.intersects(slide.tumour.buffer(side / 4)):
            return box
    raise RuntimeError(f"no tumour-free tissue box on {slide.name}")


def _round0(project: Path, slides: list[Slide], args: argparse.Namespace, side: float) -> float:
    """Annotate round 0 (largest outline + a Normal box on two pool slides, the validation slide in
    full; the synthetic truth files are cleared); returns the annotated area in mm²."""
    rng = np.random.default_rng([args.seed, 17])
    pool, val, held = _split(slides, args)
    area = 0.0
    for s in slides:
        _write(project, s, [], replace=True)
    for s in pool[:2]:
        largest = max(getattr(s.tumour, "geoms", [s.tumour]), key=lambda g: g.area)
        box = _normal_box(s, side, rng)
        from qupath_camseg.annotations import QPObject

        _write(project, s, [QPObject(largest, classification="Tumor"), QPObject(box, classification="Normal")])
        area += _area_mm2(largest, s.mpp) + _area_mm2(box.intersection(s.tissue), s.mpp)
    _write(project, val, _labels(val, val.tissue))
    return area


def _split(slides: list[Slide], args: argparse.Namespace) -> tuple[list[Slide], Slide, list[Slide]]:
    return slides[:args.pool], slides[args.pool], slides[args.pool + 1:]


def _copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("models", "probability", "predictions", "heatmaps",
                                                            "reports", "backups", "*.lock"))
    qpproj = dst / "project.qpproj"
    text = qpproj.read_text(encoding="utf-8")
    for old, new in ((src.as_uri(), dst.as_uri()), (f"file:{src.as_posix()}/", f"file:{dst.as_posix()}/")):
        text = text.replace(old, new)
    qpproj.write_text(text, encoding="utf-8")
    return dst


# ------------------------------------------------------------------------------ train and predict
def _train(project: Path, out: Path, args: argparse.Namespace, val: Slide, *, init: Path | None,
           steps: int | None, seed: int) -> Path:
    from qupath_camseg.train import TrainConfig, train

    if (out / "model.json").is_file():
        return out  # a rerun of the benchmark with --workdir: reuse
    common = {"unannotated": "ignore", "val_images": (val.name,), "tiles_per_epoch": args.tiles_per_epoch,
              "batch_size": BATCH, "workers": 0, "device": "cpu", "seed": seed}
    if init is None:
        cfg = TrainConfig(mpp=MODEL_MPP, tile_px=TILE_PX, arch=dict(ARCH), steps=steps, **common)
    else:
        cfg = TrainConfig(init=str(init), **common)  # the default fine-tuning schedule
    train(project, out, cfg)
    return out


def _predict(project: Path, model: Path, slides: list[Slide], args: argparse.Namespace, *, suggest: int) -> None:
    from qupath_camseg.model import load_model
    from qupath_camseg.predict import PredictOptions, predict_project

    opts = PredictOptions(workers=2, suggest=suggest, suggest_um=args.box_um, overwrite=True)
    predict_project(project, load_model(model, device="cpu"), images=[s.name for s in slides], options=opts,
                    project_write=False)


def _predicted(project: Path, slide: Slide, cls: str) -> list[Any]:
    from qupath_camseg.annotations import read_geojson

    f = project / "camseg" / "predictions" / f"{slide.entry}.geojson"
    return [o for o in read_geojson(f) if o.object_type == "annotation" and o.classification == cls]


def _dice(project: Path, held: list[Slide]) -> float:
    """Pooled Dice of the tumour outlines predicted on the held-out slides."""
    inter = total = 0.0
    for s in held:
        pred = shapely.union_all([o.geometry for o in _predicted(project, s, "Tumor")])
        inter += pred.intersection(s.tumour).area
        total += pred.area + s.tumour.area
    return 2 * inter / total if total else 1.0


# ------------------------------------------------------------------------------ the arms
def _overlaps(box: BaseGeometry, taken: list[BaseGeometry]) -> bool:
    return any(box.intersection(t).area > 0.1 * box.area for t in taken)


def _suggested(arm: Arm, pool: list[Slide], k: int) -> list[tuple[Slide, BaseGeometry]]:
    """The top ``k`` review boxes over the pool, skipping those on annotated ground."""
    from qupath_camseg.predict import UNCERTAINTY_KEY

    ranked = sorted(((o.measurements[UNCERTAINTY_KEY] * o.geometry.area, s, o.geometry) for s in pool
                     for o in _predicted(arm.project, s, "Review")), key=lambda t: -t[0])
    out: list[tuple[Slide, BaseGeometry]] = []
    for _, s, box in ranked:
        if len(out) < k and not _overlaps(box, arm.boxes.get(s.entry, []) + [b for t, b in out if t is s]):
            out.append((s, box))
    return out


def _random_boxes(arm: Arm, pool: list[Slide], k: int, side: float, rng: np.random.Generator) -> list[tuple[Slide, BaseGeometry]]:
    """``k`` boxes of ``side`` px centred at random on pool tissue (slides by tissue area)."""
    weights = np.array([s.tissue.area for s in pool]) / sum(s.tissue.area for s in pool)
    out: list[tuple[Slide, BaseGeometry]] = []
    while len(out) < k:
        s = pool[int(rng.choice(len(pool), p=weights))]
        x, y = rng.uniform(*s.tissue.bounds[0::2]), rng.uniform(*s.tissue.bounds[1::2])
        box = shapely.box(x - side / 2, y - side / 2, x + side / 2, y + side / 2)
        if s.tissue.contains(shapely.Point(x, y)) and not _overlaps(box, arm.boxes.get(s.entry, [])
                                                                     + [b for t, b in out if t is s]):
            out.append((s, box))
    return out


def _annotate(arm: Arm, chosen: list[tuple[Slide, BaseGeometry]]) -> dict[str, Any]:
    """Label the chosen boxes from the truth; returns how many held tumour and their area."""
    with_tumour = 0
    for s, box in chosen:
        objs = _labels(s, box)
        with_tumour += any(o.classification == "Tumor" for o in objs)
        _write(arm.project, s, objs)
        arm.boxes.setdefault(s.entry, []).append(box)
        arm.area_mm2 += _area_mm2(box.intersection(s.tissue), s.mpp)
    return {"boxes": len(chosen), "boxes_with_tumour": with_tumour}


def _run_arm(arm: Arm, slides: list[Slide], args: argparse.Namespace, side: float, work: Path) -> None:
    pool, val, held = _split(slides, args)
    rng = np.random.default_rng([args.seed, 99])
    for r in range(1, args.rounds + 1):
        t0 = time.perf_counter()
        if arm.name == "suggest":
            _predict(arm.project, arm.model, pool, args, suggest=20)
            chosen = _suggested(arm, pool, args.k)
        else:
            chosen = _random_boxes(arm, pool, args.k, side, rng)
        info = _annotate(arm, chosen)
        if chosen:  # nothing new to teach (no box to review): the pathologist keeps the model
            arm.model = _train(arm.project, work / "models" / f"{arm.name}-{r}", args, val, init=arm.model,
                               steps=None, seed=args.seed + r)
        _predict(arm.project, arm.model, held, args, suggest=0)
        arm.rounds.append({"round": r, "annotated_mm2": round(arm.area_mm2, 4), "heldout_dice": round(_dice(arm.project, held), 4),
                           **info, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{arm.name:8} round {r}: {arm.rounds[-1]}", flush=True)


def _retrain(arm: Arm, slides: list[Slide], args: argparse.Namespace, work: Path, steps: int) -> dict[str, Any]:
    """After the last round: one model trained from scratch on everything the arm annotated, with
    the full arm's recipe and steps (what README's "Correct and retrain" recommends at the end)."""
    _, dice = _from_scratch(arm.project, work / "models" / f"{arm.name}-retrained", slides, args, steps)
    return {"annotated_mm2": round(arm.area_mm2, 4), "heldout_dice": dice, "steps": steps}


def _full(base: Path, slides: list[Slide], args: argparse.Namespace, work: Path, steps: int) -> dict[str, Any]:
    pool, _, _ = _split(slides, args)
    project = _copy(base, work / "full")
    area = 0.0
    for s in pool:
        _write(project, s, _labels(s, s.tissue))
        area += _area_mm2(s.tissue, s.mpp)
    model, dice = _from_scratch(project, work / "models" / "full", slides, args, steps)
    return {"annotated_mm2": round(area, 4), "heldout_dice": dice, "steps": steps, "model": str(model)}


def _from_scratch(project: Path, out: Path, slides: list[Slide], args: argparse.Namespace,
                  steps: int) -> tuple[Path, float]:
    """A model trained from scratch on ``project``'s annotations for ``steps`` steps (seed
    ``--seed``), and its held-out Dice."""
    _, val, held = _split(slides, args)
    model = _train(project, out, args, val, init=None, steps=steps, seed=args.seed)
    _predict(project, model, held, args, suggest=0)
    return model, round(_dice(project, held), 4)


# ------------------------------------------------------------------------------ cost of suggestions
def _cost(model: Path, slides: list[Slide], project: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """predict_slide seconds with suggest=0 vs 20 (alternating, best of ``--cost-repeats``): the
    loop's U-Net (2 µm/px) and a 1×1-convolution stand-in at 0.5 µm/px with 512 px tiles (the
    default model's map, at no model cost: the worst case for the suggestions' share)."""
    from bench_pipeline import _loaded_model

    from qupath_camseg.model import load_model
    from qupath_camseg.predict import PredictOptions, predict_slide

    lm = load_model(model, device="cpu")
    stand_in = _loaded_model(work, mpp=0.5, tile_px=512, device="cpu")
    out: dict[str, Any] = {}
    for label, m in (("loop U-Net, 2 µm/px", lm), ("1x1-conv stand-in, 0.5 µm/px", stand_in)):
        best = {0: float("inf"), 20: float("inf")}
        added = 0.0
        for _ in range(args.cost_repeats):
            for n in (0, 20):
                t0, extra = time.perf_counter(), 0.0
                for s in slides:
                    res = predict_slide(project / "images" / s.name, m, work / "cost", entry_id=s.entry,
                                        options=PredictOptions(workers=2, suggest=n, suggest_um=args.box_um,
                                                               overwrite=True))
                    extra += _suggestion_work(work / "cost" / "probability" / s.entry, res, args) if n else 0.0
                best[n] = min(best[n], time.perf_counter() - t0)
                added = extra or added
        out[label] = {"seconds_suggest_0": round(best[0], 3), "seconds_suggest_20": round(best[20], 3),
                      "ratio": round(best[20] / best[0], 4), "suggestion_work_s": round(added, 4),
                      "suggestion_work_fraction": round(added / best[0], 4)}
        print(f"cost {label}: {out[label]}", flush=True)
    return out


def _suggestion_work(store_dir: Path, res: Any, args: argparse.Namespace) -> float:
    """Seconds of the work the suggestions add, timed directly: the per-chunk uncertainty grids of
    the slide's stored chunks (re-read here, not timed) plus the box selection (from the report)."""
    import math
    import zlib

    from qupath_camseg.predict import TilePlan, chunk_uncertainty, suggestion_sizes

    meta = json.loads((store_dir / "meta.json").read_text(encoding="utf-8"))
    plan = TilePlan(**{**meta["plan"], "map_size": tuple(meta["plan"]["map_size"])})
    _, cell = suggestion_sizes(plan, res.report["map_mpp"], args.box_um)
    q = math.ceil(res.report["settings"]["threshold"] * 255 - 1e-9)
    seconds = float(res.report["timings_s"].get("outputs_suggestions", 0.0))
    for f in sorted(store_dir.glob("r*_c*.zlib")):
        r, c = int(f.name[1:6]), int(f.name[8:13])
        _, _, w, h = plan.chunk_box(r, c)
        data = np.frombuffer(zlib.decompress(f.read_bytes()), np.uint8).reshape(meta["n_channels"], h, w)
        t0 = time.perf_counter()
        chunk_uncertainty(data, cell, q)
        seconds += time.perf_counter() - t0
    return seconds


# ------------------------------------------------------------------------------ report
def _figure(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    full = result["full"]
    for name, colour in (("suggest", "tab:orange"), ("random", "tab:blue")):
        rows = [result["round0"]] + result["arms"][name]
        ax1.plot([r["round"] for r in rows], [r["heldout_dice"] for r in rows], "o-", color=colour, label=name)
        ax2.plot([r["annotated_mm2"] for r in rows], [r["heldout_dice"] for r in rows], "o-", color=colour, label=name)
        again = (result.get("retrained") or {}).get(name)
        if again:
            ax2.plot([again["annotated_mm2"]], [again["heldout_dice"]], "*", ms=13, color=colour,
                     label=f"{name}: retrained from scratch")
    for ax in (ax1, ax2):
        ax.axhline(full["heldout_dice"], color="k", ls="--", label=f"full annotation ({full['annotated_mm2']:.1f} mm²)")
        ax.set_ylabel("held-out Dice")
        ax.grid(alpha=0.3)
    ax2.axvline(full["annotated_mm2"] / 3, color="grey", ls=":", label="a third of full's area")
    ax1.set_xlabel("round")
    ax2.set_xlabel("annotated tissue (mm²)")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle("Corrections that teach: review suggestions vs random boxes vs full annotation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _acceptance(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's two acceptance points, from the measured rounds."""
    full = result["full"]
    sug, rnd = result["arms"]["suggest"], result["arms"]["random"]
    reached = next((r for r in sug if r["heldout_dice"] >= full["heldout_dice"]), None)
    return {
        "suggest_reaches_full_dice_at_round": reached["round"] if reached else None,
        "area_fraction_of_full_then": round(reached["annotated_mm2"] / full["annotated_mm2"], 4) if reached else None,
        "reaches_full_with_at_most_a_third": bool(reached and reached["annotated_mm2"] <= full["annotated_mm2"] / 3),
        "suggest_minus_random_dice_per_round": [round(a["heldout_dice"] - b["heldout_dice"], 4) for a, b in zip(sug, rnd)],
        "suggest_beats_random_every_round": all(a["heldout_dice"] > b["heldout_dice"] for a, b in zip(sug, rnd)),
        "area_suggest_over_random_per_round": [round(a["annotated_mm2"] / b["annotated_mm2"], 3) for a, b in zip(sug, rnd)],
        **_equal_area(result),
        **_retrained_acceptance(result),
    }


def _equal_area(result: dict[str, Any]) -> dict[str, Any]:
    """Suggest minus random at equal annotated area: each suggest round against the random arm's
    Dice interpolated at that area along its rounds (round 0 included); ``None`` outside them."""
    rnd = [result["round0"]] + result["arms"]["random"]
    areas, dice = [r["annotated_mm2"] for r in rnd], [r["heldout_dice"] for r in rnd]
    diffs = [round(r["heldout_dice"] - float(np.interp(r["annotated_mm2"], areas, dice)), 4)
             if areas[0] <= r["annotated_mm2"] <= areas[-1] else None for r in result["arms"]["suggest"]]
    return {"suggest_minus_random_at_equal_area_per_round": diffs,
            "suggest_beats_random_at_equal_area_every_round": all(d is not None and d > 0 for d in diffs)}


def _retrained_acceptance(result: dict[str, Any]) -> dict[str, Any]:
    """The same two points for the models retrained from scratch on each arm's final annotations."""
    full, again = result["full"], result.get("retrained") or {}
    if not {"suggest", "random"} <= set(again):
        return {}
    sug, rnd = again["suggest"], again["random"]
    return {
        "retrained_suggest_minus_full_dice": round(sug["heldout_dice"] - full["heldout_dice"], 4),
        "retrained_suggest_area_fraction_of_full": round(sug["annotated_mm2"] / full["annotated_mm2"], 4),
        "retrained_suggest_reaches_full_with_at_most_a_third": bool(
            sug["heldout_dice"] >= full["heldout_dice"] and sug["annotated_mm2"] <= full["annotated_mm2"] / 3),
        "retrained_suggest_minus_random_dice": round(sug["heldout_dice"] - rnd["heldout_dice"], 4),
        "retrained_suggest_area_over_random": round(sug["annotated_mm2"] / rnd["annotated_mm2"], 3),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="generated project and models (kept; reused)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--pool", type=int, default=6)
    ap.add_argument("--heldout", type=int, default=3)
    ap.add_argument("--size", type=int, default=4096, help="slide side, level-0 px at 0.25 µm/px")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--k", type=int, default=8, help="boxes annotated per round")
    ap.add_argument("--box-um", type=float, default=128.0, help="side of a review box (µm)")
    ap.add_argument("--steps0", type=int, default=240, help="training steps of round 0")
    ap.add_argument("--tiles-per-epoch", type=int, default=320)
    ap.add_argument("--cost-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny and quick: checks the mechanics only (round 0 "
                    "trains 40 steps: fewer leave a model whose calibration calls everything background, so no "
                    "box is suggested)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.pool, args.heldout, args.size, args.rounds, args.k = 2, 1, 1024, 1, 2
        args.steps0, args.tiles_per_epoch, args.cost_repeats, args.box_um = 40, 16, 1, 48.0
    return args


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import torch

    args = _parse(argv)
    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qcamseg-al-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    base, slides = _make_project(work, args)
    pool, val, held = _split(slides, args)
    side = args.box_um / slides[0].mpp  # level-0 px
    area0 = _round0(base, slides, args, side)
    model0 = _train(base, work / "models" / "round0", args, val, init=None, steps=args.steps0, seed=args.seed)
    _predict(base, model0, held, args, suggest=0)
    result: dict[str, Any] = {"round0": {"round": 0, "annotated_mm2": round(area0, 4), "heldout_dice": round(_dice(base, held), 4)},
                              "arms": {}}
    print(f"round 0: {result['round0']}", flush=True)
    from qupath_camseg.train import INIT_EPOCHS  # each round's fine-tune: the default --init schedule

    steps_chain = args.steps0 + args.rounds * INIT_EPOCHS * -(-args.tiles_per_epoch // BATCH)
    result["retrained"] = {}
    for name in ("suggest", "random"):
        arm = Arm(name, _copy(base, work / name), model0, area_mm2=area0)
        _run_arm(arm, slides, args, side, work)
        result["arms"][name] = arm.rounds
        result["retrained"][name] = _retrain(arm, slides, args, work, steps_chain)
        print(f"{name:8} retrained: {result['retrained'][name]}", flush=True)
    result["full"] = _full(base, slides, args, work, steps_chain)
    print(f"full: {result['full']}", flush=True)
    result["acceptance"] = _acceptance(result)
    result["suggestion_cost"] = _cost(Path(result["full"]["model"]), pool[:2], base, args, work)
    _finish(result, args, work, t_start, load0)
    return 0


def _finish(result: dict[str, Any], args: argparse.Namespace, work: Path, t_start: float, load0: float) -> None:
    stamp = datetime.now(timezone.utc)
    suffix = "-smoke" if args.smoke else ""
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{stamp:%Y-%m-%d}-active-learning{suffix}"
    result.update(
        schema="qupath-camseg active learning v1", date=stamp.isoformat(timespec="seconds"),
        command="python benchmarks/bench_active_learning.py " + " ".join(sys.argv[1:]),
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        load_avg_1min=[round(load0, 2), round(os.getloadavg()[0], 2)], wall_s=round(time.perf_counter() - t_start, 1),
        workdir=str(work), figure=str(args.out / f"{name}.png"))
    _figure(result, args.out / f"{name}.png")
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["acceptance"], indent=2))
    print(f"wrote {args.out / (name + '.json')} and {name}.png")


if __name__ == "__main__":
    raise SystemExit(main())
