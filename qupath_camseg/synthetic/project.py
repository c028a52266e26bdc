"""A QuPath project of synthetic Camelyon-style slides with their ground truth (``qcamseg synth``).

Writes the slides (:mod:`qupath_camseg.synthetic.slides`), the project (:mod:`qupath_camseg.qupath.project`)
and the tumour outlines as annotations, through the file door always and the paquo door when
QuPath is installed. The whole project is built in a temporary sibling folder and renamed into
place, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["write_synthetic_project", "SynthResult", "TUMOR_COLOR"]

TUMOR_COLOR = (200, 0, 0)  # QuPath's default colour for "Tumor"


@dataclass
class SynthResult:
    """What :func:`write_synthetic_project` wrote: the project folder, per image (name, number of
    tumour annotations, tumour area in µm²), and which doors received the annotations."""

    project_dir: Path
    images: list[tuple[str, int, float]] = field(default_factory=list)
    doors: list[str] = field(default_factory=list)
    paquo_note: str = ""


def _slide_seed(seed: int, index: int) -> int:
    return seed * 10_007 + index


def write_synthetic_project(out_dir: str | os.PathLike[str], *, slides: int, width: int, height: int,
                            seed: int = 0, mpp: float = 0.25, negatives: int = 0, tile_px: int = 512,
                            overwrite: bool = False, door: str = "auto") -> SynthResult:
    """Write a QuPath project of ``slides`` synthetic slides into ``out_dir``.

    Images go to ``out_dir/images/`` (``tumor_NNN.tif``; the last ``negatives`` are tumour-free
    ``normal_NNN.tif``), ground truth to ``camseg/annotations/<entryID>.geojson`` (one ``Tumor``
    annotation per metastasis, normal islands as holes) and, when paquo finds QuPath (``door``
    ``"auto"``/``"paquo"``), into the QuPath hierarchy too. Atomic: built in a temporary sibling
    folder and renamed into place. A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    from qupath_camseg.annotations import QPObject
    from qupath_camseg.errors import (
        OutputNotWritableError,
        ProjectExistsError,
        QuPathNotFoundError,
    )
    from qupath_camseg.qupath import (
        ImageInfo,
        PaquoProject,
        create_project,
        find_qupath_installation,
    )
    from qupath_camseg.synthetic.slides import pyramid_dimensions, write_synthetic_slide

    if slides < 1 or not 0 <= negatives <= slides:
        raise ValueError(f"need slides >= 1 and 0 <= negatives <= slides (got {slides}, {negatives})")
    if door not in ("auto", "files", "paquo"):
        raise ValueError(f"door must be 'auto', 'files' or 'paquo', not {door!r}")
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ProjectExistsError(f"{out} is a file; choose a folder name for the project")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ProjectExistsError(f"{out} is not empty; choose a new folder or pass --overwrite to replace it")
    qupath_dir, reason = (None, "not asked (--door files)") if door == "files" else find_qupath_installation()
    if door == "paquo" and qupath_dir is None:
        raise QuPathNotFoundError(f"--door paquo needs QuPath: {reason}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    result = SynthResult(project_dir=out)
    objs_by_name: dict[str, list[Any]] = {}
    try:
        (tmp / "images").mkdir()
        with create_project(tmp, final_folder=out) as project:
            for i in range(slides):
                tumor = i < slides - negatives
                name = f"{'tumor' if tumor else 'normal'}_{i + 1:03d}.tif"
                s = _slide_seed(seed, i)
                truth = write_synthetic_slide(tmp / "images" / name, width=width, height=height, seed=s,
                                              mpp=mpp, tile_px=tile_px, tumor=tumor)
                info = ImageInfo(width, height, tuple(pyramid_dimensions(width, height, tile_px)), mpp, tile_px)
                entry = project.add_image(
                    tmp / "images" / name, name=name, final_path=out / "images" / name, info=info,
                    metadata={"synthetic": "true", "seed": str(s), "tumor": "yes" if tumor else "no",
                              "mpp": f"{mpp:g}"},
                )
                polys = [] if truth.tumor.is_empty else list(truth.tumor.geoms)
                objs = [
                    # ground truth, deliberately NOT marked as ours (CAMSEG_METADATA): training and
                    # evaluation treat it like a pathologist's outline, and rewrites never drop it
                    QPObject(geometry=p, classification="Tumor", color=TUMOR_COLOR, name=f"Tumor {k + 1}",
                             metadata={"source": "qcamseg synth ground truth"})
                    for k, p in enumerate(polys)
                ]
                project.add_annotations(entry, objs)
                objs_by_name[name] = objs
                result.images.append((name, len(objs), float(sum(p.area for p in polys)) * mpp * mpp))
            params = {"slides": slides, "width": width, "height": height, "seed": seed, "mpp": mpp,
                      "negatives": negatives, "tile_px": tile_px}
            from qupath_camseg._io import atomic_write_json

            atomic_write_json(project.camseg_dir / "synth.json", params)
        _move_into_place(tmp, out)
    except OutputNotWritableError as err:  # name the folder the user asked for, not our temporary one
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputNotWritableError(str(err).replace(str(tmp), str(out))) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.doors.append("files")
    if qupath_dir is not None:
        with PaquoProject(out, "r+") as pq:
            for name, objs in objs_by_name.items():
                pq.add_annotations(name, objs)
        result.doors.append("paquo")
        result.paquo_note = reason
    else:
        result.paquo_note = f"annotations not written into QuPath's own data files: {reason}"
    return result


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
