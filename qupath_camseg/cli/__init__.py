"""The ``qcamseg`` command line: one click group, one module per command (``cli/*.py``).

Commands are registered by name → ``"module:function"`` and imported only when used (or when
``--help`` lists them); command modules import heavy libraries (torch, tiffslide, paquo) inside
their function bodies, so ``qcamseg --help`` is instant and never starts a JVM.

:func:`main` is callable from Python (``main(["predict", ...]) -> int``). Errors the user can fix
(:class:`~qupath_camseg.errors.CamsegError`), usage errors and operating-system errors
(unreadable files, full disk) print one line ``error: ...`` on stderr and exit 2; ``--debug``
shows the traceback before that line (same exit code). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

import click

from qupath_camseg import __version__

__all__ = ["cli", "main"]

# name -> "module:attribute" (module relative to qupath_camseg.cli). Keep sorted by flow.
_COMMANDS: dict[str, str] = {
    "synth": "project_cmds:synth",
    "import-annotations": "project_cmds:import_annotations",
    "train": "train_cmd:train",
    "predict": "predict_cmd:predict",
    "convert": "convert:convert",
    "evaluate": "evaluate_cmd:evaluate",
    "figure": "evaluate_cmd:figure",
    "export-qupath": "export_cmd:export_qupath",
    "install-scripts": "scripts_cmd:install_scripts",
    "demo": "demo:demo",
    "doctor": "doctor:doctor",
}


class _LazyGroup(click.Group):
    """A click group that imports a command's module only when the command is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"qupath_camseg.cli.{module_name}")
        return getattr(module, attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="qcamseg")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """qupath-camseg: train a tumour segmentation model from QuPath annotations, run it over
    whole slides, and get the results back into QuPath.

    \b
    Typical flow:
      qcamseg synth DEMO_PROJECT            # a QuPath project of synthetic slides
      qcamseg train PROJECT --out MODEL     # learn from the project's annotations
      qcamseg predict PROJECT --model MODEL # tumour detections, annotations, heatmaps
      qcamseg evaluate PROJECT              # Dice, Camelyon16 FROC, slide AUC
      qcamseg demo                          # all of the above on generated data
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # tifffile logs what it cannot read (a truncated slide) as ERROR before our own one-line error
    # says the same with the fix; its records are for --debug
    logging.getLogger("tifffile").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def _click_message(err: click.ClickException) -> str:
    """A click error as one line, pointing at the command's ``--help`` for usage errors."""
    msg = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    if isinstance(err, click.UsageError) and ctx is not None:
        msg = f"{msg.rstrip('.')}; see '{ctx.command_path} --help'"
    return msg


def _os_message(err: OSError) -> str:
    """An operating-system error (not one of ours) as one line naming the file and the fix."""
    what = err.strerror or type(err).__name__
    where = f"{err.filename}: " if err.filename is not None else ""
    if err.errno == errno.ENOSPC:
        fix = "free disk space or write somewhere else"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "check the file's permissions or choose another location"
    elif err.errno == errno.ENOENT:
        fix = "check the path"
    else:
        fix = "check the path, its permissions and free disk space"
    return f"{where}{what}; {fix} (--debug shows the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qcamseg`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    from qupath_camseg._runtime import prefer_passive_omp_wait
    from qupath_camseg.errors import CamsegError

    prefer_passive_omp_wait()  # before any command imports torch (OpenMP reads it once)
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="qcamseg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as err:  # usage errors: one line, like ours
        click.echo(f"error: {_click_message(err)}", err=True)
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except CamsegError as err:
        if debug:  # the traceback first; the exit code stays the same (scripts check it)
            traceback.print_exc()
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted; finished work is kept and a rerun resumes.", err=True)
        return 130
    except OSError as err:  # the machine, not a bug: unreadable input, full disk, permissions
        if debug:
            traceback.print_exc()
        click.echo(f"error: {_os_message(err)}", err=True)
        return 2
    return rv if isinstance(rv, int) else 0
