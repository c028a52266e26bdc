"""``qcamseg evaluate PROJECT`` (Dice, Camelyon16 FROC, slide AUC) and ``qcamseg figure PROJECT``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from qupath_camseg.cli._options import FiniteFloat, door_option, images_option, mpp_override_option

if TYPE_CHECKING:
    from qupath_camseg.evaluate import ProjectEvaluation
    from qupath_camseg.evaluate.slide_sets import SetSummary

__all__ = ["evaluate", "figure"]


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _rate(r: float) -> str:
    return f"{r:g}" if r >= 1 else f"1/{round(1 / r)}"


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _summary_lines(summary: SetSummary, what: str) -> list[str]:
    """The pooled pixel scores, FROC, AUC and calibration lines of one set of slides."""
    p, r = summary.pooled, summary.froc
    out = [(f"{what}: pixels pooled over {len(summary.names)} slide(s): Dice {_fmt(p.dice)}  IoU {_fmt(p.iou)}  "
            f"precision {_fmt(p.precision)}  recall {_fmt(p.recall)}  (mean per-slide Dice {_fmt(summary.mean_dice)})")]
    if not r.no_lesions:
        sens = "  ".join(f"{_rate(rate)}: {_fmt(v)}" for rate, v in zip(r.fp_rates, r.sensitivity_at))
        out.append(f"  FROC score {_fmt(r.score)} over {r.n_lesions} lesion(s)  sensitivity at FP/slide  {sens}")
    else:
        out.append("  FROC: no lesions - the ground truth holds no tumour lesion (only normal slides or ITCs)")
    out.append(f"  slide AUC {_fmt(summary.auc)}" if not math.isnan(summary.auc)
               else "  slide AUC: needs both tumour and normal slides")
    cal = summary.calibration
    if cal is not None:
        out.append(f"  calibration on tissue (heatmap pixels): ECE {_fmt(cal.bins.ece, '.4f')}  mean tumour "
                   f"probability on normal tissue {_fmt(cal.mean_normal_prob, '.4f')}")
    return out


_SCOPE_TITLE = {"held_out": "held-out slides (not trained on)", "all_slides": "all slides (--all-slides)",
                "training_only": "TRAINING slides only (see the warning)"}


def _report_text(ev: ProjectEvaluation) -> str:
    rows = []
    for s in ev.slides:
        cal = s.calibration
        rows.append([
            s.image_name, s.role, "tumour" if s.has_tumor else "normal", str(s.n_lesions), str(s.n_itc),
            _fmt(s.pixels.dice), _fmt(s.pixels.iou), str(len(s.detections)),
            f"{s.lesions.n_hit}/{s.n_lesions}" if s.has_tumor else "—",
            str(len(s.lesions.fp_probs)), _fmt(s.slide_score),
            _fmt(cal.bins.ece, ".4f") if cal is not None else "—",
            _fmt(cal.mean_normal_prob, ".4f") if cal is not None else "—",
        ])
    out = [_table(rows, ["image", "role", "truth", "lesions", "ITC", "Dice", "IoU", "detections", "hit", "FP",
                         "score", "ECE", "p normal"]), ""]
    out += _summary_lines(ev.headline, _SCOPE_TITLE[ev.scope])
    if ev.training is not None:
        out += ["", *_summary_lines(ev.training, "training slides (scored apart: the model learned from them)")]
    return "\n".join(out)


@click.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--predictions", "predictions_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Folder of <entryID>.geojson predictions [default: PROJECT/camseg/predictions].")
@click.option("--heatmaps", "heatmaps_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Folder of <entryID>.tif probability maps [default: PROJECT/camseg/heatmaps].")
@images_option
@mpp_override_option
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the JSON report [default: PROJECT/camseg/reports/evaluation.json].")
@click.option("--froc-plot", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to draw the FROC curve [default: PROJECT/camseg/reports/froc.png].")
@click.option("--dice-mpp", type=FiniteFloat(min=0, min_open=True), default=2.0, show_default=True,
              help="Pixel size (µm/px) at which predicted and true regions are compared.")
@click.option("--eval-downsample", type=FiniteFloat(min=1), default=None,
              help="Downsample of the FROC evaluation mask [default: the power of two nearest "
                   "7.8 µm/px, Camelyon16's level 5].")
@click.option("--detection-threshold", type=FiniteFloat(0, 1), default=0.1, show_default=True,
              help="Lowest heatmap probability that can become a lesion detection.")
@click.option("--nms-radius-um", type=FiniteFloat(min=0, min_open=True), default=200.0,
              show_default=True, help="Detections closer than this (µm) are merged (non-maximum suppression).")
@click.option("--include-itcs", is_flag=True,
              help="Count isolated tumour cells (< 200 µm) as lesions (Camelyon16 ignores them).")
@door_option
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model folder whose training slides are scored apart [default: the model each "
                   "prediction report names].")
@click.option("--all-slides", is_flag=True,
              help="Pool every slide in the overall scores, the model's training slides included.")
def evaluate(project: Path, predictions_dir: Path | None, heatmaps_dir: Path | None, images: tuple[str, ...],
             slide_mpp: float | None, json_out: Path | None, froc_plot: Path | None, dice_mpp: float,
             eval_downsample: float | None, detection_threshold: float, nms_radius_um: float,
             include_itcs: bool, door: str, model_dir: Path | None, all_slides: bool) -> None:
    """Score predictions against the project's Tumor annotations.

    Per image: its role for the model (train, val, unseen), pixel Dice and IoU, lesion detections
    hit and false positives, and the heatmap's calibration on tissue (expected calibration error,
    mean tumour probability on normal tissue). Overall, over the slides the model did not train
    on (its training slides are scored apart; --all-slides pools them all): pooled Dice/IoU, the
    Camelyon16 lesion FROC score (mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per
    slide, read off the curve as the challenge's script does; isolated tumour cells ignored), the
    slide-level AUC and the ECE. Images without Tumor annotations count as normal slides.
    Predictions are read from PROJECT/camseg/ (written by `qcamseg predict`).
    """
    from qupath_camseg._io import atomic_write_json
    from qupath_camseg.evaluate import evaluate_project

    ev = evaluate_project(
        project, predictions_dir=predictions_dir, heatmaps_dir=heatmaps_dir, images=images,
        slide_mpp=slide_mpp, eval_downsample=eval_downsample, dice_mpp=dice_mpp,
        detection_threshold=detection_threshold, nms_radius_um=nms_radius_um, include_itcs=include_itcs,
        door=door,  # type: ignore[arg-type]
        model_dir=model_dir, all_slides=all_slides,
    )
    counts = ", ".join(f"{s.image_name} {s.n_annotations}" for s in ev.slides)
    click.echo(f"ground truth read through the {ev.door} door (annotations per image: {counts})", err=True)
    for name, reason in ev.skipped:
        click.echo(f"skipped {name}: {reason}", err=True)
    for note in ev.warnings:
        click.echo(f"warning: {note}", err=True)
    click.echo(_report_text(ev))
    reports = _reports_dir(project)
    json_path = json_out or reports / "evaluation.json"
    atomic_write_json(json_path, ev.to_dict())
    click.echo(f"\nreport: {json_path}")
    if not ev.froc.no_lesions:
        from qupath_camseg.evaluate import froc_figure, save_figure

        png = froc_plot or reports / "froc.png"
        r = ev.froc
        save_figure(froc_figure(r.fps_per_slide, r.sensitivity, fp_rates=r.fp_rates,
                                sensitivity_at=r.sensitivity_at, score=r.score), png)
        click.echo(f"FROC curve: {png}")


def _reports_dir(project: Path) -> Path:
    folder = project.parent if project.suffix == ".qpproj" else project
    return folder / "camseg" / "reports"


def _parse_region(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
        raise click.BadParameter(f"{text!r} is not x,y,width,height in level-0 pixels (e.g. 1000,2000,4096,4096)",
                                 param_hint="--region")
    return vals  # type: ignore[return-value]


@click.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--image", default=None, help="Image (name or entry ID) for the slide figure.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="PNG to write [default: PROJECT/camseg/reports/figure_<entryID>.png].")
@click.option("--region", default=None, metavar="X,Y,W,H",
              help="Draw only this level-0 box instead of the whole slide.")
@click.option("--no-heatmap", is_flag=True, help="Show the predicted regions only, not the probability map.")
@click.option("--training-log", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="A model's metrics.json: draw its training curve (to --out, or beside the log).")
@click.option("--predictions", "predictions_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of <entryID>.geojson predictions [default: PROJECT/camseg/predictions].")
@click.option("--heatmaps", "heatmaps_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of <entryID>.tif probability maps [default: PROJECT/camseg/heatmaps].")
@mpp_override_option
@door_option
def figure(project: Path, image: str | None, out: Path | None, region: str | None, no_heatmap: bool,
           training_log: Path | None, predictions_dir: Path | None, heatmaps_dir: Path | None,
           slide_mpp: float | None, door: str) -> None:
    """Draw a slide with its ground truth (blue, left) beside the prediction (right), titled with
    the Dice; or, with --training-log, a model's training curve.

    \b
    Examples:
      qcamseg figure PROJECT --image Tumor_001.tif
      qcamseg figure PROJECT --image Tumor_001.tif --region 60000,100000,8000,8000
      qcamseg figure PROJECT --training-log MODEL/metrics.json
    """
    if image is None and training_log is None:
        raise click.UsageError("give --image NAME (slide figure) or --training-log METRICS_JSON (training curve)")
    if training_log is not None:
        from qupath_camseg.evaluate import (
            read_history,
            save_figure,
            training_curve_figure,
        )

        history = read_history(training_log)
        png = out if out is not None and image is None else training_log.with_name("training_curve.png")
        save_figure(training_curve_figure(history, title=f"Training ({training_log.parent.name})"), png)
        click.echo(f"training curve: {png}")
    if image is not None:
        from qupath_camseg.evaluate import project_seed_figure

        notes: list[str] = []
        png, dice = project_seed_figure(
            project, image, out=out, region_px=_parse_region(region), predictions_dir=predictions_dir,
            heatmaps_dir=heatmaps_dir, slide_mpp=slide_mpp, use_heatmap=not no_heatmap,
            door=door, notes=notes,  # type: ignore[arg-type]
        )
        for note in notes:
            click.echo(note, err=True)
        click.echo(f"figure: {png} (Dice {_fmt(dice)})")
