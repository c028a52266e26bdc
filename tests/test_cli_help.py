"""``qcamseg --help`` and every command's ``--help`` are instant: no torch, slide readers, paquo/JVM,
numpy or matplotlib are imported (paquo and wsinfer start heavy work at import; we do not)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qupath_camseg import __version__
from qupath_camseg.cli import _COMMANDS, main

HEAVY = ("torch", "tiffslide", "openslide", "paquo", "jpype", "skimage", "shapely", "matplotlib", "numpy")


@pytest.mark.parametrize("args", [["--help"], *[[name, "--help"] for name in _COMMANDS]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys\nfrom qupath_camseg.cli import main\n"
        f"rc = main({args!r})\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", f"{args}: {proc.stdout.splitlines()[-1]}"


def test_version_and_module_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "qupath_camseg", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_unknown_command_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-command" in err[0]
