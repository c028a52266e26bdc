"""``qcamseg install-scripts``: put the camseg QuPath scripts into QuPath's scripts menu."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["install_scripts"]


@click.command("install-scripts")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to copy the scripts into [default: <newest ~/QuPath/v0.N>/scripts, QuPath's "
    "Automate › User scripts…].",
)
def install_scripts(folder: Path | None) -> None:
    """Copy the camseg scripts (train, predict, import…) where QuPath's Automate menu finds them.

    \b
    QuPath 0.5/0.6: Automate › User scripts… lists ~/QuPath/v0.N/scripts (the default here).
    Any version:    Automate › Shared scripts… › Set script directory… and pick the folder shown.
    Then run "camseg Configure Python" once from that menu.
    """
    from qupath_camseg.qupath import install_scripts as _install

    result = _install(folder)
    n_total = len(result.copied) + len(result.unchanged)
    click.echo(f"{n_total} camseg scripts in {result.folder} ({len(result.copied)} copied, "
               f"{len(result.unchanged)} already up to date)")
    for backup in result.backups:
        click.echo(f"  your edited copy was kept as {backup.name}")
    click.echo("In QuPath:")
    click.echo(f"  0.5 / 0.6: Automate › User scripts… (if {result.folder} is your QuPath user "
               "directory's scripts folder)")
    click.echo(f"  any version: Automate › Shared scripts… › Set script directory… › {result.folder}")
    click.echo('Then run "camseg Configure Python" once and give it this Python:')
    click.echo(f"  {Path(sys.executable).absolute()}")
