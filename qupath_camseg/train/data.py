"""Training data: labelled images from a QuPath project, class-balanced tile sampling, datasets.

Each sample is a tile of ``tile_px × tile_px`` pixels at ``mpp`` µm/px, read by pyramid level
(``Slide.read_region_mpp``: never a whole level) and labelled by rasterising the polygons:

* a class from ``classes`` → its index (1, 2, …); ``Ignore*`` classes → 255 (left out of the loss);
* other classes → 0 (background); unannotated pixels → 0 (default: Camelyon16 tumour outlines
  are exhaustive, so everything not outlined is normal) or 255 with ``unannotated="ignore"``
  (only annotated regions teach the network).

Sampling is class-balanced: a fraction of tiles is centred inside a target-class region, a
fraction on its border (so edges are learned), the rest anywhere on *tissue* (never blank glass).
Every sample is a pure function of ``(seed, epoch, index)``: a key ``(epoch, index)`` drawn by
:class:`TileSampler` fully determines position, image and augmentation, so training is
reproducible with ``--seed``, independent of the number of workers, and resumable mid-epoch
(the sampler's state is just ``(epoch, position)``). The sampler shards keys across distributed
ranks.

Datasets keep one slide handle per DataLoader worker (opened lazily, never pickled), as wsinfer does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import torch
from shapely.geometry import MultiPolygon, Polygon
from shapely.strtree import STRtree

from qupath_camseg.train.augment import IDENTITY_PARAMS, AugmentConfig, augment_tile
from qupath_camseg.wsi import level0_size, tissue_tiles

__all__ = [
    "IGNORE_INDEX",
    "LabelledImage",
    "TrainingData",
    "collect_images",
    "SamplingConfig",
    "TileSampler",
    "TrainTileDataset",
    "ValTileDataset",
    "build_shapes",
    "prepare_image",
    "val_tiles",
]

IGNORE_INDEX = 255
_CLIP_MIN_COORDS = 64  # clip shapes with more vertices to the tile before rasterising


@dataclass(frozen=True)
class SamplingConfig:
    """Where training tiles come from: fractions centred inside / on the border of target-class
    regions (the rest: random tissue), and the tissue fraction a negative tile must hold."""

    inside_fraction: float = 0.35
    border_fraction: float = 0.15
    min_tissue: float = 0.25
    jitter: float = 0.25  # max offset of a centred tile, as a fraction of the tile size


@dataclass
class LabelledImage:
    """One image ready for sampling (picklable; no open file handles).

    Geometries and boxes in level-0 px. ``shapes``: ``(geometry, label)`` in paint order (later
    wins). ``regions[label]``: the union of that target class. ``tissue_xy``: ``(n, 2)`` origins of
    half-overlapping tiles with at least ``min_tissue`` tissue (training negatives);
    ``grid_xy``: origins of the non-overlapping grid tiles touching tissue (validation).
    ``tile_px_level0``: the tile size in level-0 px.
    """

    name: str
    entry_id: str
    path: str
    slide_mpp: float
    dimensions: tuple[int, int]
    tile_px_level0: float
    shapes: list[tuple[Any, int]]
    fill: int
    regions: dict[int, MultiPolygon]
    tissue_xy: npt.NDArray[np.int64]
    grid_xy: npt.NDArray[np.int64]
    mpp_override: float | None = None
    _tree: STRtree | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        geoms = np.array([g for g, _ in self.shapes], dtype=object)
        self._tree = STRtree(geoms) if self.shapes else None
        # shapes worth clipping to a tile before rasterising: valid, with many vertices
        self._clip = (shapely.get_num_coordinates(geoms) > _CLIP_MIN_COORDS) & shapely.is_valid(geoms)
        self._parts: dict[int, tuple[list[Polygon], npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
        for label, region in self.regions.items():
            parts = [p for p in getattr(region, "geoms", [region]) if not p.is_empty]
            areas = np.array([p.area for p in parts], np.float64)
            lengths = np.array([p.exterior.length for p in parts], np.float64)
            self._parts[label] = (parts, areas / areas.sum(), lengths / lengths.sum())

    def region_area(self, label: int) -> float:
        """Area (level-0 px²) of target class ``label`` in this image."""
        region = self.regions.get(label)
        return 0.0 if region is None else float(region.area)

    def label_tile(self, box_px: tuple[int, int, int, int], out_size: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """The label tile ``(h, w)`` uint8 for a level-0 box (only shapes near the box are drawn).

        Large outlines (thousands of vertices, as hand-drawn Camelyon metastases) are first clipped
        to the box plus one output pixel, so the cost follows the vertices inside the tile: every
        pixel centre lies inside that rectangle, so it is labelled as by the whole shape.
        """
        from qupath_camseg.annotations import rasterize

        if self._tree is None:
            return np.full((out_size[1], out_size[0]), self.fill, np.uint8)
        x, y, w, h = box_px
        hits = np.sort(self._tree.query(shapely.box(x, y, x + w, y + h)))
        if hits.size == 0:
            return np.full((out_size[1], out_size[0]), self.fill, np.uint8)
        shapes = [self.shapes[i] for i in hits]
        clip = np.flatnonzero(self._clip[hits])
        if clip.size:
            mx, my = w / out_size[0], h / out_size[1]  # one output pixel, level-0 px
            geoms = np.array([shapes[j][0] for j in clip], dtype=object)
            for j, g in zip(clip, shapely.clip_by_rect(geoms, x - mx, y - my, x + w + mx, y + h + my)):
                shapes[j] = (g, shapes[j][1])
        return rasterize(shapes, box_px, out_size, fill=self.fill)

    def inside_point(self, label: int, rng: np.random.Generator) -> tuple[float, float]:
        """A uniformly random point inside target class ``label`` (area-weighted over its parts)."""
        parts, area_w, _ = self._parts[label]
        part = parts[int(rng.choice(len(parts), p=area_w))]
        x0, y0, x1, y1 = part.bounds
        for _ in range(20):
            xs, ys = rng.uniform(x0, x1, 64), rng.uniform(y0, y1, 64)
            inside = np.flatnonzero(shapely.contains_xy(part, xs, ys))
            if inside.size:
                return float(xs[inside[0]]), float(ys[inside[0]])
        point = part.representative_point()  # very thin shapes
        return float(point.x), float(point.y)

    def border_point(self, label: int, rng: np.random.Generator) -> tuple[float, float]:
        """A random point on the outline of target class ``label`` (length-weighted)."""
        parts, _, length_w = self._parts[label]
        part = parts[int(rng.choice(len(parts), p=length_w))]
        point = shapely.line_interpolate_point(part.exterior, rng.random(), normalized=True)
        return float(point.x), float(point.y)


def build_shapes(
    objs: Sequence[Any], class_to_label: dict[str, int], *, background_classes: Sequence[str] = ()
) -> tuple[list[tuple[Any, int]], dict[int, MultiPolygon]]:
    """Paint order and target regions from annotations (``QPObject``s, children included).

    Same priority as :func:`qupath_camseg.annotations.masks.label_mask`: larger shapes first (a small island
    annotated inside a larger region wins), ``Ignore*`` last. Classes in ``background_classes``
    (any other named class) paint 0. Returns ``(shapes, regions)``.
    """
    from qupath_camseg.annotations import is_ignore_class, iter_objects

    labelled: list[tuple[Any, int]] = []
    ignored: list[tuple[Any, int]] = []
    by_label: dict[int, list[Any]] = {}
    for obj in iter_objects(objs):
        if obj.object_type != "annotation" or not obj.is_area:
            continue
        name = obj.classification
        if name in class_to_label:
            label = class_to_label[name]
            labelled.append((obj.geometry, label))
            by_label.setdefault(label, []).append(obj.geometry)
        elif is_ignore_class(name):
            ignored.append((obj.geometry, IGNORE_INDEX))
        elif name is not None and name in background_classes:
            labelled.append((obj.geometry, 0))
    labelled.sort(key=lambda s: -s[0].area)
    shapes = labelled + ignored
    regions: dict[int, MultiPolygon] = {}
    for label, geoms in by_label.items():
        region = shapely.union_all(geoms)
        polys = [p for p in getattr(region, "geoms", [region]) if isinstance(p, Polygon) and p.area > 0]
        if polys:
            regions[label] = MultiPolygon(polys)
    return shapes, regions


def prepare_image(
    *,
    name: str,
    entry_id: str,
    path: str | os.PathLike[str],
    objs: Sequence[Any],
    class_to_label: dict[str, int],
    background_classes: Sequence[str],
    unannotated: str,
    mpp: float,
    tile_px: int,
    min_tissue: float,
    mpp_override: float | None = None,
) -> LabelledImage:
    """Open a slide once: pixel size, tissue mask and tissue tile origins; build its labels."""
    from qupath_camseg.wsi import detect_tissue, open_slide

    with open_slide(path, mpp=mpp_override) as slide:
        slide_mpp = float(slide.mpp)
        dims = (int(slide.dimensions[0]), int(slide.dimensions[1]))
        tissue = detect_tissue(slide)
    tile0 = level0_size(tile_px, mpp, slide_mpp)
    tiles = tissue_tiles(dims, tissue, tile0, tile0 / 2, min_tissue)
    grid = tissue_tiles(dims, tissue, tile0, tile0, 0.01)
    shapes, regions = build_shapes(objs, class_to_label, background_classes=background_classes)
    return LabelledImage(
        name=name,
        entry_id=entry_id,
        path=str(path),
        slide_mpp=slide_mpp,
        dimensions=dims,
        tile_px_level0=tile0,
        shapes=shapes,
        fill=IGNORE_INDEX if unannotated == "ignore" else 0,
        regions=regions,
        tissue_xy=_origins(tiles),
        grid_xy=_origins(grid),
        mpp_override=mpp_override,
    )


def val_tiles(
    images: Sequence[LabelledImage], *, max_tiles: int, seed: int
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Validation tiles ``(image index, level-0 box)``: each image's non-overlapping tissue grid.

    When there are more than ``max_tiles``, a fixed random subset (``seed``) is kept.
    """
    out: list[tuple[int, tuple[int, int, int, int]]] = []
    for i, img in enumerate(images):
        size = int(round(img.tile_px_level0))
        out.extend((i, (int(x), int(y), size, size)) for x, y in img.grid_xy)
    if len(out) > max_tiles:
        rng = np.random.default_rng([seed, 7919])
        keep = np.sort(rng.choice(len(out), max_tiles, replace=False))
        out = [out[k] for k in keep]
    return out


def _origins(tiles: Sequence[tuple[int, int, int, int]]) -> npt.NDArray[np.int64]:
    return np.array([(t[0], t[1]) for t in tiles], np.int64).reshape(-1, 2)


class _SlideReader:
    """Lazily opened slide handles, one set per process (DataLoader worker); never pickled."""

    def __init__(self, images: Sequence[LabelledImage], mpp: float, tile_px: int) -> None:
        self.images = list(images)
        self.mpp = mpp
        self.tile_px = tile_px
        self._handles: dict[int, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def read(self, index: int, box_px: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
        from qupath_camseg.wsi import open_slide

        if self._pid != os.getpid():  # forked worker: never share the parent's file handles
            self._handles, self._pid = {}, os.getpid()
        slide = self._handles.get(index)
        if slide is None:
            img = self.images[index]
            slide = self._handles[index] = open_slide(img.path, mpp=img.mpp_override)
        return np.asarray(slide.read_region_mpp(box_px, self.mpp, out_size=(self.tile_px, self.tile_px)))

    def close(self) -> None:
        for slide in self._handles.values():
            slide.close()
        self._handles = {}


def _to_tensors(rgb: npt.NDArray[np.uint8], label: npt.NDArray[np.uint8]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` uint8 tensor; label ``(H, W)`` uint8 tensor.

    The inputs may be strided views (a dihedral transform): each is copied exactly once.
    """
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), torch.from_numpy(np.ascontiguousarray(label))


class TrainTileDataset(torch.utils.data.Dataset):
    """Class-balanced random tiles. Index with a key ``(epoch, i)`` from :class:`TileSampler`.

    Returns ``(image uint8 (3, T, T), label uint8 (T, T), photometric params float32 (9,))``
    (dihedral transforms already applied); convert to float and apply
    :func:`qupath_camseg.train.augment.photometric` on the device.
    """

    def __init__(
        self,
        images: Sequence[LabelledImage],
        *,
        mpp: float,
        tile_px: int,
        seed: int,
        sampling: SamplingConfig = SamplingConfig(),  # noqa: B008 - frozen dataclass
        augment: AugmentConfig | None = AugmentConfig(),  # noqa: B008 - frozen dataclass
    ) -> None:
        self.reader = _SlideReader(images, mpp, tile_px)
        self.images = self.reader.images
        self.tile_px, self.seed, self.sampling, self.augment = tile_px, seed, sampling, augment
        labels = sorted({lab for img in self.images for lab in img.regions})
        self._labels = labels
        # per target label: image weights by area; tissue: weights by number of tissue tiles
        self._label_w = {lab: _normalise([img.region_area(lab) for img in self.images]) for lab in labels}
        self._tissue_w = _normalise([float(len(img.tissue_xy)) for img in self.images])
        inside, border = (sampling.inside_fraction, sampling.border_fraction) if labels else (0.0, 0.0)
        self._kind_p = np.array([inside, border, max(0.0, 1.0 - inside - border)])
        if self._tissue_w is None:  # no tissue tile anywhere: only annotated regions
            self._kind_p[2] = 0.0
        self._kind_p = self._kind_p / self._kind_p.sum()

    def __len__(self) -> int:  # keys are drawn by TileSampler; length is not meaningful
        return 2**31 - 1

    def sample_box(self, rng: np.random.Generator) -> tuple[int, tuple[int, int, int, int]]:
        """Draw ``(image index, level-0 box)`` for one training tile."""
        kind = int(rng.choice(3, p=self._kind_p))
        if kind < 2:
            label = self._labels[int(rng.integers(len(self._labels)))]
            idx = int(rng.choice(len(self.images), p=self._label_w[label]))
            img = self.images[idx]
            cx, cy = img.inside_point(label, rng) if kind == 0 else img.border_point(label, rng)
        else:
            idx = int(rng.choice(len(self.images), p=self._tissue_w))
            img = self.images[idx]
            ox, oy = img.tissue_xy[int(rng.integers(len(img.tissue_xy)))]
            cx, cy = ox + img.tile_px_level0 / 2, oy + img.tile_px_level0 / 2
        t0 = img.tile_px_level0
        jitter = self.sampling.jitter * t0
        cx, cy = cx + rng.uniform(-jitter, jitter), cy + rng.uniform(-jitter, jitter)
        w, h = img.dimensions
        x = min(max(cx - t0 / 2, 0.0), max(w - t0, 0.0))
        y = min(max(cy - t0 / 2, 0.0), max(h - t0, 0.0))
        size = int(round(t0))
        return idx, (int(round(x)), int(round(y)), size, size)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        idx, box = self.sample_box(rng)
        rgb = self.reader.read(idx, box)
        label = self.images[idx].label_tile(box, (self.tile_px, self.tile_px))
        params = IDENTITY_PARAMS
        if self.augment is not None:
            rgb, label, params = augment_tile(rgb, label, rng, self.augment, copy=False)
        return (*_to_tensors(rgb, label), torch.from_numpy(params))


class ValTileDataset(torch.utils.data.Dataset):
    """Fixed validation tiles (no augmentation); index ``k`` → ``(image (3, T, T), label (T, T))``."""

    def __init__(
        self,
        images: Sequence[LabelledImage],
        tiles: Sequence[tuple[int, tuple[int, int, int, int]]],
        *,
        mpp: float,
        tile_px: int,
    ) -> None:
        self.reader = _SlideReader(images, mpp, tile_px)
        self.images = self.reader.images
        self.tiles = list(tiles)
        self.tile_px = tile_px

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, box = self.tiles[k]
        rgb = self.reader.read(idx, box)
        return _to_tensors(rgb, self.images[idx].label_tile(box, (self.tile_px, self.tile_px)))


class TileSampler(torch.utils.data.Sampler):
    """Keys ``(epoch, i)`` for one epoch of ``steps × batch_size × world_size`` tiles.

    Rank ``r`` of ``world_size`` gets ``i ≡ r (mod world_size)``, so ranks never repeat a tile
    and the union over ranks equals the single-process epoch. :meth:`set_epoch` with
    ``skip_batches`` resumes mid-epoch exactly where a checkpoint left off.
    """

    def __init__(self, steps_per_epoch: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, *, skip_batches: int = 0) -> None:
        """Iterate epoch ``epoch`` next, starting after ``skip_batches`` batches."""
        self.epoch, self.skip_batches = epoch, skip_batches

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip_batches) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = self.skip_batches * self.batch_size
        for j in range(start, self.steps_per_epoch * self.batch_size):
            yield (self.epoch, j * self.world_size + self.rank)


def _normalise(weights: Sequence[float]) -> npt.NDArray[np.float64] | None:
    w = np.asarray(weights, np.float64)
    total = w.sum()
    return None if not math.isfinite(total) or total <= 0 else w / total


@dataclass
class TrainingData:
    """The images of a training run, split by slide, and the classes (output-channel order)."""

    train_images: list[LabelledImage]
    val_images: list[LabelledImage]
    classes: list[dict[str, Any]]
    project: str
    summary: dict[str, Any]


def _usable(objs: Sequence[Any]) -> list[Any]:
    """The user's area annotations (our own predictions are never training labels)."""
    from qupath_camseg.annotations import is_ours, iter_objects

    return [
        o
        for o in objs
        if not is_ours(o) and any(c.object_type == "annotation" and c.is_area for c in iter_objects([o]))
    ]


def _split(names: list[str], positive: set[str], fraction: float, seed: int) -> set[str]:
    """Hold out about ``fraction`` of the slides (≥ 1 when there are ≥ 2), keeping slides with the
    target class on both sides when possible. Deterministic in ``seed``."""
    n = len(names)
    if n < 2:
        return set()
    rng = np.random.default_rng([seed, 31337])
    pos = [names[i] for i in rng.permutation(n) if names[i] in positive]
    neg = [names[i] for i in rng.permutation(n) if names[i] not in positive]
    n_val = min(n - 1, max(1, round(fraction * n)))
    k_pos = min(max(round(n_val * len(pos) / n), 1 if len(pos) >= 2 else 0), max(len(pos) - 1, 0))
    k_neg = min(n_val - k_pos, len(neg))
    return set(pos[:k_pos] + neg[:k_neg])


def collect_images(
    project_path: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    mpp: float,
    tile_px: int,
    images: Sequence[str] = (),
    val_images: Sequence[str] = (),
    val_fraction: float = 0.2,
    unannotated: str = "negative",
    include_unannotated: bool = False,
    min_tissue: float = 0.25,
    slide_mpp: float | None = None,
    seed: int = 0,
) -> TrainingData:
    """Read a project's annotated entries, check the classes, split by slide and prepare images.

    Raises :class:`~qupath_camseg.errors.InvalidAnnotationError` when there is nothing to learn
    from or a class is unknown, :class:`~qupath_camseg.errors.ProjectError` for unknown image
    names, and slide errors (missing image, missing mpp) from the slides module.
    """
    from qupath_camseg.annotations import (
        default_class_color,
        is_ignore_class,
        iter_objects,
    )
    from qupath_camseg.errors import InvalidAnnotationError, ProjectError
    from qupath_camseg.qupath import open_project

    project = open_project(project_path, "r")
    try:
        where = str(project.path)
        entries = [project.entry(n) for n in images] if images else list(project.entries)
        annotations = {e.entry_id: _usable(project.read_annotations(e)) for e in entries}
        found: dict[str, Any] = {}
        for objs in annotations.values():
            for o in iter_objects(objs):
                if o.object_type == "annotation" and o.is_area and o.classification:
                    found.setdefault(o.classification, o.color)
        if not any(annotations.values()):
            raise InvalidAnnotationError(
                f"no annotations in {where}: outline {classes[0]} regions in QuPath and export them with the "
                "camseg bridge (or import ASAP XML with qcamseg convert), then train again"
            )
        missing = [c for c in classes if c not in found]
        if missing:
            have = ", ".join(sorted(found)) or "none"
            raise InvalidAnnotationError(
                f"class {missing[0]!r} is not used by any annotation in {where} (classes found: {have}); "
                "pass --classes with classes that are annotated"
            )
        class_to_label = {c: i + 1 for i, c in enumerate(classes)}
        background = [c for c in found if c not in class_to_label and not is_ignore_class(c)]
        labelled = [e for e in entries if annotations[e.entry_id] or include_unannotated]
        by_name = {e.image_name: e for e in labelled}
        if val_images:
            val_ids = set()
            for name in val_images:
                e = project.entry(name)
                if e.entry_id not in {x.entry_id for x in labelled}:
                    raise ProjectError(
                        f"--val-images {name!r} has no annotations in {where}; validate on annotated images"
                    )
                val_ids.add(e.entry_id)
        else:
            positive = {
                e.image_name
                for e in labelled
                if any(o.classification in class_to_label for o in iter_objects(annotations[e.entry_id]))
            }
            held = _split(list(by_name), positive, val_fraction, seed)
            val_ids = {by_name[n].entry_id for n in held}
        if len(val_ids) >= len(labelled):
            raise ProjectError(
                f"every annotated image of {where} is a validation image; leave at least one to train on"
            )
        prepared: dict[str, LabelledImage] = {}
        for e in labelled:
            prepared[e.entry_id] = prepare_image(
                name=e.image_name,
                entry_id=e.entry_id,
                path=project.image_path(e),
                objs=annotations[e.entry_id],
                class_to_label=class_to_label,
                background_classes=background,
                unannotated=unannotated,
                mpp=mpp,
                tile_px=tile_px,
                min_tissue=min_tissue,
                mpp_override=slide_mpp,
            )
    finally:
        close = getattr(project, "close", None)
        if close is not None:
            close()
    train_imgs = [prepared[e.entry_id] for e in labelled if e.entry_id not in val_ids]
    val_imgs = [prepared[e.entry_id] for e in labelled if e.entry_id in val_ids]
    if not any(img.regions for img in train_imgs):
        raise InvalidAnnotationError(
            f"no training image of {where} has {', '.join(classes)} annotations (they are all held out for "
            "validation); annotate more images or choose --val-images"
        )
    class_list = [{"name": c, "color": list(found.get(c) or default_class_color(c))} for c in classes]
    um2_per_mm2 = 1e6

    def describe(img: LabelledImage, role: str) -> dict[str, Any]:
        area = {classes[lab - 1]: img.region_area(lab) * img.slide_mpp**2 / um2_per_mm2 for lab in img.regions}
        return {
            "name": img.name,
            "entry_id": img.entry_id,
            "role": role,
            "slide_mpp": img.slide_mpp,
            "area_mm2": area,
            "tissue_tiles": int(len(img.tissue_xy)),
        }

    summary = {
        "images": [describe(i, "train") for i in train_imgs] + [describe(i, "val") for i in val_imgs],
        "background_classes": background,
        "unannotated": unannotated,
    }
    return TrainingData(train_imgs, val_imgs, class_list, where, summary)
