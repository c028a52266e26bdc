"""``python -m qupath_camseg`` runs the ``qcamseg`` command line."""

from __future__ import annotations

import sys

from qupath_camseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
