"""Whole-slide inference: tiles over tissue (or a ROI) → blended probability map → QuPath objects.

For one slide, :func:`predict_slide` reads overlapping tiles at the model's pixel size on a pool of
reader threads (each with its own slide handle) or, on CUDA, reader processes (decoding outside
the main process's GIL), runs the model in batches (bf16 autocast and channels-last on CUDA),
blends the softmax outputs with a smooth window and writes the map in chunks (see
:mod:`qupath_camseg.predict.inference`), so memory does not grow with the slide. Each chunk is traced
into polygons on worker processes as soon as it is written (:mod:`qupath_camseg.predict.summaries`).
From the finished chunks it then writes, under ``out_dir``:

* ``predictions/<id>.geojson`` - QuPath GeoJSON: one ``tile`` object per cell of a regular grid
  over tissue (size: the model's tile, clipped to the ROI), classified as the class with the
  highest mean probability (background is called ``Other``, QuPath's catch-all class), with
  measurements ``"<class> probability (mean)"`` and ``"<class> area fraction"`` (share of the tile
  at or above ``threshold``) per class; and one annotation per connected region at or above
  ``threshold`` (holes kept, outlines simplified, specks removed), named ``camseg <class>``
  (tiles: ``camseg tile``); and, unless ``tissue="none"``, one locked ``camseg Tissue`` annotation
  showing the tissue analysed (:mod:`qupath_camseg.predict.tissue_source`). All objects carry :data:`~qupath_camseg.annotations.geojson.CAMSEG_METADATA` and
  a name starting with :data:`~qupath_camseg.annotations.geojson.OUR_NAME_PREFIX` (QuPath 0.4 keeps object
  metadata only on annotations), see :func:`~qupath_camseg.annotations.geojson.is_ours`.
* ``heatmaps/<id>.tif`` - the tumour probability as a pyramidal TIFF (:mod:`qupath_camseg.wsi.heatmap`).
* ``reports/<id>.json`` - model, pixel sizes, tiles, tissue and tumour area (mm²), timings,
  versions, device, settings. Written last: its presence means the image is finished.
* ``probability/<id>/`` - the chunk store; a rerun resumes from it, or reuses it when only the
  post-processing settings (threshold, speck size) changed.

The steps: open the slide and plan the map (:func:`_open_and_plan`); skip it if finished with the
same settings (:func:`~qupath_camseg.predict.report.finished_report`); find the tissue and the
tiles to compute (:func:`_tissue`); infer (:func:`_infer`); write the heatmap, objects and GeoJSON
(:func:`_write_outputs`); write the report (:func:`_report`). :func:`~qupath_camseg.predict.project.predict_project`
runs every image of a QuPath project.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from qupath_camseg._io import atomic_write_json, entry_file, file_lock
from qupath_camseg._runtime import configure_cpu_threads, default_reader_workers, device_name, require_memory, versions
from qupath_camseg.annotations import TISSUE_CLASS, QPObject, write_geojson
from qupath_camseg.errors import InvalidSettingsError, ModelBundleError, SlideNotFoundError
from qupath_camseg.model import LoadedModel, ScreenModel, compile_model, forward_bytes, load_model, load_screen
from qupath_camseg.predict.cascade import cascade_key, context_px, plan_cascade
from qupath_camseg.predict.chunks import ChunkStore, TilePlan
from qupath_camseg.predict.inference import InferenceStats, run_inference
from qupath_camseg.predict.objects import build_objects, measure_tile_px
from qupath_camseg.predict.options import PredictOptions, PredictResult, Progress, no_progress
from qupath_camseg.predict.report import finished_report, settings_key, store_key
from qupath_camseg.predict.roi import active_tiles, check_roi_on_slide, read_roi, tissue_area_mm2
from qupath_camseg.predict.run_lock import run_lock
from qupath_camseg.predict.stain import check_stain_norm, slide_stain
from qupath_camseg.predict.suggestions import REVIEW_NAME, review_objects, suggestion_sizes
from qupath_camseg.predict.summaries import ChunkSummaries
from qupath_camseg.predict.tissue_source import load_tissue, resolve_tissue, tissue_annotation
from qupath_camseg.wsi import Slide, StainTransform, TissueFractions, TissueMask, open_slide, write_heatmap

__all__ = ["predict_slide"]

_TUMOR_NAMES = ("tumor", "tumour", "metastasis", "metastases", "cancer", "carcinoma")


def predict_slide(
    slide_path: str | Path, model: LoadedModel | str | Path, out_dir: str | Path, *,
    entry_id: str | None = None, image_name: str | None = None, options: PredictOptions | None = None,
    progress: Progress | None = None, reviewed: BaseGeometry | None = None,
) -> PredictResult:
    """Predict one slide into ``out_dir`` (see the module docstring for the files written).

    ``model`` is a :class:`~qupath_camseg.model.loaded.LoadedModel` or a model folder; ``entry_id``
    names the outputs (default: the slide's file stem). A finished image with the same settings is
    skipped unless ``options.overwrite``; an interrupted one resumes from its finished chunks.
    ``progress`` receives event dicts (``start``, ``note``, ``progress``, ``done``, ``skip``; see
    :data:`~qupath_camseg.predict.options.ProgressEvent`). ``reviewed`` (level-0 px): what the
    pathologist has annotated on this slide already; no review suggestion counts the doubt there
    (:func:`~qupath_camseg.predict.suggestions.review_objects`). Holds ``<out_dir>/camseg.lock``
    from the start (:func:`~qupath_camseg.predict.run_lock.run_lock`).
    """
    with run_lock(out_dir, what=f"output folder {out_dir}"):
        return _predict_slide(Path(slide_path), model, Path(out_dir), entry_id, image_name,
                              options or PredictOptions(), progress or no_progress, reviewed)


def _predict_slide(slide_path: Path, model: LoadedModel | str | Path, out_dir: Path, entry_id: str | None,
                   image_name: str | None, options: PredictOptions, progress: Progress,
                   reviewed: BaseGeometry | None) -> PredictResult:
    """:func:`predict_slide`, under its lock."""
    job = _job(slide_path, model, out_dir, entry_id, image_name, options, progress, reviewed)
    outputs = {k: str(v) for k, v in job.paths.items()}
    with open_slide(job.slide_path, mpp=job.opts.slide_mpp) as slide:
        planned = _open_and_plan(job, slide)
        old = None if job.opts.overwrite else finished_report(job.paths["report"], planned.settings_key)
        if old is not None:
            job.emit({"event": "skip", "image": job.image, "reason": "already predicted with these settings",
                      "outputs": outputs})
            return PredictResult(job.image, job.entry_id, job.paths, old, skipped=True)
        tissue = _tissue(job, slide, planned)  # before the lock: a bad --tissue file leaves nothing behind
        lock = entry_file(job.out, "probability", f".{job.entry_id}", ".lock")
        with file_lock(lock, what=f"prediction of {job.image}"):
            stain = slide_stain(slide, planned.plan, tissue.active, tissue.fractions, job.lm.config.stain_reference,
                                job.lm.config.mpp, job.opts.stain_norm, emit=job.emit, image=job.image)
            done = _infer(job, planned, tissue, stain.transform)
    report = {**_report(job, planned, tissue, done), "stain_normalization": stain.info}
    atomic_write_json(job.paths["report"], report)
    job.emit({"event": "done", "image": job.image, "outputs": outputs})
    return PredictResult(job.image, job.entry_id, job.paths, report, objects=done.objects)


@dataclass
class _Job:
    """One slide's prediction: its inputs, settings and output files (``paths``: ``geojson``,
    ``heatmap``, ``report``); ``tile_px`` the inference tile (map px); ``tumor_index`` the class of
    the heatmap and of the tumour area; ``t_start`` when it began (``time.perf_counter``)."""

    slide_path: Path
    image: str
    entry_id: str
    lm: LoadedModel
    opts: PredictOptions
    out: Path
    paths: dict[str, Path]
    roi: BaseGeometry | None
    tile_px: int
    tumor_index: int
    emit: Progress
    t_start: float
    screen: ScreenModel | None = None
    reviewed: BaseGeometry | None = None


def _job(slide_path: Path, model: LoadedModel | str | Path, out: Path, entry_id: str | None,
         image_name: str | None, opts: PredictOptions, emit: Progress, reviewed: BaseGeometry | None) -> _Job:
    """Check the slide and the settings, load (and compile) the model, name the outputs."""
    if not slide_path.exists():
        raise SlideNotFoundError(f"slide {slide_path} does not exist; check the path")
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=opts.device)
    configure_cpu_threads(lm.device)  # the cores actually free, re-checked between batches
    if opts.compile:
        lm = compile_model(lm)
    cfg = lm.config
    entry_id = entry_id or slide_path.stem
    opts = replace(opts, tissue=resolve_tissue(opts.tissue, slide_path, entry_id=entry_id))
    paths = {"geojson": entry_file(out, "predictions", entry_id, ".geojson"),
             "heatmap": entry_file(out, "heatmaps", entry_id, ".tif"),
             "report": entry_file(out, "reports", entry_id, ".json")}
    t_start = time.perf_counter()
    roi = read_roi(opts.roi) if opts.roi else None
    check_stain_norm(opts.stain_norm)
    tile_px = opts.tile_px or cfg.tile_px
    error = InvalidSettingsError if opts.tile_px else ModelBundleError
    if tile_px % cfg.input_multiple:
        raise error(f"tile size {tile_px} px must be a multiple of {cfg.input_multiple} for model {lm.path}")
    require_memory(forward_bytes(cfg, tile_px, opts.batch_size), device=lm.device, error=error,
                   what=f"a batch of {opts.batch_size} tiles of {tile_px} px (model {lm.path})",
                   fix="lower --batch-size, or check the model's tile_px in model.json (retrain if it was edited)")
    return _Job(slide_path, image_name or slide_path.name, entry_id, lm, opts, out, paths, roi, tile_px,
                _tumor_index(cfg.class_names), emit, t_start, _screen(lm, opts, emit, image_name or slide_path.name),
                reviewed)


def _screen(lm: LoadedModel, opts: PredictOptions, emit: Progress, image: str) -> ScreenModel | None:
    """The screen of a cascade (``None``: single pass): ``--cascade auto`` with a calibrated screen."""
    if opts.cascade not in ("auto", "off"):
        raise InvalidSettingsError(f"--cascade must be auto or off, not {opts.cascade!r}")
    screen = load_screen(lm) if opts.cascade == "auto" else None
    if screen is not None and screen.threshold is None:
        emit({"event": "note", "image": image, "message": "the model's screen was never calibrated (no tumour in "
              "its validation slides): one full pass"})
        return None
    return screen


def _tumor_index(names: Sequence[str]) -> int:
    """The foreground class shown in the heatmap and measured as tumour area (else the first)."""
    for i, n in enumerate(names):
        if n.casefold() in _TUMOR_NAMES:
            return i
    return 0


@dataclass
class _Planned:
    """The slide's pixel size (µm/px) and level-0 size ``(w, h)``, its map plan, and the keys of
    the settings the outputs depend on."""

    slide_mpp: float
    dims: tuple[int, int]
    plan: TilePlan
    store_key: dict[str, Any]
    settings_key: str


def _open_and_plan(job: _Job, slide: Slide) -> _Planned:
    """Read the slide's size and pixel size, check them against the model's, plan the map."""
    cfg = job.lm.config
    slide_mpp = float(slide.mpp)
    dims = (int(slide.dimensions[0]), int(slide.dimensions[1]))
    _check_mpp(job, slide_mpp)
    if job.roi is not None:
        check_roi_on_slide(job.roi, str(job.opts.roi), dims, job.slide_path)
    plan = TilePlan.create(dims, slide_mpp, cfg.mpp, tile_px=job.tile_px, overlap=job.opts.overlap,
                           chunk_px=job.opts.chunk_px, stripe_chunks=job.opts.stripe_chunks)
    store = store_key(job.lm, job.slide_path, slide_mpp, job.roi, job.opts)
    if job.screen is not None:  # the map depends on the screen too (only then: single-pass stores stay valid)
        store["cascade"] = cascade_key(job.screen, context_px(job.lm))
    return _Planned(slide_mpp, dims, plan, store, settings_key(store, job.opts, plan, job.reviewed))


def _check_mpp(job: _Job, slide_mpp: float) -> None:
    """Refuse a model finer than the slide (it would upsample); note any resampling."""
    model_mpp = job.lm.config.mpp
    ratio = model_mpp / slide_mpp
    if ratio < 0.5:
        raise ModelBundleError(
            f"model {job.lm.path} works at {model_mpp:g} µm/px but slide {job.slide_path} has only {slide_mpp:g} µm/px "
            f"(it would be upsampled {1 / ratio:.1f}×); use a model trained at ≥ {slide_mpp:g} µm/px, "
            "or pass --slide-mpp if the slide's pixel size is recorded wrongly")
    if abs(ratio - 1) > 0.05:
        job.emit({"event": "note", "image": job.image,
                  "message": f"slide is {slide_mpp:g} µm/px, model {model_mpp:g} µm/px: tiles are resampled by {ratio:.3g}×"})


@dataclass
class _Tissue:
    """The tissue mask (at ``mask_mpp`` µm/px), its box fractions, the tiles to compute
    (``bool (ny, nx)``), the seconds it took and, for a user's polygon file, its outline."""

    mask: TissueMask
    mask_mpp: float
    fractions: TissueFractions
    active: npt.NDArray[np.bool_]
    seconds: float
    outline: BaseGeometry | None = None


def _tissue(job: _Job, slide: Slide, planned: _Planned) -> _Tissue:
    """Detect (or read) the tissue (a mask of at most ``tissue_mask_max_px`` px) and pick the active tiles."""
    t0 = time.perf_counter()
    w, h = planned.dims
    mask_mpp = max(job.opts.tissue_mask_mpp, planned.slide_mpp * math.sqrt(w * h / job.opts.tissue_mask_max_px))
    mask, outline = load_tissue(slide, job.opts.tissue, mask_mpp)
    fractions = TissueFractions(mask)
    active = active_tiles(planned.plan, fractions, job.roi, job.opts.min_tissue)
    if not active.any():
        where = " inside the ROI" if job.roi is not None else ""
        job.emit({"event": "warning", "image": job.image,
                  "message": f"no tissue found{where} on {job.slide_path.name} ({w}x{h} px at {planned.slide_mpp:g} µm/px): "
                             "nothing to predict; check the slide is not blank and its pixel size (--slide-mpp)"})
    return _Tissue(mask, mask_mpp, fractions, active, time.perf_counter() - t0, outline)


def _dilated(tissue: TissueMask) -> TissueMask:
    """The tissue mask grown by one mask pixel (keeps tumour at the very edge of the tissue)."""
    return TissueMask(ndimage.binary_dilation(tissue.mask, np.ones((3, 3), bool)), tissue.downsample)


@dataclass
class _Done:
    """What inference and the outputs produced: the objects written, the tumour regions' area
    (level-0 px²), the inference stats, the readers used, whether the store was resumed, seconds."""

    objects: list[QPObject]
    tumor_area_l0: float
    stats: InferenceStats
    workers: int
    resumed: bool
    timings: dict[str, float]
    cascade: dict[str, Any] | None = None


def _infer(job: _Job, planned: _Planned, tissue: _Tissue, stain: StainTransform | None = None) -> _Done:
    """Compute the missing chunks (summarised as they are written; tiles normalised by ``stain``
    if given), then write the outputs; with a cascade, screen first (raw tiles) and run the full
    model only on the tiles it examines."""
    lm, opts, plan = job.lm, job.opts, planned.plan
    store = ChunkStore(entry_file(job.out, "probability", job.entry_id), plan, len(lm.config.classes), planned.store_key,
                       overwrite=opts.overwrite)
    measure_px = measure_tile_px(plan, lm.config.tile_px)
    needed = plan.needed_chunks(tissue.active)
    mask = _dilated(tissue.mask) if opts.mask_to_tissue and opts.tissue != "none" else None
    cascade = None if job.screen is None else plan_cascade(
        job.slide_path, planned.dims, planned.slide_mpp, lm, job.screen, plan, tissue.active, tissue.fractions, mask,
        job.roi, job.out / "probability" / job.entry_id / "screen", opts, image=job.image)
    if cascade is not None:
        job.emit({"event": "note", "image": job.image, "message": f"screened at {cascade.screen_mpp:g} µm/px in "
                  f"{cascade.screen.seconds:.1f} s: the full model examines {int(cascade.active.sum())} of "
                  f"{int(tissue.active.sum())} tiles"})
    # chunk summaries (polygons, tile means) start on worker processes as chunks are written;
    # with few cores they would only compete with inference, so they run at the end instead
    workers = opts.workers or default_reader_workers(lm.device)
    processes = min(workers, (os.cpu_count() or 1) // 2)
    um2_per_map_px = (plan.ds * planned.slide_mpp) ** 2  # specks and pinholes go on the raster
    _, cell_px = suggestion_sizes(plan, lm.config.mpp, opts.suggest_um)
    with ChunkSummaries(store, measure_px=measure_px, threshold_q=math.ceil(opts.threshold * 255 - 1e-9),
                        processes=processes, expected=int(needed.sum()), min_area_px=opts.min_area_um2 / um2_per_map_px,
                        min_hole_px=opts.min_hole_um2 / um2_per_map_px,
                        uncertainty_px=cell_px if opts.suggest > 0 else 0) as summaries:
        t0 = time.perf_counter()
        if cascade is not None:
            cascade.write_screen_only(store, job.roi, mask, summaries.submit)
        stats = run_inference(job.slide_path, opts.slide_mpp, plan, tissue.active if cascade is None else cascade.active,
                              store, lm, job.roi, batch_size=opts.batch_size, workers=workers, image=job.image,
                              emit=job.emit, on_chunk=summaries.submit, readers=opts.readers, tissue=mask,
                              stain=stain, fill=cascade.fill if cascade is not None else None)
        t_infer = time.perf_counter() - t0
        objs, tumor_area, timings = _write_outputs(job, planned, tissue, store, summaries, measure_px, workers)
    screen = {} if cascade is None else {"screen": cascade.screen.seconds}
    return _Done(objs, tumor_area, stats, workers, store.resumed, {**screen, "inference": t_infer, **timings},
                 cascade.report(tissue.mask, t_infer) if cascade is not None else {"on": False})


def _write_outputs(job: _Job, planned: _Planned, tissue: _Tissue, store: ChunkStore, summaries: ChunkSummaries,
                   measure_px: int, workers: int) -> tuple[list[QPObject], float, dict[str, float]]:
    """Write the heatmap (on a thread), build the objects from the chunk summaries and write the
    GeoJSON; return the objects, the tumour regions' area (level-0 px²) and the seconds spent."""
    cfg, opts, plan, ti = job.lm.config, job.opts, planned.plan, job.tumor_index
    t0 = time.perf_counter()

    def heat_tile(r: int, c: int) -> npt.NDArray[np.uint8] | None:
        return store.read(r, c)[ti] if store.has(r, c) else None

    # the heatmap pyramid (zlib, GIL released) is written while the objects are built
    with ThreadPoolExecutor(1, thread_name_prefix="qcamseg-heatmap") as hm_pool:
        heatmap = hm_pool.submit(
            write_heatmap, job.paths["heatmap"], heat_tile, cfg.mpp, size=plan.map_size,
            tile_px=plan.chunk_px, workers=workers,
            description=f"qupath-camseg {cfg.class_names[ti]} probability, 255 = 1, mpp={cfg.mpp}")
        chunk_summaries = summaries.finish()
        t_summaries = time.perf_counter() - t0
        objs, tumor_area_l0 = build_objects(
            chunk_summaries, plan, tissue.fractions, job.roi, class_names=cfg.class_names,
            colors=[tuple(c["color"]) for c in cfg.classes], measure_px=measure_px,
            min_tile_tissue=opts.min_tile_tissue, slide_mpp=planned.slide_mpp, min_area_um2=opts.min_area_um2,
            min_hole_um2=opts.min_hole_um2, simplify_um=opts.simplify_um, tumor_index=ti)
        if opts.tissue != "none":  # the analysed tissue, first (drawn beneath the rest in QuPath)
            objs = [o for o in [tissue_annotation(tissue.mask, tissue.outline, job.roi)] if o is not None] + objs
        t_objects = time.perf_counter() - t0 - t_summaries
        box_px, cell_px = suggestion_sizes(plan, cfg.mpp, opts.suggest_um)
        objs += review_objects(chunk_summaries, plan, n=opts.suggest, box_px=box_px, cell_px=cell_px, roi=job.roi,
                               reviewed=job.reviewed)
        t_suggest = time.perf_counter() - t0 - t_summaries - t_objects
        write_geojson(job.paths["geojson"], objs)
        t_geojson = time.perf_counter() - t0 - t_summaries - t_objects - t_suggest
        heatmap.result()
    t_out = time.perf_counter() - t0
    return objs, tumor_area_l0, {"outputs": t_out, "outputs_waiting_for_summaries": t_summaries,
                                 "outputs_objects": t_objects, "outputs_geojson": t_geojson,
                                 "outputs_other": t_out - t_summaries - t_objects - t_geojson - t_suggest,
                                 "outputs_suggestions": t_suggest}


def _report(job: _Job, planned: _Planned, tissue: _Tissue, done: _Done) -> dict[str, Any]:
    """The report (``reports/<id>.json``): model, pixel sizes, tiles, tissue and tumour area
    (mm²), timings (s), versions, device, settings and outputs."""
    lm, cfg, plan, stats = job.lm, job.lm.config, planned.plan, done.stats
    tissue_area = tissue_area_mm2(tissue.mask, job.roi, planned.slide_mpp)
    t_infer = done.timings["inference"]
    return {
        "status": "done", "settings_key": planned.settings_key, "image": job.image, "entry_id": job.entry_id,
        "slide": str(job.slide_path), "slide_size_px": list(planned.dims), "slide_mpp": planned.slide_mpp,
        "model": {"path": str(lm.path) if lm.path else None, "sha256": lm.sha256, "mpp": cfg.mpp,
                  "tile_px": cfg.tile_px, "classes": cfg.class_names, "arch": cfg.arch, "version": cfg.version},
        "heatmap_class": cfg.class_names[job.tumor_index], "map_size_px": list(plan.map_size), "map_mpp": cfg.mpp,
        "tiles": {"inference_tile_px": job.tile_px, "stride_px": plan.stride_px, "active": int(tissue.active.sum()),
                  "readers": f"{done.workers} {'processes' if stats['read_processes'] else 'threads'}",
                  "computed_this_run": stats["tiles"], "resumed": done.resumed,
                  "tile_objects": sum(o.object_type == "tile" for o in done.objects)},
        "tissue_area_mm2": tissue_area, "tissue_mask_mpp": tissue.mask_mpp,
        "tumor_area_mm2": done.tumor_area_l0 * planned.slide_mpp**2 / 1e6,
        "tumor_regions": sum(o.object_type == "annotation" and o.classification != TISSUE_CLASS and not _is_review(o)
                             for o in done.objects),
        "tissue_source": job.opts.tissue,
        "cascade": done.cascade,
        "timings_s": {"tissue": tissue.seconds, **done.timings, "total": time.perf_counter() - job.t_start,
                      **stats["timings"]},
        "tiles_per_s": stats["tiles"] / t_infer if t_infer > 0 else None,
        "device": device_name(lm.device), "versions": versions(),
        "settings": {k: v for k, v in asdict(job.opts).items()},
        "outputs": {k: str(v) for k, v in job.paths.items()},
        "suggestions": sum(_is_review(o) for o in done.objects),
    }


def _is_review(obj: QPObject) -> bool:
    return obj.object_type == "annotation" and str(obj.name).startswith(REVIEW_NAME)
