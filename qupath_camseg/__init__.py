"""qupath-camseg: teach a segmentation network from QuPath annotations, run it over whole
slides, and bring the results back into QuPath.

Data flows slide → tiles → model → predictions → QuPath objects, one folder per stage:
``wsi`` (slides, tissue, tile grids, heatmaps) · ``annotations`` (objects, GeoJSON, ASAP XML,
masks) · ``qupath`` (projects, both doors, Groovy scripts) · ``model`` · ``train`` · ``predict`` ·
``evaluate`` · ``export`` · ``synthetic`` · ``cli`` (see docs/architecture.md).
Importing this package does no work: no JVM, no torch import.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__"]

from qupath_camseg import _compat  # noqa: E402 - the 0.1 module paths, for one release

_compat.install()
