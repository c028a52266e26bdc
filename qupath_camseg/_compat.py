"""The module paths of qupath-camseg 0.1 (a flat package), kept importable for one release.

0.2 grouped the modules by stage (``wsi/``, ``annotations/``, ``qupath/``, ``model/``, ``train/``,
``predict/``, ``evaluate/``, ``export/``, ``synthetic/``; see CHANGELOG.md). Code that still
imports an old path, e.g. ``from qupath_camseg.slides import open_slide``, keeps working: the
old name is served by a stand-in module that looks each public name up in the stage packages
and emits one :class:`DeprecationWarning` naming the new path. Private names (``_x``) of the old
modules are not served. This module is removed in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["MOVED", "install", "moved_names"]

#: Old module (``qupath_camseg.<old>``) → the packages that now hold its public names, in order.
MOVED: dict[str, tuple[str, ...]] = {
    "slides": ("wsi",), "tissue": ("wsi",), "tiling": ("wsi",), "heatmap": ("wsi",),
    "qpobject": ("annotations",), "geojson": ("annotations",), "geojson_read": ("annotations",),
    "_geojson_validate": ("annotations",), "asap": ("annotations",), "masks": ("annotations",),
    "project": ("qupath",), "paquo_door": ("qupath",), "scripts": ("qupath",),
    "bundle": ("model",),
    "augment": ("train",), "data": ("train",), "train_config": ("train",), "train_run": ("train",),
    "chunks": ("predict",), "tile_reader": ("predict",), "blending": ("predict",), "outputs": ("predict",),
    "metrics": ("evaluate",), "detections": ("evaluate",), "evaluation": ("evaluate", "wsi"),
    "figures": ("evaluate",),
    "export_onnx": ("export",), "pixel_classifier": ("export",), "export_qupath": ("export",),
    "synth_project": ("synthetic",),
}
_PACKAGE = __name__.rpartition(".")[0]


class _MovedModule(types.ModuleType):
    """Stands for an old module: public attributes come from the new packages."""

    def __init__(self, old: str, packages: Sequence[str]) -> None:
        super().__init__(f"{_PACKAGE}.{old}", f"Moved: see {', '.join(f'{_PACKAGE}.{p}' for p in packages)}.")
        self._packages = tuple(packages)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        for pkg in self._packages:
            module = importlib.import_module(f"{_PACKAGE}.{pkg}")
            if name in getattr(module, "__all__", ()):
                return getattr(module, name)
        raise AttributeError(
            f"{self.__name__}.{name} is gone; it moved with the 0.2 stage folders (see CHANGELOG.md)")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for pkg in self._packages:
            names.update(getattr(importlib.import_module(f"{_PACKAGE}.{pkg}"), "__all__", ()))
        return sorted(names)


class _Loader(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        packages = MOVED[self.old]
        new = " / ".join(f"{_PACKAGE}.{p}" for p in packages)
        warnings.warn(f"{_PACKAGE}.{self.old} moved to {new} in qupath-camseg 0.2; import from there "
                      "(the old path goes in 0.3)", DeprecationWarning, stacklevel=_caller_level())
        return _MovedModule(self.old, packages)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _caller_level() -> int:
    """The stack level of the first frame outside importlib (where the old path was imported)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        frame, level = frame.f_back, level + 1
    return level


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, old = fullname.rpartition(".")
        if prefix != _PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(old))


def moved_names(package: str, getattr_: Callable[[str], Any], moved: dict[str, str]) -> Callable[[str], Any]:
    """A package ``__getattr__`` that serves names which left ``package`` in 0.2 (name → the stage
    package that now holds it) with a :class:`DeprecationWarning`, and the rest as ``getattr_``."""

    def __getattr__(name: str) -> Any:
        if name in moved:
            warnings.warn(f"{package}.{name} moved to {_PACKAGE}.{moved[name]}.{name} in qupath-camseg 0.2; "
                          "import it from there (the old path goes in 0.3)", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(f"{_PACKAGE}.{moved[name]}"), name)
        return getattr_(name)

    return __getattr__


def install() -> None:
    """Serve the old module paths (idempotent; called by ``qupath_camseg/__init__.py``)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
