"""``qcamseg demo``: the whole flow on generated data, printing each command it runs.

synth (a QuPath project of synthetic Camelyon-like slides) → train (held-out slide for
validation) → predict (the held-out tumour slide and a tumour-free slide) → evaluate (Dice, FROC,
AUC) → figure (ground truth in blue beside the prediction) and the training curve.

Each step is the ordinary CLI command, so the printed lines can be copied and rerun on a real
project. Sizes are chosen to finish in a few minutes on 2 CPU cores (2 µm/px, 128 px tiles); a GPU
is used when present.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click

from qupath_camseg.cli._options import device_option, seed_option

__all__ = ["demo", "demo_steps"]

# (slide side in px at 0.25 µm/px, training steps, tiles per step) per size preset; the standard
# demo's 16 tiles per step give a model that calls no lesion on the normal slide once calibrated
# (benchmarks/RESULTS.md, "Calibrated probabilities")
_PRESETS: dict[str, tuple[int, int, int]] = {"quick": (4096, 40, 8), "standard": (8192, 120, 16)}


def demo_steps(out: Path, *, size: str = "standard", seed: int = 0, device: str = "auto") -> list[list[str]]:
    """The ``qcamseg`` argument lists the demo runs, in order (``out`` = demo folder)."""
    side, steps, batch = _PRESETS[size]
    project, model = out / "project", out / "model"
    held_out, normal = "tumor_003.tif", "normal_004.tif"
    return [
        ["synth", str(project), "--slides", "4", "--negatives", "1", "--width", str(side),
         "--height", str(side), "--seed", str(seed), "--overwrite"],
        ["train", str(project), "--out", str(model), "--mpp", "2.0", "--tile", "128", "--width", "8",
         "--depth", "3", "--steps", str(steps), "--tiles-per-epoch", "160", "--batch-size", str(batch), "--val-images", held_out,
         "--device", device, "--seed", str(seed)],
        ["predict", str(project), "--model", str(model), "--images", held_out, "--images", normal,
         "--device", device, "--overwrite"],
        ["evaluate", str(project), "--images", held_out, "--images", normal,
         "--json", str(out / "evaluation.json"), "--froc-plot", str(out / "froc.png")],
        ["figure", str(project), "--image", held_out, "--out", str(out / "figure.png")],
        ["figure", str(project), "--training-log", str(model / "metrics.json"),
         "--out", str(out / "training_curve.png")],
    ]


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("qcamseg-demo"),
              show_default=True, help="Folder for the demo project, model and figures (replaced if it exists).")
@click.option("--size", type=click.Choice(sorted(_PRESETS)), default="standard", show_default=True,
              help="quick: smaller slides and fewer steps (for smoke tests).")
@device_option
@seed_option
def demo(out_dir: Path, size: str, device: str, seed: int) -> None:
    """Generate a QuPath project of synthetic slides, train, predict, evaluate and draw the figure."""
    from qupath_camseg.cli import main
    from qupath_camseg.errors import CamsegError

    out = out_dir.expanduser().absolute()
    timings: list[tuple[str, float]] = []
    for args in demo_steps(out, size=size, seed=seed, device=device):
        click.secho(f"\n$ qcamseg {shlex.join(args)}", bold=True, err=True)
        t0 = time.perf_counter()
        rc = main(args)
        timings.append((args[0], time.perf_counter() - t0))
        if rc != 0:
            raise CamsegError(f"demo step 'qcamseg {args[0]}' failed (exit {rc}); see the message above")
    _summary(out, timings)


def _summary(out: Path, timings: list[tuple[str, float]]) -> None:
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    overall = report.get("overall", report)
    click.echo("\n=== qcamseg demo finished ===")
    for name, seconds in timings:
        click.echo(f"  {name:<9} {seconds:7.1f} s")
    slides = {s["image"]: s for s in report.get("slides", [])}
    held_out = slides.get("tumor_003.tif", {})
    click.echo(f"  held-out slide Dice: {_fmt(held_out.get('dice'))}   pooled Dice: "
               f"{_fmt(overall.get('pooled_dice'))}   FROC score: {_fmt(overall.get('froc_score'))}   "
               f"slide AUC: {_fmt(overall.get('slide_auc'))}")
    normal = slides.get("normal_004.tif", {})
    strong = sum(d["prob"] >= 0.5 for d in normal.get("detections", []))
    click.echo(f"  calibration: ECE {_fmt(overall.get('ece'), '.4f')}   mean tumour probability on normal tissue "
               f"{_fmt(overall.get('mean_prob_normal_tissue'), '.4f')}   lesions called (p >= 0.5) on the normal "
               f"slide: {strong}")
    click.echo(f"\nQuPath project: {out / 'project' / 'project.qpproj'}")
    click.echo("  Open it in QuPath (File › Open project), then run the scripts from groovy/ "
               "(qcamseg install-scripts) to import the predictions into the hierarchy.")
    for label, path in [("model", out / "model"), ("predictions", out / "project" / "camseg" / "predictions"),
                        ("heatmaps", out / "project" / "camseg" / "heatmaps"),
                        ("evaluation", out / "evaluation.json"), ("FROC curve", out / "froc.png"),
                        ("figure", out / "figure.png"), ("training curve", out / "training_curve.png")]:
        click.echo(f"  {label:<15} {path}")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)
