"""``qcamseg synth`` (a QuPath project of synthetic slides with ground truth) and
``qcamseg import-annotations`` (ASAP XML / GeoJSON into a project entry).

Heavy imports (numpy, shapely, tifffile, paquo) happen inside functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from qupath_camseg.cli._options import mpp_type

if TYPE_CHECKING:
    from qupath_camseg.annotations import QPObject
    from qupath_camseg.qupath import ProjectEntry

__all__ = ["synth", "import_annotations"]

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
@click.option("--mpp", type=mpp_type(), default=0.25, show_default=True,
              help="Level-0 pixel size, µm/px.")
@click.option("--negatives", type=click.IntRange(min=0), default=0, show_default=True,
              help="How many of the slides are tumour-free (normal_NNN.tif).")
@click.option("--tile-px", type=click.IntRange(min=16), default=512, show_default=True,
              help="TIFF tile size (multiple of 16).")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it is not empty.")
@_DOOR
@click.option("--stain-shift", type=click.Choice(["none", "strong-h", "pale-e", "scanner", "random"]), default="none",
              show_default=True, help="Another stain profile: strong-h (haematoxylin ×1.5), pale-e (eosin ×0.5), "
              "scanner (other stain colours and light), random (each slide its own, from --seed).")
def synth(out_dir: Path, slides: int, width: int, height: int, seed: int, mpp: float, negatives: int,
          tile_px: int, overwrite: bool, door: str, stain_shift: str) -> None:
    """Write a QuPath project of synthetic lymph-node slides with their tumour outlines.

    \b
    OUT_DIR/project.qpproj          open it in QuPath (File > Project > Open project)
    OUT_DIR/images/*.tif            pyramidal tiled JPEG TIFFs with pixel size
    OUT_DIR/camseg/annotations/     ground truth: class Tumor, normal islands as holes
    """
    from qupath_camseg.synthetic import write_synthetic_project

    if negatives > slides:
        raise click.BadParameter(f"need --slides >= 1 and 0 <= --negatives <= --slides (got {slides}, {negatives})")
    result = write_synthetic_project(out_dir, slides=slides, width=width, height=height, seed=seed, mpp=mpp,
                                     negatives=negatives, tile_px=tile_px, overwrite=overwrite, door=door,
                                     stain_shift=stain_shift)
    for name, n, area_um2 in result.images:
        click.echo(f"{name}: {n} tumour annotation(s), {area_um2 / 1e6:.3f} mm² tumour")
    click.echo(f"QuPath project: {result.project_dir / 'project.qpproj'} (annotations via {', '.join(result.doors)})")
    click.echo(result.paquo_note)


def _check_on_image(file: Path, objs: list[QPObject], entry: ProjectEntry) -> list[str]:
    """Warnings for annotations that lie wholly or partly outside the entry's image (another
    image's annotations, or coordinates that are not level-0 px). They are imported as drawn: the
    user's objects are never changed. No check when the image cannot be opened here."""
    import shapely

    from qupath_camseg.errors import CamsegError
    from qupath_camseg.wsi import open_slide

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
    from qupath_camseg.annotations import read_asap_xml, read_geojson
    from qupath_camseg.errors import InvalidAnnotationError
    from qupath_camseg.qupath import open_project

    report: list[str] = []
    objs = read_asap_xml(file, report=report) if file.suffix.lower() == ".xml" else read_geojson(file, report=report)
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

