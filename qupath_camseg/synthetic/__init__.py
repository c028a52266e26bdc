"""Synthetic Camelyon-like slides with exact ground truth, and QuPath projects made of them
(the test bench and the demo).

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "manifest": ["MANIFEST", "check_folder", "move_into", "record_manifest"],
        "project": ["SynthResult", "TUMOR_COLOR", "write_synthetic_project"],
        "render": ["render_region"],
        "slides": ["pyramid_dimensions", "write_synthetic_slide"],
        "stain_shift": ["STAIN_SHIFTS", "StainShift", "stain_shift"],
        "truth": ["SyntheticTruth", "make_truth"],
    },
)
