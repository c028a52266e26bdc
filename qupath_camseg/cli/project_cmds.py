"""``qcamseg synth`` (a QuPath project of synthetic slides with ground truth) and
``qcamseg import-annotations`` (ASAP XML / GeoJSON into a project entry).

Heavy imports (numpy, shapely, tifffile, paquo) happen inside functions.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

__all__ = ["synth", "import_annotations", "write_synthetic_project", "SynthResult"]

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
    from qupath_camseg.errors import OutputNotWritableError, ProjectExistsError, QuPathNotFoundError
    from qupath_camseg.geojson import QPObject
    from qupath_camseg.paquo_door import PaquoProject, find_qupath_installation
    from qupath_camseg.project import ImageInfo, create_project
    from qupath_camseg.synthetic import pyramid_dimensions, write_synthetic_slide

    if slides < 1 or not 0 <= negatives <= slides:
        raise click.BadParameter(f"need --slides >= 1 and 0 <= --negatives <= --slides (got {slides}, {negatives})")
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


_DOOR = click.option(
    "--door", type=click.Choice(["auto", "files", "paquo"]), default="auto", show_default=True,
    help="auto: QuPath's own data files via paquo when QuPath is installed, else camseg/annotations/.",
)


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--slides", type=click.IntRange(min=1), default=4, show_default=True, help="Number of slides.")
@click.option("--width", type=click.IntRange(min=256), default=8192, show_default=True, help="Slide width, level-0 px.")
@click.option("--height", type=click.IntRange(min=256), default=8192, show_default=True, help="Slide height, level-0 px.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same project).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=0.25, show_default=True,
              help="Level-0 pixel size, µm/px.")
@click.option("--negatives", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many of the slides are tumour-free (normal_NNN.tif).")
@click.option("--tile-px", type=click.IntRange(min=16), default=512, show_default=True,
              help="TIFF tile size (multiple of 16).")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it is not empty.")
@_DOOR
def synth(out_dir: Path, slides: int, width: int, height: int, seed: int, mpp: float, negatives: int,
          tile_px: int, overwrite: bool, door: str) -> None:
    """Write a QuPath project of synthetic lymph-node slides with their tumour outlines.

    \b
    OUT_DIR/project.qpproj          open it in QuPath (File > Project > Open project)
    OUT_DIR/images/*.tif            pyramidal tiled JPEG TIFFs with pixel size
    OUT_DIR/camseg/annotations/     ground truth: class Tumor, normal islands as holes
    """
    result = write_synthetic_project(out_dir, slides=slides, width=width, height=height, seed=seed, mpp=mpp,
                                     negatives=negatives, tile_px=tile_px, overwrite=overwrite, door=door)
    for name, n, area_um2 in result.images:
        click.echo(f"{name}: {n} tumour annotation(s), {area_um2 / 1e6:.3f} mm² tumour")
    click.echo(f"QuPath project: {result.project_dir / 'project.qpproj'} (annotations via {', '.join(result.doors)})")
    click.echo(result.paquo_note)


def _check_on_image(file: Path, objs: list[Any], entry: Any) -> list[str]:
    """Warnings for annotations that lie wholly or partly outside the entry's image (another
    image's annotations, or coordinates that are not level-0 px). They are imported as drawn: the
    user's objects are never changed. No check when the image cannot be opened here."""
    import shapely

    from qupath_camseg.errors import CamsegError
    from qupath_camseg.slides import open_slide

    if entry.path is None:
        return []
    try:
        with open_slide(entry.path) as slide:
            w, h = slide.dimensions
    except (CamsegError, OSError):
        return []
    frame = shapely.box(0, 0, w, h)
    outside = [o for o in objs if not o.geometry.intersects(frame)]
    partly = sum(1 for o in objs if o.geometry.intersects(frame) and not frame.contains(o.geometry))
    notes = []
    if outside:
        x0, y0, x1, y1 = shapely.union_all([o.geometry for o in outside]).bounds
        what = f"all {len(objs)}" if len(outside) == len(objs) else f"{len(outside)} of {len(objs)}"
        notes.append(
            f"{what} annotation(s) of {file} lie outside image {entry.image_name!r} ({w}x{h} px; they span "
            f"x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}); imported as drawn - check they belong to this "
            "image and are in level-0 (full-resolution) pixels"
        )
    if partly:
        notes.append(f"{partly} annotation(s) of {file.name} extend beyond {entry.image_name!r} ({w}x{h} px); "
                     "imported as drawn")
    return notes


@click.command("import-annotations")
@click.argument("project", type=click.Path(path_type=Path))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--image", "image", required=True, help="Image name (or entry ID) in the project.")
@click.option("--replace", is_flag=True, help="Replace the image's annotations instead of adding (backed up first).")
@_DOOR
def import_annotations(project: Path, file: Path, image: str, replace: bool, door: str) -> None:
    """Add the annotations of FILE (ASAP XML or QuPath GeoJSON) to an image of PROJECT.

    The image's existing annotations are kept (unless --replace) and backed up first to
    PROJECT/camseg/backups/.
    """
    from qupath_camseg.errors import InvalidAnnotationError
    from qupath_camseg.project import open_project

    report: list[str] = []
    if file.suffix.lower() == ".xml":
        from qupath_camseg.asap import read_asap_xml

        objs = read_asap_xml(file, report=report)
    else:
        from qupath_camseg.geojson import read_geojson

        objs = read_geojson(file, report=report)
    for note in report:
        click.echo(f"warning: {note}", err=True)
    if not objs:
        why = f" ({report[-1].removeprefix(f'{file}: ')})" if report else ""
        raise InvalidAnnotationError(f"{file} holds no annotations{why}; check it is the right file "
                                     "(in QuPath: File > Export objects as GeoJSON)")
    with open_project(project, "r+", door=door) as p:
        entry = p.entry(image)
        for note in _check_on_image(file, objs, entry):
            click.echo(f"warning: {note}", err=True)
        if replace:
            backup = p.write_annotations(entry, objs, keep_user=False)
        else:
            backup = p.add_annotations(entry, objs)
        total = len(p.read_annotations(entry))
    verb = "replaced the annotations of" if replace else "added to"
    click.echo(f"{len(objs)} annotation(s) from {file.name} {verb} {entry.image_name!r} "
               f"(entry {entry.entry_id}; now {total}) via {p.door}")
    if backup is not None:
        click.echo(f"backup: {backup}")

