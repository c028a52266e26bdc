"""A QuPath project of synthetic Camelyon-style slides with their ground truth (``qcamseg synth``).

Writes the slides (:mod:`qupath_camseg.synthetic.slides`), the project
(:mod:`qupath_camseg.qupath.file_project`) and the tumour outlines as annotations, through the
file door always and the paquo door when QuPath is installed. The whole project is built in a
temporary sibling folder and renamed into place, so an interrupted run leaves nothing
half-written. ``camseg/synth.json`` records every file synth wrote (:mod:`.manifest`), so that
``overwrite`` replaces only those: a QuPath project synth did not write is never replaced, and
the user's other files in the folder are kept.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from qupath_camseg.annotations import QPObject
from qupath_camseg.errors import OutputNotWritableError, QuPathNotFoundError
from qupath_camseg.qupath import FileProject, ImageInfo, PaquoProject, create_project, find_qupath_installation
from qupath_camseg.synthetic.manifest import MANIFEST, built_files, check_folder, move_into, record_manifest
from qupath_camseg.synthetic.slides import pyramid_dimensions, write_synthetic_slide
from qupath_camseg.synthetic.stain_shift import STAIN_SHIFTS, stain_shift

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


@dataclass(frozen=True)
class _Spec:
    """The project asked for (written as ``camseg/synth.json``, in this order): slide count,
    level-0 size in px, seed, level-0 µm/px, how many are tumour-free, TIFF tile size in px, stain
    shift (recorded only when not ``"none"``)."""

    slides: int
    width: int
    height: int
    seed: int
    mpp: float
    negatives: int
    tile_px: int
    stain_shift: str = "none"


def _slide_seed(seed: int, index: int) -> int:
    return seed * 10_007 + index


def write_synthetic_project(out_dir: str | os.PathLike[str], *, slides: int, width: int, height: int,
                            seed: int = 0, mpp: float = 0.25, negatives: int = 0, tile_px: int = 512,
                            overwrite: bool = False, door: str = "auto", stain_shift: str = "none") -> SynthResult:
    """Write a QuPath project of ``slides`` synthetic slides into ``out_dir``.

    Images go to ``out_dir/images/`` (``tumor_NNN.tif``; the last ``negatives`` are tumour-free
    ``normal_NNN.tif``), ground truth to ``camseg/annotations/<entryID>.geojson`` (one ``Tumor``
    annotation per metastasis, normal islands as holes) and, when paquo finds QuPath (``door``
    ``"auto"``/``"paquo"``), into the QuPath hierarchy too. Atomic: built in a temporary sibling
    folder and renamed into place. A non-empty ``out_dir`` is refused unless ``overwrite``, which
    replaces only the files an earlier synth recorded there; a QuPath project synth did not write
    is always refused. ``stain_shift`` (:data:`~qupath_camseg.synthetic.stain_shift.STAIN_SHIFTS`)
    renders every slide in another stain profile (``"random"``: each slide its own, drawn from the
    slide's seed).
    """
    spec = _Spec(slides, width, height, seed, mpp, negatives, tile_px, stain_shift)
    out = _check_request(out_dir, spec, door=door, overwrite=overwrite)
    qupath_dir, reason = (None, "not asked (--door files)") if door == "files" else find_qupath_installation()
    if door == "paquo" and qupath_dir is None:
        raise QuPathNotFoundError(f"--door paquo needs QuPath: {reason}")
    written, files = _build_atomically(out, spec)
    result = SynthResult(project_dir=out, images=[(name, len(objs), area) for name, objs, area in written],
                         doors=["files"])
    if qupath_dir is not None:
        with PaquoProject(out, "r+") as pq:
            for name, objs, _ in written:
                pq.add_annotations(name, objs)
        data = [p.relative_to(out).as_posix() for p in (out / "data").rglob("*") if p.is_file()]
        record_manifest(out, dataclasses.asdict(spec), files + data)  # QuPath's data/ is synth's too
        result.doors.append("paquo")
        result.paquo_note = reason
    else:
        result.paquo_note = f"annotations not written into QuPath's own data files: {reason}"
    return result


def _check_request(out_dir: str | os.PathLike[str], spec: _Spec, *, door: str, overwrite: bool) -> Path:
    """The absolute project folder, once the arguments make sense and the folder may be (re)written."""
    if spec.slides < 1 or not 0 <= spec.negatives <= spec.slides:
        raise ValueError(f"need slides >= 1 and 0 <= negatives <= slides (got {spec.slides}, {spec.negatives})")
    if spec.stain_shift not in STAIN_SHIFTS:
        raise ValueError(f"stain_shift must be one of {', '.join(STAIN_SHIFTS)}, not {spec.stain_shift!r}")
    if door not in ("auto", "files", "paquo"):
        raise ValueError(f"door must be 'auto', 'files' or 'paquo', not {door!r}")
    out = Path(out_dir).expanduser().absolute()
    check_folder(out, overwrite=overwrite)
    return out


def _build_atomically(out: Path, spec: _Spec) -> tuple[list[tuple[str, list[QPObject], float]], list[str]]:
    """Write the project in a temporary sibling folder and move it to ``out``; nothing is left
    behind on failure. Returns per image (name, ground-truth objects, tumour area in µm²), and the
    files written (relative POSIX paths)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "images").mkdir()
        with create_project(tmp, final_folder=out) as project:
            written = [_add_slide(project, tmp, out, spec, i) for i in range(spec.slides)]
        files = built_files(tmp)
        record = {k: v for k, v in dataclasses.asdict(spec).items() if k != "stain_shift" or v != "none"}
        record_manifest(tmp, record, files)
        move_into(tmp, out, files + [MANIFEST])
    except OutputNotWritableError as err:  # name the folder the user asked for, not our temporary one
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputNotWritableError(str(err).replace(str(tmp), str(out))) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written, files


def _add_slide(project: FileProject, tmp: Path, out: Path, spec: _Spec, i: int) -> tuple[str, list[QPObject], float]:
    """Write slide ``i`` into ``tmp/images``, add it to ``project`` (recorded at its place under
    ``out``) with its tumour outlines; returns (name, outlines, tumour area in µm²)."""
    tumor = i < spec.slides - spec.negatives
    name = f"{'tumor' if tumor else 'normal'}_{i + 1:03d}.tif"
    s = _slide_seed(spec.seed, i)
    shift = stain_shift(spec.stain_shift, s)
    truth = write_synthetic_slide(tmp / "images" / name, width=spec.width, height=spec.height, seed=s,
                                  mpp=spec.mpp, tile_px=spec.tile_px, tumor=tumor, stain_shift=shift)
    levels = tuple(pyramid_dimensions(spec.width, spec.height, spec.tile_px))
    entry = project.add_image(
        tmp / "images" / name, name=name, final_path=out / "images" / name,
        info=ImageInfo(spec.width, spec.height, levels, spec.mpp, spec.tile_px),
        metadata={"synthetic": "true", "seed": str(s), "tumor": "yes" if tumor else "no", "mpp": f"{spec.mpp:g}",
                  **({"stain_shift": shift.name} if shift is not None else {})},
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
    return name, objs, float(sum(p.area for p in polys)) * spec.mpp * spec.mpp
