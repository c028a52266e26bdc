"""Slides by physical pixel size (the only tiffslide/openslide import), tissue masks, tile grids
and heatmap TIFFs: the first stage of slide → tiles → model → predictions → QuPath objects.

Public names are imported lazily on first use (``lazy_loader``), so importing one module of
this folder does not import the others (worker processes stay light).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "heatmap": ["heatmap_levels", "read_heatmap", "write_heatmap"],
        "slides": ["BACKENDS", "Slide", "open_slide", "resample"],
        "stain": ["METHODS", "SAMPLE_MIN_TISSUE", "SAMPLE_TILES", "StainReference", "StainTransform", "estimate_stains", "fit_reference", "od_to_rgb", "pick_boxes",
                  "rgb_to_od"],
        "tiling": ["Box", "TissueFractions", "level0_size", "tile_grid", "tissue_fractions", "tissue_tiles"],
        "tissue": ["DETECTOR_VERSION", "TissueMask", "detect_tissue", "summed_area_table", "tissue_mask_from_rgb"],
        "tissue_file": ["read_tissue_file"],
        "tissue_ink": ["ink_mask"],
        "tissue_reference": ["reference_marks", "reference_retention", "standard_tissue_mask"],
    },
)
