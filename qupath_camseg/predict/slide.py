"""Whole-slide inference: tiles over tissue (or a ROI) → blended probability map → QuPath objects.

For one slide, :func:`predict_slide` reads overlapping tiles at the model's pixel size on a pool of
reader threads (each with its own slide handle) or, on CUDA, reader processes (decoding outside
the main process's GIL), runs the model in batches (bf16 autocast and channels-last on CUDA),
blends the softmax outputs with a smooth window and writes the map in chunks (see
:mod:`qupath_camseg.predict.blending`), so memory does not grow with the slide. Each chunk is traced into
polygons on worker processes as soon as it is written (:mod:`qupath_camseg.predict.outputs`). From the
finished chunks it then writes, under ``out_dir``:

* ``predictions/<id>.geojson`` - QuPath GeoJSON: one ``tile`` object per cell of a regular grid
  over tissue (size: the model's tile, clipped to the ROI), classified as the class with the
  highest mean probability (background is called ``Other``, QuPath's catch-all class), with
  measurements ``"<class> probability (mean)"`` and ``"<class> area fraction"`` (share of the tile
  at or above ``threshold``) per class; and one annotation per connected region at or above
  ``threshold`` (holes kept, outlines simplified, specks removed), named ``camseg <class>``
  (tiles: ``camseg tile``). All objects carry :data:`~qupath_camseg.annotations.geojson.CAMSEG_METADATA` and
  a name starting with :data:`~qupath_camseg.annotations.geojson.OUR_NAME_PREFIX` (QuPath 0.4 keeps object
  metadata only on annotations), see :func:`~qupath_camseg.annotations.geojson.is_ours`.
* ``heatmaps/<id>.tif`` - the tumour probability as a pyramidal TIFF (:mod:`qupath_camseg.wsi.heatmap`).
* ``reports/<id>.json`` - model, pixel sizes, tiles, tissue and tumour area (mm²), timings,
  versions, device, settings. Written last: its presence means the image is finished.
* ``probability/<id>/`` - the chunk store; a rerun resumes from it, or reuses it when only the
  post-processing settings (threshold, speck size) changed.

:func:`predict_project` runs every image of a QuPath project into ``<project>/camseg/`` and,
through the paquo door when QuPath is installed, replaces our objects in the project hierarchy.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from qupath_camseg._dist import Dist, env_rank, shard_by_weight
from qupath_camseg._io import atomic_write_json, file_lock
from qupath_camseg._runtime import (
    default_reader_workers,
    device_name,
    resolve_device,
    versions,
)
from qupath_camseg.annotations import QPObject, read_geojson, write_geojson
from qupath_camseg.errors import (
    CamsegError,
    InvalidAnnotationError,
    ModelBundleError,
    ProjectError,
    SlideNotFoundError,
)
from qupath_camseg.predict.blending import run_inference
from qupath_camseg.predict.chunks import ChunkStore, TilePlan
from qupath_camseg.predict.outputs import (
    BACKGROUND_CLASS,
    ChunkSummaries,
    build_objects,
    measure_tile_px,
)
from qupath_camseg.wsi import TissueFractions

__all__ = [
    "BACKGROUND_CLASS",
    "LoadedModel",
    "PredictOptions",
    "PredictResult",
    "load_model",
    "predict_project",
    "predict_slide",
    "read_roi",
]

log = logging.getLogger(__name__)

_TUMOR_NAMES = ("tumor", "tumour", "metastasis", "metastases", "cancer", "carcinoma")
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PredictOptions:
    """Settings of a prediction (the defaults suit Camelyon-style lymph-node slides).

    ``overlap`` is the tile overlap fraction; ``min_tissue`` the tissue fraction a tile needs to be
    computed (``min_tile_tissue`` for a measurement tile object); ``min_area_um2`` and
    ``min_hole_um2`` drop specks and fill pinholes; ``simplify_um`` is the outline tolerance.
    The tissue mask is computed at ``tissue_mask_mpp`` µm/px, coarser for slides whose mask would
    exceed ``tissue_mask_max_px`` pixels (so memory does not grow with the slide: a 15 mm slide
    gets a ≈ 15 µm/px mask, a Camelyon slide a ≈ 36 µm/px one). ``workers`` tile readers
    (``None``: 4 on a CPU, where the model is the bottleneck; half the CPU cores, at most 8, on a
    GPU) are threads or, with ``readers="processes"`` (``"auto"``: on CUDA), DataLoader worker
    processes; the choice changes speed, never the result. ``compile`` runs the network through
    :func:`compile_model` (slow first batch, faster after). ``mask_to_tissue`` zeroes the
    probabilities off the tissue mask (dilated by one mask pixel): a network trained on tissue
    says nothing useful about glass, so the heatmap and regions follow the tissue.
    """

    threshold: float = 0.5
    overlap: float = 0.25
    batch_size: int = 16
    workers: int | None = None
    readers: str = "auto"
    compile: bool = False
    device: str = "auto"
    slide_mpp: float | None = None
    roi: str | None = None
    overwrite: bool = False
    min_tissue: float = 0.01
    min_tile_tissue: float = 0.05
    tissue_mask_mpp: float = 8.0
    tissue_mask_max_px: int = 1 << 20
    min_area_um2: float = 2000.0
    min_hole_um2: float = 2000.0
    simplify_um: float | None = None
    chunk_px: int = 512
    stripe_chunks: int = 16
    tile_px: int | None = None
    mask_to_tissue: bool = True


@dataclass
class PredictResult:
    """What :func:`predict_slide` did: ``outputs`` maps ``geojson``/``heatmap``/``report`` to paths."""

    image: str
    entry_id: str
    outputs: dict[str, Path]
    report: dict[str, Any]
    skipped: bool = False
    objects: list[QPObject] = field(default_factory=list)


@dataclass
class LoadedModel:
    """A model in eval mode on ``device`` with its bundle config and weights' SHA-256."""

    model: Any
    config: Any
    path: Path | None
    sha256: str
    device: str
    compiled: bool = False


def compile_model(lm: LoadedModel) -> LoadedModel:
    """``lm`` with its network compiled by ``torch.compile`` (static shapes: the inference loop
    pads short batches to the batch size, so one graph serves a whole slide). The first batch
    pays the compile time (tens of seconds; inductor caches it on disk for later runs); after that
    tiles run faster on a GPU. Same probabilities up to float rounding."""
    import torch

    if lm.compiled:
        return lm
    return LoadedModel(torch.compile(lm.model, dynamic=False), lm.config, lm.path, lm.sha256, lm.device, True)


def load_model(model_dir: str | Path, *, device: str = "auto") -> LoadedModel:
    """Load a model folder for inference (``MODEL_DIR`` with ``model.json`` + ``model.safetensors``)."""
    import torch

    from qupath_camseg.model import WEIGHTS_NAME, load_bundle

    dev = resolve_device(device)
    model, config = load_bundle(model_dir, device=dev)
    folder = Path(model_dir)
    folder = folder.parent if folder.is_file() else folder
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    if dev.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    if config.tile_px % config.input_multiple:
        raise ModelBundleError(f"{folder}: tile_px {config.tile_px} is not a multiple of {config.input_multiple}; retrain or fix model.json")
    return LoadedModel(model, config, folder, digest, dev)


def read_roi(path: str | Path) -> BaseGeometry:
    """The union of the polygons in a GeoJSON or ASAP XML file (level-0 px)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidAnnotationError(f"ROI file {p} does not exist; pass a GeoJSON or ASAP XML polygon file")
    if p.suffix.lower() == ".xml":
        from qupath_camseg.annotations import read_asap_xml

        objs = read_asap_xml(p)
    else:
        from qupath_camseg.annotations import read_geojson

        objs = read_geojson(p)
    polys = [o.geometry for o in objs if isinstance(o.geometry, (Polygon, MultiPolygon)) and o.geometry.area > 0]
    if not polys:
        raise InvalidAnnotationError(f"ROI file {p} holds no polygon; draw an area annotation and export it")
    return shapely.union_all(polys)


def _tumor_index(names: Sequence[str]) -> int:
    for i, n in enumerate(names):
        if n.casefold() in _TUMOR_NAMES:
            return i
    return 0


def _key(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def predict_slide(
    slide_path: str | Path, model: LoadedModel | str | Path, out_dir: str | Path, *,
    entry_id: str | None = None, image_name: str | None = None, options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> PredictResult:
    """Predict one slide into ``out_dir`` (see the module docstring for the files written).

    ``model`` is a :class:`LoadedModel` or a model folder; ``entry_id`` names the outputs
    (default: the slide's file stem). A finished image with the same settings is skipped unless
    ``options.overwrite``; an interrupted one resumes from its finished chunks. ``progress``
    receives event dicts (``start``, ``note``, ``progress``, ``done``, ``skip``).
    """
    from qupath_camseg.wsi import detect_tissue, open_slide

    opts = options or PredictOptions()
    emit = progress or (lambda event: None)
    slide_path = Path(slide_path)
    if not slide_path.exists():
        raise SlideNotFoundError(f"slide {slide_path} does not exist; check the path")
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=opts.device)
    if opts.compile:
        lm = compile_model(lm)
    cfg = lm.config
    entry_id = entry_id or slide_path.stem
    image = image_name or slide_path.name
    out = Path(out_dir)
    paths = {"geojson": out / "predictions" / f"{entry_id}.geojson", "heatmap": out / "heatmaps" / f"{entry_id}.tif",
             "report": out / "reports" / f"{entry_id}.json"}
    store_dir = out / "probability" / entry_id
    t_start = time.perf_counter()
    roi = read_roi(opts.roi) if opts.roi else None
    tile_px = opts.tile_px or cfg.tile_px
    if tile_px % cfg.input_multiple:
        raise CamsegError(f"tile size {tile_px} px must be a multiple of {cfg.input_multiple} for model {lm.path}")
    with open_slide(slide_path, mpp=opts.slide_mpp) as slide:
        slide_mpp = float(slide.mpp)
        dims = tuple(int(v) for v in slide.dimensions)
        _check_mpp(slide_path, slide_mpp, cfg.mpp, lm.path, emit, image)
        plan = TilePlan.create(dims, slide_mpp, cfg.mpp, tile_px=tile_px, overlap=opts.overlap,
                               chunk_px=opts.chunk_px, stripe_chunks=opts.stripe_chunks)
        stat = slide_path.stat()
        store_key = {"model": lm.sha256, "slide": [str(slide_path.resolve()), stat.st_size, int(stat.st_mtime)],
                     "slide_mpp": slide_mpp, "roi": roi.wkb_hex if roi is not None else None,
                     "min_tissue": opts.min_tissue, "tissue_mask_mpp": opts.tissue_mask_mpp,
                     "tissue_mask_max_px": opts.tissue_mask_max_px, "mask_to_tissue": opts.mask_to_tissue}
        post_key = {**store_key, **{k: getattr(opts, k) for k in ("threshold", "min_tile_tissue", "min_area_um2",
                                                                  "min_hole_um2", "simplify_um")}}
        settings_key = _key([store_key, post_key, plan.to_dict()])
        if not opts.overwrite and paths["report"].is_file():
            try:
                old = json.loads(paths["report"].read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = {}
            if old.get("status") == "done" and old.get("settings_key") == settings_key:
                emit({"event": "skip", "image": image, "reason": "already predicted with these settings",
                      "outputs": {k: str(v) for k, v in paths.items()}})
                return PredictResult(image, entry_id, paths, old, skipped=True)
        with file_lock(out / "probability" / f".{entry_id}.lock", what=f"prediction of {image}"):
            t0 = time.perf_counter()
            mask_mpp = max(opts.tissue_mask_mpp, slide_mpp * math.sqrt(dims[0] * dims[1] / opts.tissue_mask_max_px))
            tissue = detect_tissue(slide, mask_mpp=mask_mpp)
            fractions = TissueFractions(tissue)
            active = _active_tiles(plan, fractions, roi, opts.min_tissue)
            t_tissue = time.perf_counter() - t0
            store = ChunkStore(store_dir, plan, len(cfg.classes), store_key, overwrite=opts.overwrite)
            measure_px = measure_tile_px(plan, cfg.tile_px)
            needed = plan.needed_chunks(active)
            ti = _tumor_index(cfg.class_names)
            # chunk summaries (polygons, tile means) start on worker processes as chunks are written;
            # with few cores they would only compete with inference, so they run at the end instead
            workers = opts.workers or default_reader_workers(lm.device)
            processes = min(workers, (os.cpu_count() or 1) // 2)
            with ChunkSummaries(store, measure_px=measure_px, threshold_q=math.ceil(opts.threshold * 255 - 1e-9),
                                processes=processes, expected=int(needed.sum())) as summaries:
                t0 = time.perf_counter()
                stats = run_inference(slide_path, opts.slide_mpp, plan, active, store, lm, roi,
                                      batch_size=opts.batch_size, workers=workers, image=image, emit=emit,
                                      on_chunk=summaries.submit, readers=opts.readers,
                                      tissue=_dilated(tissue) if opts.mask_to_tissue else None)
                t_infer = time.perf_counter() - t0
                t0 = time.perf_counter()
                from concurrent.futures import ThreadPoolExecutor

                from qupath_camseg.wsi import write_heatmap

                def heat_tile(r: int, c: int) -> np.ndarray | None:
                    return store.read(r, c)[ti] if store.has(r, c) else None

                # the heatmap pyramid (zlib, GIL released) is written while the objects are built
                with ThreadPoolExecutor(1, thread_name_prefix="qcamseg-heatmap") as hm_pool:
                    heatmap = hm_pool.submit(
                        write_heatmap, paths["heatmap"], heat_tile, cfg.mpp, size=plan.map_size,
                        tile_px=plan.chunk_px, workers=workers,
                        description=f"qupath-camseg {cfg.class_names[ti]} probability, 255 = 1, mpp={cfg.mpp}")
                    chunk_summaries = summaries.finish()
                    t_summaries = time.perf_counter() - t0
                    objs, tumor_area_l0 = build_objects(
                        chunk_summaries, plan, fractions, roi, class_names=cfg.class_names,
                        colors=[tuple(c["color"]) for c in cfg.classes], measure_px=measure_px,
                        min_tile_tissue=opts.min_tile_tissue, slide_mpp=slide_mpp, min_area_um2=opts.min_area_um2,
                        min_hole_um2=opts.min_hole_um2, simplify_um=opts.simplify_um, tumor_index=ti)
                    t_objects = time.perf_counter() - t0 - t_summaries
                    write_geojson(paths["geojson"], objs)
                    t_geojson = time.perf_counter() - t0 - t_summaries - t_objects
                    heatmap.result()
            t_out = time.perf_counter() - t0
    tissue_area = _tissue_area_mm2(tissue, roi, slide_mpp)
    report = {
        "status": "done", "settings_key": settings_key, "image": image, "entry_id": entry_id,
        "slide": str(slide_path), "slide_size_px": list(dims), "slide_mpp": slide_mpp,
        "model": {"path": str(lm.path) if lm.path else None, "sha256": lm.sha256, "mpp": cfg.mpp,
                  "tile_px": cfg.tile_px, "classes": cfg.class_names, "arch": cfg.arch, "version": cfg.version},
        "heatmap_class": cfg.class_names[ti], "map_size_px": list(plan.map_size), "map_mpp": cfg.mpp,
        "tiles": {"inference_tile_px": tile_px, "stride_px": plan.stride_px, "active": int(active.sum()),
                  "readers": f"{workers} {'processes' if stats['read_processes'] else 'threads'}",
                  "computed_this_run": stats["tiles"], "resumed": store.resumed,
                  "tile_objects": sum(o.object_type == "tile" for o in objs)},
        "tissue_area_mm2": tissue_area, "tissue_mask_mpp": mask_mpp, "tumor_area_mm2": tumor_area_l0 * slide_mpp**2 / 1e6,
        "tumor_regions": sum(o.object_type == "annotation" for o in objs),
        "timings_s": {"tissue": t_tissue, "inference": t_infer, "outputs": t_out,
                      "outputs_waiting_for_summaries": t_summaries, "outputs_objects": t_objects,
                      "outputs_geojson": t_geojson, "outputs_other": t_out - t_summaries - t_objects - t_geojson,
                      "total": time.perf_counter() - t_start, **stats["timings"]},
        "tiles_per_s": stats["tiles"] / t_infer if t_infer > 0 else None,
        "device": device_name(lm.device), "versions": versions(),
        "settings": {k: v for k, v in asdict(opts).items()},
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    atomic_write_json(paths["report"], report)
    emit({"event": "done", "image": image, "outputs": {k: str(v) for k, v in paths.items()}})
    return PredictResult(image, entry_id, paths, report, objects=objs)


def _dilated(tissue: Any) -> Any:
    """The tissue mask grown by one mask pixel (keeps tumour at the very edge of the tissue)."""
    from scipy import ndimage

    from qupath_camseg.wsi import TissueMask

    return TissueMask(ndimage.binary_dilation(tissue.mask, np.ones((3, 3), bool)), tissue.downsample)


def _check_mpp(slide_path: Path, slide_mpp: float, model_mpp: float, model_path: Path | None,
               emit: Progress, image: str) -> None:
    ratio = model_mpp / slide_mpp
    if ratio < 0.5:
        raise CamsegError(
            f"model {model_path} works at {model_mpp:g} µm/px but slide {slide_path} has only {slide_mpp:g} µm/px "
            f"(it would be upsampled {1 / ratio:.1f}×); use a model trained at ≥ {slide_mpp:g} µm/px, "
            "or pass --slide-mpp if the slide's pixel size is recorded wrongly")
    if abs(ratio - 1) > 0.05:
        emit({"event": "note", "image": image,
              "message": f"slide is {slide_mpp:g} µm/px, model {model_mpp:g} µm/px: tiles are resampled by {ratio:.3g}×"})


def _active_tiles(plan: TilePlan, fractions: Any, roi: BaseGeometry | None, min_tissue: float) -> np.ndarray:
    """``bool (ny, nx)``: tiles to compute - on enough tissue and, if given, touching the ROI.
    ``fractions`` is a :class:`TissueFractions` (or a tissue mask)."""
    if not callable(fractions):
        fractions = TissueFractions(fractions)
    ny, nx = plan.grid_shape
    flat = plan.tile_boxes_level0().reshape(-1, 4)
    active = fractions(flat) >= max(min_tissue, 1e-9)
    if roi is not None:
        geoms = shapely.box(flat[:, 0], flat[:, 1], flat[:, 0] + flat[:, 2], flat[:, 1] + flat[:, 3])
        shapely.prepare(roi)
        active &= shapely.intersects(roi, geoms)
    return active.reshape(ny, nx)


def _tissue_area_mm2(tissue: Any, roi: BaseGeometry | None, slide_mpp: float) -> float:
    if roi is None:
        px = float(np.count_nonzero(tissue.mask)) * float(tissue.downsample) ** 2
    else:
        px = float(tissue.to_polygons().intersection(roi).area)
    return px * slide_mpp**2 / 1e6


#: Per-image outcome codes exchanged between ranks (summed: each image has exactly one owner).
_DONE, _SKIPPED, _FAILED = 1, 2, 3
#: How long ranks wait for each other at the end: slides are not split, so with a few large slides
#: ranks may finish hours apart (torchrun stops every rank as soon as one dies, so no hang).
_DDP_TIMEOUT = datetime.timedelta(days=7)


def predict_project(
    project_path: str | Path, model: LoadedModel | str | Path, *, images: Sequence[str] = (),
    options: PredictOptions | None = None, project_write: bool = True, progress: Progress | None = None,
) -> list[PredictResult]:
    """Predict the images of a QuPath project (all, or ``images`` by name or entry ID).

    Outputs go to ``<project>/camseg/``. With ``project_write`` and a QuPath installation, our
    objects are also written into each image's hierarchy through the paquo door (backup first,
    the user's own objects untouched). An image that fails is reported by an ``error`` event and
    the others continue; at the end its own error is raised when it is the only one, else a
    :class:`CamsegError` naming the failed images.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the images are shared out by file size, the same way on
    every rank (:func:`~qupath_camseg._dist.shard_by_weight`); each rank predicts and writes its
    own (every file atomically). The ranks meet once at the end (gloo): rank 0 then writes the new
    results into the project hierarchy (a single writer, so the project lock never sees two),
    returns the results of all images and raises the summary error; the others return their own.
    """
    from qupath_camseg.qupath import open_project

    opts = options or PredictOptions()
    emit = progress or (lambda event: None)
    with open_project(project_path, "r", door="files") as proj:
        entries = [proj.entry(n) for n in images] if images else list(proj.entries)
        if not entries:
            raise ProjectError(f"{proj.qpproj} has no images; add images in QuPath (File > Project > Add images), "
                               "or pass a slide file to qcamseg predict")
        entries = list({e.entry_id: e for e in entries}.values())  # an image named twice runs once
        out_dir = proj.camseg_dir
        resolved: list[tuple[Any, Path | CamsegError]] = []
        for e in entries:
            try:
                resolved.append((e, proj.image_path(e)))
            except CamsegError as err:
                resolved.append((e, err))
    lm = model if isinstance(model, LoadedModel) else load_model(model, device=opts.device)
    if opts.compile:
        lm = compile_model(lm)
    import torch

    rank, world, _ = env_rank()
    owner = shard_by_weight([_file_size(img) for _, img in resolved], world)
    status = torch.zeros(len(resolved), dtype=torch.int64)
    results: dict[int, PredictResult] = {}
    errors: dict[int, CamsegError] = {}
    dist = Dist.from_env("cpu", backend="gloo", timeout=_DDP_TIMEOUT)  # a stand-in outside torchrun
    try:
        for i, (e, img) in enumerate(resolved):
            if owner[i] != rank:
                continue
            try:
                if isinstance(img, CamsegError):
                    raise img
                res = predict_slide(img, lm, out_dir, entry_id=e.entry_id, image_name=e.image_name,
                                    options=opts, progress=emit)
                results[i] = res
                status[i] = _SKIPPED if res.skipped else _DONE
                if project_write and not res.skipped and world == 1:
                    _write_back(Path(project_path), e.entry_id, res.objects, emit, e.image_name)
            except CamsegError as err:
                errors[i], status[i] = err, _FAILED
                emit({"event": "error", "image": e.image_name, "message": str(err)})
        status = dist.all_reduce(status)
    finally:
        dist.close()
    if world > 1 and rank == 0:
        for i, (e, _img) in enumerate(resolved):
            if int(status[i]) not in (_DONE, _SKIPPED):
                continue
            try:
                res = results.get(i) or _result_from_report(out_dir, e, skipped=int(status[i]) == _SKIPPED)
                results[i] = res
                if project_write and int(status[i]) == _DONE:
                    objs = res.objects or read_geojson(res.outputs["geojson"])
                    _write_back(Path(project_path), e.entry_id, objs, emit, e.image_name)
            except CamsegError as err:
                errors[i], status[i] = err, _FAILED
                emit({"event": "error", "image": e.image_name, "message": str(err)})
    failed = [i for i in range(len(resolved)) if int(status[i]) == _FAILED]
    if failed and rank == 0:
        if len(failed) == 1 and failed[0] in errors:
            raise errors[failed[0]]
        names = [resolved[i][0].image_name for i in failed]
        if len(failed) == 1:  # its error was printed by the torchrun process that owned it
            raise CamsegError(f"{names[0]} failed in torchrun process rank {owner[failed[0]]}; see its message "
                              "above, fix it and run again (finished images are skipped)")
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise CamsegError(f"{len(failed)} of {len(resolved)} images failed ({listed}); see the messages above, "
                          "fix them and run again (finished images are skipped)")
    return [results[i] for i in sorted(results)]


def _file_size(path: Path | CamsegError) -> int:
    """Bytes of a slide file, the work estimate for sharding (compressed tiles: tissue, not glass)."""
    try:
        return path.stat().st_size if isinstance(path, Path) else 0
    except OSError:
        return 0


def _result_from_report(out_dir: Path, entry: Any, *, skipped: bool) -> PredictResult:
    """The result of an image another rank predicted, from its report (written last, atomically)."""
    path = Path(out_dir) / "reports" / f"{entry.entry_id}.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CamsegError(f"cannot read the report {path} another process wrote ({err}); "
                          "check the shared file system, then run again") from err
    outputs = {k: Path(v) for k, v in report.get("outputs", {}).items()}
    return PredictResult(entry.image_name, entry.entry_id, outputs, report, skipped=skipped)


def _write_back(project_path: Path, entry_id: str, objs: list[QPObject], emit: Progress, image: str) -> None:
    """Our objects into the QuPath hierarchy through the paquo door, if QuPath is installed."""
    from qupath_camseg.qupath import find_qupath_installation

    folder, reason = find_qupath_installation()
    if folder is None:
        emit({"event": "note", "image": image,
              "message": f"results not written into the QuPath project hierarchy ({reason}); "
                         "import predictions/*.geojson in QuPath or run the Groovy bridge"})
        return
    from qupath_camseg.qupath import open_project

    with open_project(project_path, "r+", door="paquo") as proj:
        backup = proj.write_objects(entry_id, objs)
    emit({"event": "note", "image": image, "message": f"objects written into the QuPath project (backup in {backup})"})
