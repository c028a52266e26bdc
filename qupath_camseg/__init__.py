"""qupath-camseg: teach a segmentation network from QuPath annotations, run it over whole
slides, and bring the results back into QuPath.

Data flows slide → tiles → model → predictions → QuPath objects; each module holds one step
(see README "How it fits together" and docs/architecture.md).
Importing this package does no work: no JVM, no torch import.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
