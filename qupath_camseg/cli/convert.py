"""``qcamseg convert IN OUT``: ASAP XML ↔ QuPath GeoJSON (level-0 coordinates kept)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from qupath_camseg.annotations import QPObject

__all__ = ["convert"]

_XML = (".xml",)
_GEOJSON = (".geojson", ".json")


def _kind(path: Path, role: str) -> str:
    from qupath_camseg.errors import InvalidAnnotationError

    suffix = path.suffix.lower()
    if suffix in _XML:
        return "xml"
    if suffix in _GEOJSON:
        return "geojson"
    raise InvalidAnnotationError(
        f"{path}: cannot tell the {role} format from the extension {suffix or '(none)'!r}; "
        "use .xml (ASAP) or .geojson/.json (QuPath)"
    )


def _parse_class_map(items: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not OLD=NEW (e.g. metastases=Tumor)",
                                     param_hint="--class-map")
        old, new = (s.strip() for s in item.split("=", 1))
        if not old:
            raise click.BadParameter(f"{item!r} has an empty OLD class", param_hint="--class-map")
        out[old] = new or None
    return out


@click.command()
@click.argument("src", metavar="IN", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--qupath-version", type=click.Choice(["0.4", "0.3"]), default="0.4",
              show_default=True,
              help="GeoJSON dialect to write: 0.4 (also right for QuPath 0.5-0.7) or 0.3. "
                   "For QuPath 0.4.x with NaN measurements use 0.3.")
@click.option("--class-map", "class_map", multiple=True, metavar="OLD=NEW",
              help="Rename a class while converting (repeatable), e.g. metastases=Tumor. "
                   "OLD= (empty NEW) removes the class.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it already exists.")
def convert(src: Path, dst: Path, qupath_version: str, class_map: tuple[str, ...],
            overwrite: bool) -> None:
    """Convert annotations between ASAP XML (Camelyon16/17) and QuPath GeoJSON.

    The formats follow the file extensions: .xml is ASAP, .geojson or .json is QuPath.
    Coordinates stay level-0 pixels. ASAP tumour groups (Tumor, _0, _1, metastases) become
    class Tumor and _2 outlines become holes; GeoJSON holes in Tumor become _2 outlines in XML.

    \b
    Examples:
      qcamseg convert tumor_001.xml tumor_001.geojson
      qcamseg convert cells.geojson cells_qupath03.geojson --qupath-version 0.3
    """
    from qupath_camseg.annotations import read_asap_xml, read_geojson
    from qupath_camseg.errors import InvalidAnnotationError

    in_kind, out_kind = _kind(src, "input"), _kind(dst, "output")
    _check_paths(src, dst, overwrite=overwrite)
    mapping = _parse_class_map(class_map)
    report: list[str] = []
    objs = read_asap_xml(src, report=report) if in_kind == "xml" else read_geojson(src, report=report)
    if not objs and report:  # everything was skipped or dropped: say why instead of writing nothing
        why = report[-1].removeprefix(f"{src}: ")
        raise InvalidAnnotationError(f"{src}: nothing to convert ({why}); check it is the right file "
                                     "(QuPath: File > Export objects as GeoJSON; ASAP: Save annotations)")
    if mapping:
        objs = _rename_classes(objs, mapping)
    objs = _write(dst, objs, out_kind, qupath_version=qupath_version, report=report)
    _echo_summary(dst, objs, report)


def _check_paths(src: Path, dst: Path, *, overwrite: bool) -> None:
    """The input exists, and OUT is neither the input nor (without ``--overwrite``) an existing file."""
    from qupath_camseg.errors import InvalidAnnotationError

    if not src.is_file():
        raise InvalidAnnotationError(f"{src}: input file not found; check the path")
    if dst.exists() and dst.resolve() == src.resolve():
        raise InvalidAnnotationError(f"{dst}: OUT is the input file; choose another OUT "
                                     "(convert never overwrites its input)")
    if dst.exists() and not overwrite:
        raise InvalidAnnotationError(f"{dst}: already exists; pass --overwrite to replace it "
                                     "or choose another OUT")


def _rename_classes(objs: list[QPObject], mapping: dict[str, str | None]) -> list[QPObject]:
    """Copies of ``objs`` (children included) with classes renamed by ``--class-map``; a renamed
    object loses its colour (QuPath then shows the new class's colour)."""
    from qupath_camseg.annotations import copy_object, iter_objects

    objs = [copy_object(o) for o in objs]
    for o in iter_objects(objs):
        if o.classification in mapping:
            new = mapping[o.classification]
            if new != o.classification:
                o.classification, o.color = new, None
    return objs


def _write(dst: Path, objs: list[QPObject], out_kind: str, *, qupath_version: str,
           report: list[str]) -> list[QPObject]:
    """Write ``objs`` to ``dst`` as ASAP XML or GeoJSON of ``qupath_version``; returns what was
    written (QuPath 0.3 GeoJSON has no child objects: children become top-level objects)."""
    from qupath_camseg.annotations import copy_object, iter_objects, write_asap_xml, write_geojson

    if out_kind == "xml":
        write_asap_xml(dst, objs, report=report)
    else:
        if qupath_version == "0.3":
            objs = [copy_object(o, children=[]) for o in iter_objects(objs)]
        write_geojson(dst, objs, qupath_version=qupath_version)
    return objs


def _echo_summary(dst: Path, objs: list[QPObject], report: list[str]) -> None:
    """The notes (first 20 on stderr) and one line: objects written, how many with area, classes."""
    from qupath_camseg.annotations import iter_objects

    flat = list(iter_objects(objs))
    areas = sum(1 for o in flat if o.is_area)
    classes = sorted({o.classification or "(unclassified)" for o in flat})
    for note in report[:20]:
        click.echo(f"note: {note}", err=True)
    if len(report) > 20:
        click.echo(f"note: ... and {len(report) - 20} more", err=True)
    click.echo(f"wrote {len(flat)} objects ({areas} with area; classes: {', '.join(classes) or '-'})"
               f" to {dst}")
