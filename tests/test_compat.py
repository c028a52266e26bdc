"""The 0.1 module paths still import for one release, with a DeprecationWarning naming the new place."""

from __future__ import annotations

import importlib
import sys

import pytest

from qupath_camseg._compat import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_path_warns_and_serves_the_new_objects(old: str) -> None:
    sys.modules.pop(f"qupath_camseg.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"qupath_camseg\.{old} moved to qupath_camseg\.{MOVED[old][0]}"):
        module = importlib.import_module(f"qupath_camseg.{old}")
    new = importlib.import_module(f"qupath_camseg.{MOVED[old][0]}")
    assert set(new.__all__) <= set(dir(module))
    name = sorted(new.__all__)[0]
    assert getattr(module, name) is getattr(new, name)
    with pytest.raises(AttributeError, match="moved with the 0.2 stage folders"):
        getattr(module, "no_such_name")


@pytest.mark.parametrize(("old", "name", "new"), [
    ("slides", "open_slide", "wsi"), ("geojson", "read_geojson", "annotations"), ("project", "open_project", "qupath"),
    ("evaluation", "read_heatmap", "wsi"), ("data", "collect_images", "train"), ("metrics", "froc", "evaluate"),
])
def test_typical_old_imports_resolve(old: str, name: str, new: str) -> None:
    sys.modules.pop(f"qupath_camseg.{old}", None)
    with pytest.warns(DeprecationWarning):
        obj = getattr(importlib.import_module(f"qupath_camseg.{old}"), name)
    assert obj is getattr(importlib.import_module(f"qupath_camseg.{new}"), name)


@pytest.mark.parametrize(("package", "name", "new"), [("predict", "load_model", "model"),
                                                      ("predict", "LoadedModel", "model"),
                                                      ("evaluate", "read_heatmap", "wsi")])
def test_names_that_left_a_package_warn(package: str, name: str, new: str) -> None:
    pkg = importlib.import_module(f"qupath_camseg.{package}")
    with pytest.warns(DeprecationWarning, match=f"moved to qupath_camseg.{new}.{name}"):
        obj = getattr(pkg, name)
    assert obj is getattr(importlib.import_module(f"qupath_camseg.{new}"), name)
