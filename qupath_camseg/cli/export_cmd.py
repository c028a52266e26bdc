"""``qcamseg export-qupath``: a trained model as a QuPath pixel classifier (runs without Python)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["export_qupath"]


@click.command("export-qupath")
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder to write (default: MODEL_DIR/qupath).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "both"]), default="onnx",
              show_default=True,
              help="onnx runs in plain QuPath (OpenCV); torchscript needs the Deep Java Library extension.")
@click.option("--padding", "padding_px", type=click.IntRange(min=0), default=None,
              help="Context in px (at the model's resolution) added on each side of every tile "
                   "[default: 32, raised to fit the network].")
@click.option("--tile-px", "tile_px", type=click.IntRange(min=1), default=None,
              help="Output tile size in px at the model's resolution [default: the training tile].")
@click.option("--name", default=None, help="Classifier name shown in QuPath [default: camseg-<model folder>].")
@click.option("--into-project", "project", type=click.Path(path_type=Path), default=None,
              help="Also install into this QuPath project's classifiers/pixel_classifiers/.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing export / project classifier of the same name (old files are backed up).")
def export_qupath(
    model_dir: Path,
    out_dir: Path | None,
    fmt: str,
    padding_px: int | None,
    tile_px: int | None,
    name: str | None,
    project: Path | None,
    overwrite: bool,
) -> None:
    """Export MODEL_DIR as a QuPath pixel classifier (Classify › Pixel classification › Load pixel classifier)."""
    from qupath_camseg.export import export_qupath as run_export
    from qupath_camseg.export import install_into_project, project_folder

    if project is not None:
        project_folder(project)  # fail before the export, not after it
    result = run_export(model_dir, out_dir, fmt=fmt, padding_px=padding_px, tile_px=tile_px, name=name,
                        overwrite=overwrite)  # fmt: skip
    click.echo(f"wrote {result.folder}")
    for key, path in result.classifiers.items():
        click.echo(f"  {path.name}  ({'OpenCV, core QuPath' if key == 'opencv' else 'Deep Java Library extension'})")
    click.echo(f"  {result.mpp:g} µm/px, tiles {result.tile_px} px + {result.padding_px} px context "
               f"(network input {result.input_px} px)")  # fmt: skip
    if result.max_abs_diff is not None:
        click.echo(f"  check: ONNX vs PyTorch max |Δprob| = {result.max_abs_diff:.1e}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    if project is not None:
        written = install_into_project(result, project, overwrite=overwrite)
        click.echo(f"installed {len(written)} files into {written[0].parent}")
        click.echo(f"In QuPath: Classify › Pixel classification › Load pixel classifier › {result.name}")
    else:
        click.echo(f"Next: copy it into a project with --into-project PROJECT (see {result.folder / 'README.md'})")
