"""``qcamseg predict``: run a model over whole slides and write the results for QuPath.

Progress on stdout with ``--progress jsonl`` (for the Groovy bridge): one JSON object per line,
UTF-8, flushed after each line; every object has ``"event"`` and, except for a global error,
``"image"`` (the image name)::

    {"event": "start",    "image": str, "tiles": int, "resumed": bool}     tiles to compute now
    {"event": "progress", "image": str, "done": int, "total": int, "tiles_per_s": float}
    {"event": "note",     "image": str, "message": str}                     e.g. resampling, resume
    {"event": "warning",  "image": str, "message": str}                     e.g. no tissue: nothing predicted
    {"event": "skip",     "image": str, "reason": str, "outputs": {...}}    already finished
    {"event": "done",     "image": str, "outputs": {"geojson": path, "heatmap": path, "report": path}}
    {"event": "error",    "message": str[, "image": str]}                   one line, then exit 2
                                                                            (or after all images)

Progress events come at most twice a second and always for the last tile. ``--progress bar``
(default) shows a tqdm bar per slide on stderr (tiles/s, ETA); ``none`` shows only errors. When
several images fail, each one's error is printed as ``IMAGE: failed - MESSAGE`` before the final
``error:`` line; when one fails, the final line is its own error. In every mode the exit code is
0 on success and 2 for an error the user can fix.

Under ``torchrun --nproc_per_node=N -m qupath_camseg predict PROJECT ...`` each process predicts
its share of the images (see :func:`qupath_camseg.predict.project.predict_project`); JSON events carry
``"rank"``, only rank 0 draws progress bars and prints the summary, other ranks' lines start with
``[rank R]``, and image errors are printed as they happen.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from qupath_camseg.cli._options import (
    FiniteFloat,
    device_option,
    door_option,
    images_option,
    mpp_override_option,
    overwrite_option,
)

__all__ = ["predict"]


def _is_project(path: Path) -> bool:
    return path.suffix == ".qpproj" or (path.is_dir() and (path / "project.qpproj").is_file())


class _Reporter:
    """Turns library progress events into a tqdm bar (stderr), JSON lines (stdout) or nothing
    (but errors). ``rank``/``world``: the torchrun process this is, and how many there are."""

    def __init__(self, mode: str, *, rank: int = 0, world: int = 1) -> None:
        self.mode, self.rank, self.world = mode, rank, world
        self.prefix = f"[rank {rank}] " if world > 1 else ""
        self.bar: Any = None
        self.failures: list[str] = []  # image errors not yet printed

    def __call__(self, event: dict[str, Any]) -> None:
        if self.mode == "jsonl":
            if self.world > 1:
                event = {**event, "rank": self.rank}
            click.echo(json.dumps(event, ensure_ascii=False, default=str))
            sys.stdout.flush()
            return
        kind = event.get("event")
        if kind == "error" and event.get("image"):
            line = f"{self.prefix}{event['image']}: failed - {event.get('message')}"
            if self.world > 1:  # rank 0 prints the summary after all ranks met: print now
                self._write(line)
            else:  # at the end, and only if it is not the single error that ends the run
                self.failures.append(line)
            return
        if kind == "warning":  # shown in every mode: the run produced less than asked
            self._write(f"{self.prefix}warning: {event.get('image')}: {event.get('message')}")
            return
        if self.mode == "none":
            return
        if kind == "start" and self.rank != 0:  # one process draws bars; the others say what they do
            self._write(f"{self.prefix}{event['image']}: predicting {event['tiles']} tiles")
        elif kind == "start":
            from tqdm.auto import tqdm

            self._close()
            self.bar = tqdm(total=event["tiles"], desc=str(event["image"]), unit="tile", file=sys.stderr,
                            dynamic_ncols=True, leave=True)
        elif kind == "progress" and self.bar is not None:
            self.bar.update(event["done"] - self.bar.n)
        elif kind == "done":
            self._close()
            self._write(f"{self.prefix}{event['image']}: wrote {event['outputs']['geojson']}")
        elif kind in ("note", "skip"):
            text = event.get("message") or event.get("reason")
            self._write(f"{self.prefix}{event['image']}: {text}" if event.get("image") else f"{self.prefix}{text}")

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def flush_failures(self) -> None:
        """Print the image errors held back (several images failed: each, before the summary)."""
        self._close()
        for line in self.failures:
            click.echo(line, err=True)
        self.failures.clear()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.command("predict")
@click.argument("target", metavar="PROJECT_OR_SLIDE", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder (model.json + model.safetensors), as written by qcamseg train.")
@images_option
@click.option("--roi", type=click.Path(path_type=Path), default=None,
              help="Predict only inside the polygons of this GeoJSON or ASAP XML file (level-0 px).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder for a bare slide [default: camseg/ beside the slide]; projects use <project>/camseg/.")
@click.option("--threshold", type=FiniteFloat(0, 1, min_open=True), default=0.5, show_default=True,
              help="Probability at or above which a pixel counts as tumour in the annotations.")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Tiles per forward pass.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Tile readers (and output-stage processes, up to half the CPUs). "
                   "[default: 4 on a CPU; on a GPU half the CPU cores, at most 8]")
@click.option("--readers", type=click.Choice(["auto", "threads", "processes"]), default="auto", show_default=True,
              help="Read tiles on threads or worker processes (auto: processes on a GPU). Speed only, same result.")
@overwrite_option
@click.option("--progress", "progress_mode", type=click.Choice(["bar", "jsonl", "none"]), default="bar",
              show_default=True, help="bar: tqdm on stderr; jsonl: one JSON event per line on stdout.")
@mpp_override_option
@click.option("--overlap", type=FiniteFloat(0, 0.5, max_open=True), default=0.25, show_default=True,
              help="Fraction by which neighbouring tiles overlap (blended with a smooth window).")
@click.option("--compile", "compile_model", is_flag=True,
              help="Compile the network (torch.compile): the first batch takes tens of seconds (cached on disk "
                   "for later runs), then tiles run faster on a GPU.")
@click.option("--no-tissue-mask", is_flag=True, deprecated="use --tissue none",
              help="The old spelling of --tissue none.")
@click.option("--no-project-write", is_flag=True,
              help="Do not write objects into the QuPath project hierarchy (files under camseg/ only).")
@click.option("--chunk-px", type=click.IntRange(min=16), default=512, hidden=True)
@click.option("--stain-norm", type=click.Choice(["model", "none"]), default="model", show_default=True,
              help="model: normalise each slide's stains to the model's reference when it was trained with "
                   "--stain-norm; none: never.")
@door_option
@click.option("--tissue", "tissue", default="auto", show_default=True, metavar="auto|none|FILE",
              help="Which tissue is analysed: auto (detected; shown as the locked camseg Tissue annotation), "
                   "none (the whole slide), or your own outline: a GeoJSON (e.g. QuPath's thresholder objects, "
                   "exported), an ASAP XML, or a mask image such as HistoQC's *_mask_use.png; for a project, "
                   "a folder with one file per slide (<entry ID>.geojson, <slide name>.png, ...).")
@click.option("--suggest", type=click.IntRange(min=0), default=20, show_default=True,
              help="Add up to N small 'camseg Review' boxes where the model is least sure: where a look "
                   "(and a correction) teaches it most. 0: none.")
@click.option("--cascade", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: when the model folder has a screen, screen all tissue at its coarse pixel size and run the "
                   "full model only near what it flags; off: one full pass over all tissue.")
def predict(target: Path, model_dir: Path, images: tuple[str, ...], roi: Path | None, out_dir: Path | None,
            threshold: float, device: str, batch_size: int, workers: int | None, readers: str, overwrite: bool, progress_mode: str,
            slide_mpp: float | None, overlap: float, compile_model: bool, no_tissue_mask: bool, no_project_write: bool,
            chunk_px: int, stain_norm: str, door: str, tissue: str,
            suggest: int, cascade: str) -> None:
    """Tumour probability maps, tile measurements and tumour outlines for whole slides.

    PROJECT_OR_SLIDE is a QuPath project (folder or project.qpproj) or one slide file. Results go
    to <project>/camseg/ (predictions/*.geojson, heatmaps/*.tif, reports/*.json) and, when QuPath
    is installed, into the project's images as objects (your own annotations are never touched).
    A rerun skips finished images and resumes interrupted ones; --overwrite starts afresh.
    """
    from qupath_camseg._dist import env_rank
    from qupath_camseg._io import no_link
    from qupath_camseg.errors import CamsegError, SlideNotFoundError
    from qupath_camseg.model import load_model
    from qupath_camseg.predict import PredictOptions, predict_project, predict_slide

    rank, world, _ = env_rank()
    report = _Reporter(progress_mode, rank=rank, world=world)
    try:
        if not target.exists():
            raise SlideNotFoundError(f"{target} does not exist; pass a QuPath project folder or a slide file")
        if chunk_px % 16:
            raise click.BadParameter("must be a multiple of 16", param_hint="--chunk-px")
        if no_tissue_mask:
            if tissue != "auto":
                raise click.BadParameter(f"and --tissue {tissue} disagree; --no-tissue-mask is the old spelling "
                                         "of --tissue none: pass only --tissue", param_hint="--no-tissue-mask")
            tissue = "none"
        opts = PredictOptions(threshold=threshold, overlap=overlap, batch_size=batch_size, workers=workers, readers=readers,
                              device=device, slide_mpp=slide_mpp, roi=str(roi) if roi else None,
                              overwrite=overwrite, chunk_px=chunk_px, compile=compile_model, tissue=tissue,
                              stain_norm=stain_norm, suggest=suggest, cascade=cascade)
        model = load_model(model_dir, device=device)
        if _is_project(target):
            if out_dir is not None:
                raise click.BadParameter("is for bare slides; a project's results go to <project>/camseg/",
                                         param_hint="--out")
            results = predict_project(target, model, images=images, options=opts,
                                      project_write=not no_project_write, progress=report, door=door)
        else:
            if images:
                raise click.BadParameter("selects images of a project, but the target is a slide file",
                                         param_hint="--images")
            # a camseg/ link beside a slide is refused (a folder of slides from elsewhere); --out is yours
            out = out_dir if out_dir is not None else no_link(target.parent / "camseg")
            # one slide is not split between torchrun processes: rank 0 predicts it
            results = [predict_slide(target, model, out, options=opts, progress=report)] if rank == 0 else []
    except CamsegError as err:
        report._close()
        if len(report.failures) > 1:
            report.flush_failures()
        if progress_mode == "jsonl":
            report({"event": "error", "message": str(err)})
        raise
    finally:
        report._close()
    if progress_mode == "bar" and rank == 0:
        for r in results:
            rep = r.report
            click.echo(f"{r.image}: {rep.get('tumor_regions', 0)} tumour regions, "
                       f"{rep.get('tumor_area_mm2', 0):.3f} mm² of {rep.get('tissue_area_mm2', 0):.2f} mm² tissue, "
                       f"{rep.get('suggestions', 0)} review suggestions"
                       f"{' (already done)' if r.skipped else ''} -> {r.outputs['report'].parent.parent}")
